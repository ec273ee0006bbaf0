"""Pipelines (engine/runs/pipeline.py) with real trainer processes of a tiny model: the stages of one plan queued
at once, each starting from the one before; a stopped stage holds the rest, resuming it continues the plan."""

import json

import pytest
import yaml
from test_runs import finished, spec

from conftest import run_cli, wait_for
from engine import runs
from engine.runs import pipeline
from engine.spec import RunSpec
from engine.users import OWNER


def stage(model, name, steps=2, **kw):
    return spec(model, steps, stage=name, **({"model_name_or_path": str(model)} if name in ("sft", "pt") else {}), **kw)


def states(ids):
    by_id = {r["id"]: r for r in runs.list_runs(OWNER)}
    return [by_id[i]["state"] for i in ids]


def test_cli_chain_runs_sft_then_dpo_from_its_result(tmp_path, tiny_model):
    configs = []
    for name in ("sft", "dpo"):
        configs.append(tmp_path / f"{name}.yaml")
        stage(tiny_model, name).save(configs[-1])
    out = run_cli("engine.runs", "submit", *map(str, configs), "--chain", "--json")
    assert out.returncode == 0, out.stderr
    first, second = json.loads(out.stdout)["ids"]
    listed = {r["id"]: r for r in runs.list_runs(OWNER)}
    assert listed[second]["state"] in ("waiting", "queued", "running")
    if listed[second]["state"] == "waiting":
        assert listed[second]["held"] == f"Starts when run {first} (supervised fine-tuning) completes."
        assert listed[second]["position"] is None, "a waiting stage is not in the queue's line"
    done = wait_for(lambda: finished(second), timeout=300)
    assert states([first, second]) == ["completed", "completed"], done["error"]
    config = yaml.safe_load(open(f"{done['run_dir']}/config.yaml"))
    assert config["init_from"] == runs.get(first, OWNER)["run_dir"]
    assert runs.get(first, OWNER)["finished_at"] <= done["started_at"]


def test_rlhf_chain_gives_rl_the_reward_model_it_trained(tiny_model):
    ids = runs.submit_chain(
        [
            stage(tiny_model, "sft"),
            stage(tiny_model, "rm"),
            stage(tiny_model, "rl", extra={"max_completion_length": 8}),
        ],
        OWNER,
    )
    rl = wait_for(lambda: finished(ids[2]), timeout=400)
    assert states(ids) == ["completed"] * 3, rl["error"]
    sft, rm = (runs.get(i, OWNER)["run_dir"] for i in ids[:2])
    config = yaml.safe_load(open(f"{rl['run_dir']}/config.yaml"))
    assert (config["init_from"], config["extra"]["reward_model"]) == (sft, rm)
    assert yaml.safe_load(open(f"{rm}/config.yaml"))["init_from"] == sft


def test_a_stopped_stage_holds_the_rest_and_resuming_it_continues_the_plan(tiny_model):
    blocker = runs.submit(spec(tiny_model, 100_000), OWNER)  # the one CPU slot is busy: the pipeline waits
    wait_for(lambda: runs.get(blocker, OWNER)["state"] == "running")
    first, second = runs.submit_chain([stage(tiny_model, "sft"), stage(tiny_model, "dpo")], OWNER)
    runs.stop(first, OWNER)
    held = runs.get(second, OWNER)
    assert held["state"] == "waiting"
    assert held["held"].startswith(f"Held: run {first} (supervised fine-tuning) stopped. Resume it")
    with pytest.raises(runs.RunError, match=f"Run {second}, the next stage of this pipeline, waits for run {first}"):
        runs.remove(first, OWNER)
    runs.stop(blocker, OWNER)
    runs.resume(first, OWNER)
    wait_for(lambda: finished(second), timeout=300)
    assert states([first, second]) == ["completed", "completed"]


@pytest.mark.parametrize(
    "stages, says",
    [
        (["sft"], "at least two stages"),
        (["dpo", "sft"], r"cannot follow DPO \(preferences\)"),
        (["sft", "rm"], "only an RL stage can use it"),
        (["sft", "rl"], "nothing to reward its answers with"),
    ],
)
def test_stages_that_do_not_fit_together_are_refused_before_anything_is_registered(tiny_model, stages, says):
    with pytest.raises(runs.RunError, match=says):
        runs.submit_chain([stage(tiny_model, s) for s in stages], OWNER)
    assert runs.list_runs(OWNER) == []


def test_dpo_data_for_an_sft_stage_is_refused_with_a_sentence(tiny_model):
    from engine import data

    wrong = stage(tiny_model, "sft", dataset_name=str(data.bundled("dpo")))
    with pytest.raises(runs.RunError, match=r"Stage 1 \(supervised fine-tuning\): train.jsonl cannot be used"):
        runs.submit_chain([wrong, stage(tiny_model, "dpo")], OWNER)


def test_a_later_stage_with_init_from_is_refused(tiny_model):
    later = stage(tiny_model, "dpo", init_from="/somewhere")
    with pytest.raises(runs.RunError, match="each stage starts from the one before it"):
        pipeline.check([stage(tiny_model, "sft"), later])


def test_cli_several_configs_without_chain_say_how(tmp_path, tiny_model):
    cfg = tmp_path / "a.yaml"
    RunSpec().save(cfg)
    out = run_cli("engine.runs", "submit", str(cfg), str(cfg))
    assert out.returncode == 2 and "only with --chain" in out.stderr
