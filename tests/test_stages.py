"""Every stage of the lesson's spectrum as a real TRL run on the CPU: continued pretraining, DPO, reward model and
RL, each with full / LoRA / QLoRA, the app's pipelines sft -> rm -> rl and sft -> dpo, and the faults a person
can cause. Runs use the 2-layer tiny llama (real tokenizer and chat template), 16-row files and 128-token
sequences for 2 steps: each one proves a code path runs and leaves a complete run directory, not that it learns.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO, read_jsonl, run_cli

FAST = ("--max-steps", "2", "--batch", "2", "--eval-steps", "1000", "--seq", "128")
# What a person watching each stage's chart looks for, as TRL logs it.
STAGE_METRICS = {
    "pt": {"loss", "num_tokens"},
    "sft": {"loss"},
    "dpo": {"rewards/margins", "rewards/accuracies"},
    "rm": {"accuracy", "margin"},
    "rl": {"reward", "reward_std"},
}
DATA_FOR = {"pt": "pt", "sft": "sft", "dpo": "dpo", "rm": "dpo", "rl": "rl"}  # rm trains on preference pairs


# A process that imports torch/transformers/trl once, then forks one child per run: each child is a fresh
# `python -m engine.train` (own memory, signals, exit code) without paying the ~10 s CPU of those imports again,
# which on a shared 2-core machine is most of a 2-step run.
FORK_SERVER = r"""
import json, os, sys
import datasets, peft, transformers, trl  # noqa: F401
from engine.train.__main__ import main
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1); os.dup2(log, 2)
        try:
            code = main(job["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """trainer(*args) -> (returncode, stderr) like run_cli("engine.train", *args); stdout and stderr together."""
    logs = tmp_path_factory.mktemp("logs")
    server = subprocess.Popen(
        [sys.executable, "-c", FORK_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )

    def run(*args):
        log = logs / f"{len(list(logs.iterdir()))}.log"
        server.stdin.write(json.dumps({"argv": [str(a) for a in args], "log": str(log)}) + "\n")
        server.stdin.flush()
        code = int(server.stdout.readline())
        return SimpleNamespace(returncode=code, stderr=log.read_text())

    yield run
    server.stdin.close()
    server.wait(timeout=60)


def shell(*args):
    """The real thing, `python -m engine.train ...`, for the runs that fail before the slow imports."""
    return run_cli("engine.train", *args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """16 rows of each bundled set: no held-out split under 100 rows, so no evaluation pass slows the test."""
    from engine import data

    out = tmp_path_factory.mktemp("data")
    for stage in ("pt", "sft", "dpo", "rl"):
        lines = data.bundled(stage).read_text().splitlines()[:16]
        (out / f"{stage}.jsonl").write_text("\n".join(lines) + "\n")
    return out


def train(cli, run: Path, stage: str, method: str, model, data_dir, *extra_args, extra: dict | None = None):
    """`python -m engine.train` through `cli` for a few steps; `extra` goes into config.yaml's `extra:`."""
    args = [
        "--stage",
        stage,
        "--method",
        method,
        "--dataset",
        str(data_dir / f"{DATA_FOR[stage]}.jsonl"),
        *FAST,
        "--output-dir",
        str(run),
        *extra_args,
    ]
    if model is not None:
        args += ["--model", str(model)]
    if stage == "rl":  # 16-token answers: generation is most of an RL step on a CPU
        extra = {"max_completion_length": 16, **(extra or {})}
    if extra:
        config = run.parent / f"{run.name}.yaml"
        config.write_text(yaml.safe_dump({"extra": extra}))
        args += ["--config", str(config)]
    return cli(*args)


def assert_complete(run: Path, result, stage: str, method: str):
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["stage"], config["method"]) == (stage, method)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 2, status
    steps = [m for m in read_jsonl(run / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    missing = STAGE_METRICS[stage] - set(steps[-1])
    assert not missing, f"{stage} did not log {missing}"
    final = run / "final"
    assert (final / "tokenizer.json").is_file()
    if method == "full":
        assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()
    else:
        adapter = json.loads((final / "adapter_config.json").read_text())
        assert adapter["task_type"] == ("SEQ_CLS" if stage == "rm" else "CAUSAL_LM")
        if stage == "rm":  # the fresh score head must travel with the adapter, or the reward model is random
            assert "score" in adapter["modules_to_save"]
    return steps


@pytest.fixture(scope="module")
def chain(tmp_path_factory, trainer, tiny_model, data_dir):
    """The app's RLHF pipeline with LoRA: sft, then a reward model starting from it. Shared by the RL tests."""
    root = tmp_path_factory.mktemp("chain")
    sft = root / "sft"
    assert_complete(sft, train(trainer, sft, "sft", "lora", tiny_model, data_dir), "sft", "lora")
    rm = root / "rm"
    assert_complete(rm, train(trainer, rm, "rm", "lora", None, data_dir, "--init-from", str(sft)), "rm", "lora")
    return {"sft": sft, "rm": rm}


def test_rlhf_chain_sft_rm_rl_starts_each_stage_from_the_last(tmp_path, trainer, chain, data_dir):
    run = tmp_path / "rl"
    result = train(
        trainer, run, "rl", "lora", None, data_dir, "--init-from", str(chain["sft"]), "--reward-model", str(chain["rm"])
    )
    steps = assert_complete(run, result, "rl", "lora")
    assert all(isinstance(m["reward"], float) for m in steps)
    assert (run / "init_model" / "config.json").is_file(), "the SFT adapter is merged into the policy's start"
    reward = json.loads((run / "reward_model" / "config.json").read_text())
    assert reward["architectures"] == ["LlamaForSequenceClassification"], "the rm adapter is merged for GRPO"
    assert (chain["rm"] / "init_model" / "config.json").is_file()


def test_dpo_chain_starts_from_the_sft_run(tmp_path, trainer, chain, data_dir):
    run = tmp_path / "dpo"
    result = train(trainer, run, "dpo", "lora", None, data_dir, "--init-from", str(chain["sft"]))
    steps = assert_complete(run, result, "dpo", "lora")
    assert all(0.0 <= m["rewards/accuracies"] <= 1.0 for m in steps)
    assert yaml.safe_load((run / "config.yaml").read_text())["init_from"] == str(chain["sft"])


@pytest.mark.parametrize(
    "stage, method",
    [
        ("pt", "full"),
        ("pt", "lora"),
        ("pt", "qlora"),
        ("dpo", "full"),
        ("dpo", "qlora"),  # dpo/lora: the chain above
        ("rm", "full"),
        ("rm", "qlora"),  # rm/lora: the chain fixture
        ("rl", "full"),
        ("rl", "qlora"),  # rl/lora: the chain above
    ],
)
def test_every_stage_and_method_leaves_a_complete_run_directory(
    tmp_path, trainer, tiny_model, data_dir, chain, stage, method
):
    run = tmp_path / "run"
    reward = ("--reward-model", str(chain["rm"])) if stage == "rl" else ()
    result = train(trainer, run, stage, method, tiny_model, data_dir, *reward)
    assert_complete(run, result, stage, method)
    if stage == "pt":  # continued pretraining packs the corpus into full --seq blocks
        assert read_jsonl(run / "metrics.jsonl")[0]["num_tokens"] == 2 * 128


def test_rl_without_a_reward_model_says_to_train_one(tmp_path, tiny_model, data_dir):
    run = tmp_path / "run"
    result = train(shell, run, "rl", "lora", tiny_model, data_dir)
    assert result.returncode == 2 and "--stage rm" in result.stderr and "Traceback" not in result.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "needs a reward model" in status["error"]


def test_wrong_kinds_of_reward_model_are_refused_with_a_sentence(tmp_path, trainer, tiny_model, data_dir, chain):
    for n, (reward, expected) in enumerate(
        (
            (chain["sft"], "is a supervised fine-tuning run"),
            (chain["sft"] / "final", "is a supervised fine-tuning run"),
            (tiny_model, "a model that writes text, not one that scores it"),
            (tmp_path / "nowhere", "does not exist"),
        )
    ):
        run = tmp_path / f"run-{n}"
        result = train(trainer, run, "rl", "lora", tiny_model, data_dir, "--reward-model", str(reward))
        assert result.returncode == 2, result.stderr[-2000:]
        assert expected in result.stderr and "--stage rm" in result.stderr
        assert json.loads((run / "status.json").read_text())["state"] == "failed"


def test_init_from_something_that_is_not_a_finished_run(tmp_path, trainer, data_dir, chain):
    half = tmp_path / "half-run"
    half.mkdir()
    (half / "train.log").write_text("an earlier attempt\n")
    for source, expected in (
        (tmp_path / "nowhere", "is not a finished run: it does not exist"),
        (half, "is not a finished run: it has no final/ directory"),
        (chain["rm"], "is a reward-model run"),
    ):
        run = tmp_path / f"run-{source.name}"
        result = train(trainer, run, "dpo", "lora", None, data_dir, "--init-from", str(source))
        assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
        assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert (half / "train.log").read_text() == "an earlier attempt\n"


def test_a_dataset_that_fails_validation_keeps_what_the_run_directory_held(tmp_path, tiny_model, data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = run_cli(
        "engine.train",
        "--stage",
        "dpo",
        "--model",
        str(tiny_model),
        "--dataset",
        str(data_dir / "sft.jsonl"),
        *FAST,
        "--output-dir",
        str(run),
    )
    assert result.returncode == 2 and "cannot be used for dpo" in result.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert (run / "notes.txt").read_text() == "mine" and (run / "config.yaml").is_file()


def test_a_misspelt_trl_setting_is_named(tmp_path, trainer, tiny_model, data_dir):
    run = tmp_path / "run"
    result = train(trainer, run, "dpo", "lora", tiny_model, data_dir, extra={"betta": 0.2})
    assert result.returncode == 2 and "betta" in result.stderr and "DPOConfig" in result.stderr


def test_unknown_stage_is_refused_before_anything_starts(tmp_path):
    result = run_cli("engine.train", "--stage", "ppo", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "invalid choice: 'ppo'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stage", ["pt", "sft", "dpo", "rm", "rl"])
def test_every_stage_has_a_bundled_dataset_in_its_trl_layout(stage):
    from engine.spec import RunSpec
    from engine.train.common import load_splits

    train_rows, held_out = load_splits(RunSpec(stage=stage))
    assert len(train_rows) >= 500 and held_out
    expected = {
        "pt": {"text"},
        "sft": {"prompt", "completion"},
        "dpo": {"prompt", "chosen", "rejected"},
        "rm": {"prompt", "chosen", "rejected"},
        "rl": {"prompt"},
    }[stage]
    assert expected <= set(train_rows[0])


def test_dpo_with_no_dataset_trains_on_the_bundled_preferences(tmp_path, trainer, tiny_model):
    """`python -m engine.train --stage dpo --output-dir DIR` on a fresh machine: no --dataset, bundled pairs.
    (Evaluation of the held-out pairs is switched off here only to keep the test short.)"""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"extra": {"eval_strategy": "no"}}))
    result = trainer(
        "--stage",
        "dpo",
        "--model",
        tiny_model,
        "--max-steps",
        "1",
        "--batch",
        "2",
        "--seq",
        "128",
        "--config",
        config,
        "--output-dir",
        run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((run / "config.yaml").read_text())["dataset_name"] == ""
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert "rewards/margins" in read_jsonl(run / "metrics.jsonl")[0]


@pytest.mark.parametrize("batch, grad_accum, expected", [(8, 1, 4), (2, 1, 2), (6, 1, 3), (1, 4, 4), (1, 1, None)])
def test_rl_groups_fit_the_batch_or_the_person_is_told_how(batch, grad_accum, expected):
    from engine.spec import RunSpec, SpecError
    from engine.train.rl import num_generations

    spec = RunSpec(stage="rl", per_device_train_batch_size=batch, gradient_accumulation_steps=grad_accum)
    if expected is None:
        with pytest.raises(SpecError, match="Raise --batch"):
            num_generations(spec)
    else:
        assert num_generations(spec) == expected


def test_checkpointing_some_layers_with_their_inputs_in_cpu_memory_trains_the_same_curve(
    tmp_path, trainer, tiny_model, data_dir
):
    """--checkpoint-every reaches transformers (train.log says what the trainer set on the model), offload is left
    out on a processor (a CPU-only torch has no pinned memory; there is no GPU memory to save), and recomputing a
    layer changes no number: the loss curve is the one without checkpointing."""
    plain = train(trainer, tmp_path / "plain", "sft", "lora", tiny_model, data_dir)
    assert_complete(tmp_path / "plain", plain, "sft", "lora")
    run = tmp_path / "ckpt"
    result = train(
        trainer, run, "sft", "lora", tiny_model, data_dir, "--grad-ckpt", "--checkpoint-every", "2",
        "--checkpoint-offload",
    )  # fmt: skip
    assert_complete(run, result, "sft", "lora")
    assert "gradient checkpointing: on for 1 of 2 decoder layers\n" in result.stderr
    assert "checkpoint offload: off, the run is on the processor" in result.stderr  # (GPU memory only)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["checkpoint_every"] == 2 and config["checkpoint_offload"] is True
    losses = [[m["loss"] for m in read_jsonl(r / "metrics.jsonl") if "loss" in m] for r in (tmp_path / "plain", run)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5), losses
