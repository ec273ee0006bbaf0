"""Bad input to `python -m engine.train`: a sentence and exit code 2, never a traceback."""

import json
import os

import pytest

from conftest import run_cli


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--stage", "sing"], "invalid choice: 'sing'"),
        (["--method", "magic"], "invalid choice: 'magic'"),
        (["--max-steps", "0"], "max_steps is 0"),
        (["--batch", "0"], "per_device_train_batch_size is 0"),
        (["--lr", "5"], "learning_rate is 5.0"),
        (["--seq", "abc"], "invalid int value: 'abc'"),
        (["--model", "/no/such/model"], "Model directory /no/such/model does not exist"),
        (["--model", "someone/some-model"], "this machine is offline"),
        (["--config", "/no/such.yaml"], "Config file /no/such.yaml does not exist"),
    ],
)
def test_usage_errors_exit_2_with_a_sentence(tmp_path, args, expected):
    result = run_cli("engine.train", *args, "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_model_problem_is_recorded_in_status_json(tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = run_cli("engine.train", "--model", str(broken), "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "not valid JSON" in status["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli("engine.train", "--output-dir", str(locked / "run"))
    assert result.returncode == 2 and "Cannot write to the output directory" in result.stderr


def test_output_dir_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("engine.train", "--output-dir", str(blocker / "run"))
    assert result.returncode == 2 and "Cannot write to the output directory" in result.stderr


def test_bad_config_field_is_named(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("stage: sft\nlearning_rat: 0.1\n")
    result = run_cli("engine.train", "--config", str(cfg))
    assert result.returncode == 2 and "Unknown setting(s) learning_rat" in result.stderr


def test_without_a_gpu_the_cli_defaults_to_the_apps_cpu_plan_and_says_so(tmp_path, capsys, monkeypatch):
    from engine.spec import CPU_RUN
    from engine.train import common

    monkeypatch.setattr(common, "_has_gpu", lambda: False)
    spec, _ = common.parse(["--output-dir", str(tmp_path / "run")])
    assert (
        (spec.max_steps, spec.eval_steps, spec.save_steps)
        == (100, 100, 50)
        == tuple(CPU_RUN[k] for k in ("max_steps", "eval_steps", "save_steps"))
    )
    assert capsys.readouterr().out.startswith("No GPU on this computer: training with the app's CPU plan (100 steps")
    for chosen in (["--max-steps", "7"], ["--epochs", "2"]):  # a length the person gave wins, silently
        spec, _ = common.parse(["--output-dir", str(tmp_path / "run"), *chosen])
        assert (spec.max_steps, spec.num_train_epochs) == ((7, 1.0) if chosen[0] == "--max-steps" else (-1, 2.0))
        assert capsys.readouterr().out == ""
    monkeypatch.setattr(common, "_has_gpu", lambda: True)
    assert common.parse(["--output-dir", str(tmp_path / "run")])[0].max_steps == -1


def test_a_partial_config_with_flags_gets_the_defaults_of_the_run_it_ends_with(tmp_path):
    # `--config part.yaml --stage dpo --method full`: the learning rate is full DPO's, not the one resolved for the
    # file's own defaults (LoRA SFT of the embedded model, 1e-3): that froze a 50x too high rate into every
    # benchmark way that carried an `extra:` file, and DPO diverged
    from engine.spec import default_learning_rate
    from engine.train import common

    part = tmp_path / "part.yaml"
    part.write_text("extra: {padding_free: false}\nmax_length: 256\n")
    spec, _ = common.parse(["--config", str(part), "--stage", "dpo", "--method", "full", "--max-steps", "3"])
    assert spec.learning_rate == default_learning_rate("dpo", "full", spec.model_name_or_path)
    assert (spec.max_length, spec.extra) == (256, {"padding_free": False}), "what the file sets is kept"
    assert spec.max_steps == 3
    part.write_text("learning_rate: 0.0003\n")
    spec, _ = common.parse(["--config", str(part), "--stage", "dpo", "--method", "full", "--max-steps", "3"])
    assert spec.learning_rate == 3e-4, "a rate the file sets wins over the defaults"


def test_a_processor_run_too_big_for_the_computers_memory_is_refused_before_loading(tmp_path, tiny_model):
    """On a machine without a GPU a run trains in the computer's memory; one the estimator puts above it at the data's
    longest examples (a length and batch that would wake the out-of-memory killer, and take the server down with
    it) exits 2 with the changes that fit, before any weights load. The same length and batch over short examples
    is not refused: the longest batch, not max_length, decides the memory."""
    from transformers import AutoTokenizer

    from engine import data as datasets
    from engine.spec import RunSpec
    from engine.train import common

    data = tmp_path / "long.jsonl"
    chat = [{"role": "user", "content": "word " * 3000}, {"role": "assistant", "content": "ok"}]
    data.write_text("\n".join(json.dumps({"messages": chat}) for _ in range(8)) + "\n")
    big = ["--model", str(tiny_model), "--seq", "4096", "--batch", "4096", "--max-steps", "1"]
    result = run_cli("engine.train", *big, "--dataset", str(data), "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "GiB of memory at its longest examples (3" in result.stderr, result.stderr
    assert "Changes that fit" in result.stderr and "QLoRA" not in result.stderr and "Traceback" not in result.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "Nothing was loaded" in status["error"]
    tokenizer, spec = (
        AutoTokenizer.from_pretrained(tiny_model),
        RunSpec(max_length=4096, per_device_train_batch_size=4096),
    )
    short = datasets.load_for_stage(datasets.bundled("sft", "train"), "sft")
    common.check_host_memory(spec, str(tiny_model), "cpu", short, tokenizer)  # ~100 tokens at most: fits
    with pytest.raises(common.SpecError, match="at its longest examples"):
        common.check_host_memory(spec, str(tiny_model), "cpu", [{"messages": chat}] * 8, tokenizer)
    # long rows after 5000 short ones (the even sample once took only the first 5000 rows of a file this size)
    hidden = short * 3 + [{"messages": chat}] * 400
    with pytest.raises(common.SpecError, match="at its longest examples"):
        common.check_host_memory(spec, str(tiny_model), "cpu", hidden, tokenizer)
