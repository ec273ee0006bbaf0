"""End to end on the CPU: the real TRL trainer on the real embedded SmolLM2-135M-Instruct, as the app runs it."""

import json

import yaml

from conftest import read_jsonl, run_cli


def test_embedded_model_trains_a_few_steps_and_leaves_a_complete_run_directory(tmp_path, embedded_dir):
    run = tmp_path / "run"
    result = run_cli(
        "engine.train",
        "--stage",
        "sft",
        "--method",
        "lora",
        "--max-steps",
        "3",
        "--batch",
        "2",
        "--eval-steps",
        "1000",
        "--output-dir",
        str(run),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["stage"] == "sft" and config["max_steps"] == 3 and config["method"] == "lora"
    metrics = read_jsonl(run / "metrics.jsonl")
    steps = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert all({"loss", "learning_rate", "epoch"} <= set(m) for m in steps)
    assert all(m["loss"] > 0 for m in steps)
    # the Runs page's speed panels: tokens/s and model FLOP utilisation from step 2 on (a CPU runs well below peak)
    assert all(m["tokens_per_second"] > 0 and 0 < m["mfu_percent"] < 100 for m in steps[1:])
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 3
    assert "run directory" in (run / "train.log").read_text()
    adapter = json.loads((run / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["peft_type"] == "LORA"
    assert (run / "final" / "adapter_model.safetensors").stat().st_size > 100_000
    assert (run / "final" / "tokenizer.json").is_file()
    assert json.loads((run / "versions.json").read_text())["trl"]
