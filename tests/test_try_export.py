"""After training, on real (tiny) runs: generation side by side, evaluation into eval.json, export of the adapter
and of a merged model that load and generate; runs that are not finished, prompts that are too long and a disk
that fills get a sentence, and never a half-written export."""

import errno
import json
import os
import subprocess
import sys
import zipfile

import pytest
import yaml

from conftest import REPO, run_cli
from engine import export, rundir


def unfinished(tmp_path, state, **status):
    run = tmp_path / f"{state}-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"stage": "sft", "method": "lora"}))
    rundir.write_status(run, state, **status)
    return run


def test_generate_answers_with_the_base_and_the_fine_tuned_model(tiny_run):
    result = run_cli(
        "engine.generate",
        "--run",
        str(tiny_run),
        "--prompt",
        "Create a task: water the plants",
        "--both",
        "--sample",
        "--temperature",
        "1.0",
        "--json",
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert set(answer["answers"]) == {"base", "tuned"} and all(isinstance(a, str) for a in answer["answers"].values())
    assert answer["sample"] is True and answer["temperature"] == 1.0


def test_a_prompt_longer_than_the_context_gets_a_sentence(tiny_run):
    result = run_cli("engine.generate", "--run", str(tiny_run), "--prompt", "plan the week " * 600)
    assert result.returncode == 2
    assert "reads at most 1,024 tokens" in result.stderr and "Shorten the prompt" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_writes_base_and_fine_tuned_figures_into_the_run(tiny_run):
    result = run_cli("engine.evaluate", str(tiny_run), "--json", "--limit", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    stored = json.loads((tiny_run / "eval.json").read_text())
    assert stored == json.loads(result.stdout)
    metrics = {m["metric"]: m for m in stored["metrics"]}
    assert {"held-out loss", "perplexity", "valid JSON", "priority right", "title exact"} <= set(metrics)
    assert metrics["held-out loss"]["base"] > 0 and metrics["held-out loss"]["fine_tuned"] > 0
    assert 0 <= metrics["valid JSON"]["fine_tuned"] <= 1
    assert stored["rows"] == 3 and "task_api test split" in stored["held_out"]
    assert len(stored["examples"]) == 3 and stored["examples"][0]["expected"].startswith('{"title"')


def test_exported_adapter_loads_with_peft_and_generates(tiny_run, tiny_model, tmp_path):
    out = tmp_path / "adapter"
    result = run_cli("engine.export", str(tiny_run), "--out", str(out), "--zip", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["kind"] == "adapter"
    assert (out / "adapter_model.safetensors").is_file() and (out / "HOW_TO_LOAD.md").is_file()
    assert "adapter/adapter_model.safetensors" in zipfile.ZipFile(tmp_path / "adapter.zip").namelist()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))
    ids = AutoTokenizer.from_pretrained(out)("Create a task", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3


def test_merged_export_loads_as_a_plain_model_and_generates(tiny_run, tmp_path):
    out = tmp_path / "merged"
    result = run_cli("engine.export", str(tiny_run), "--merge", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    ids = AutoTokenizer.from_pretrained(out)("Create a task", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3


@pytest.mark.parametrize(
    "state,status,words",
    [
        ("failed", {"error": "Out of GPU memory"}, "failed (Out of GPU memory)"),
        ("running", {"step": 3, "max_steps": 40}, "still running (step 3 of 40)"),
        ("stopped", {}, "was stopped before it finished"),
    ],
)
def test_a_run_without_a_result_gets_a_sentence_and_exit_2(tmp_path, state, status, words):
    run = unfinished(tmp_path, state, **status)
    for args in (
        ["engine.evaluate", str(run)],
        ["engine.export", str(run), "--out", str(tmp_path / "out")],
        ["engine.generate", "--run", str(run), "--prompt", "hi"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (run / "eval.json").exists()
    not_a_run = run_cli("engine.evaluate", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a run directory" in not_a_run.stderr


def test_a_disk_that_fills_during_export_leaves_nothing_behind(tiny_run, tmp_path, monkeypatch):
    real_copy = export.shutil.copy2

    def copy_then_fill(src, dst):
        if str(src).endswith(".safetensors"):
            open(dst, "wb").write(b"\0" * 1000)  # half a file, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(export.shutil, "copy2", copy_then_fill)
    out = tmp_path / "exports" / "adapter"
    with pytest.raises(export.ExportError, match="filled up.*Nothing was left behind"):
        export.export(tiny_run, out, make_zip=True)
    assert not out.exists() and os.listdir(out.parent) == [], "no partial directory or zip remains"


def test_export_never_writes_over_an_existing_directory(tiny_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = run_cli("engine.export", str(tiny_run), "--out", str(tmp_path / "taken"))
    assert result.returncode == 2 and "already exists and is not empty" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_the_after_training_modules_stay_light_for_the_ui_process():
    code = (
        "import sys, engine.generate, engine.evaluate, engine.export, engine.taskapi, ui.try_export; "
        "heavy = {'torch', 'transformers', 'peft', 'trl'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
