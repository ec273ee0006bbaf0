"""Stop keeps the last finished step: a real trainer (the tiny model) whose every step is made as slow as the
embedded model's on 2 CPU cores, stopped the way the Runs page and `python -m engine.runs stop` stop it.

A tiny model's steps take milliseconds, so a stop there always had time to save; on a laptop's CPU a step takes
2-18 s, and the stop's fixed 6.5 s grace killed the trainer mid-step: no checkpoint, nothing to resume."""

import json
import os
import time
from pathlib import Path

import pytest

from conftest import wait_for
from engine import rundir, runs
from engine.spec import RunSpec
from engine.users import OWNER

STEP_S = 8.0  # longer than the old grace: a stop that does not wait for the step under way finds no checkpoint

# Started in every Python process of the run (supervisor and trainer): once transformers' Trainer is imported,
# each micro-batch sleeps first, as a CPU-bound step holds the interpreter (a signal is handled, the step goes on).
SLOW_STEPS = """
import os, sys, threading, time

def slow_steps(seconds):
    for _ in range(6000):
        module = sys.modules.get("transformers.trainer")
        if module is not None and hasattr(module, "Trainer"):
            original = module.Trainer.training_step

            def training_step(self, *args, **kwargs):
                time.sleep(seconds)
                return original(self, *args, **kwargs)

            module.Trainer.training_step = training_step
            return
        time.sleep(0.05)

threading.Thread(target=slow_steps, args=(float(os.environ["TUNEWISE_TEST_STEP_S"]),), daemon=True).start()
"""


@pytest.fixture
def slow_steps(tmp_path, monkeypatch):
    hook = tmp_path / "slow_steps"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_STEPS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TUNEWISE_TEST_STEP_S", str(STEP_S))


def slow_run(model) -> int:
    spec = RunSpec(
        model_name_or_path=str(model),
        max_steps=100_000,
        per_device_train_batch_size=2,
        save_steps=10_000,  # no periodic checkpoint: only the stop can leave one
        eval_steps=10_000,
    )
    return runs.submit(spec, OWNER)


def test_a_stop_mid_step_saves_that_step_and_ends_every_process(slow_steps, tiny_model):
    run_id = slow_run(tiny_model)
    run = wait_for(lambda: (r := runs.get(run_id, OWNER))["pid"] and rundir.read_status(r["run_dir"]).get("step") and r)
    finished = rundir.read_status(run["run_dir"])["step"]  # the trainer is now in the next step's sleep
    started = time.time()
    stopped = runs.stop(run_id, OWNER)
    took = time.time() - started

    assert stopped["state"] == "stopped"
    assert not any(runs.alive(p) for p in (run["pid"], run["supervisor_pid"])), "no process of the run remains"
    checkpoint = rundir.last_checkpoint(run["run_dir"])
    assert checkpoint is not None, (
        f"no checkpoint to resume from; the log ends with:\n{rundir.log_tail(run['run_dir'], 5)}"
    )
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert saved >= finished + 1, "the step under way at the stop finished and was saved"
    assert rundir.read_status(run["run_dir"])["step"] == saved
    assert took < 2 * STEP_S + 10, "the wait is bounded: the step under way, the save and the exit"


def test_a_stop_before_the_first_step_ends_at_once_without_a_checkpoint(slow_steps, tiny_model):
    run_id = slow_run(tiny_model)
    run = wait_for(lambda: (r := runs.get(run_id, OWNER))["run_dir"] and r)
    log = Path(run["run_dir"]) / "train.log"
    wait_for(lambda: log.is_file() and "| 0/100000" in log.read_text())  # the first step is under way
    started = time.time()
    stopped = runs.stop(run_id, OWNER)

    assert time.time() - started < 5, "nothing to save: no wait for a step that would be thrown away"
    assert stopped["state"] == "stopped"
    assert not any(runs.alive(p) for p in (stopped["pid"], stopped["supervisor_pid"]))
    assert rundir.last_checkpoint(run["run_dir"]) is None
    assert rundir.read_status(run["run_dir"])["state"] == "stopped"


def test_a_ray_job_gets_as_long_as_a_local_stop_to_checkpoint():
    """Ray kills a job RAY_JOB_STOP_WAIT_TIME_S after its SIGTERM; set at submission, before a step is timed, it is
    the longest a local stop may wait (a fixed 7 s killed slow steps before their checkpoint)."""
    from engine.runs import local, ray

    assert float(ray.job_env()["RAY_JOB_STOP_WAIT_TIME_S"]) >= local.STOP_GRACE_MAX_S
