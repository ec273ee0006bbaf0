"""The run registry and queue with real trainer processes (a tiny model, so steps take milliseconds)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, wait_for
from engine import rundir, runs
from engine.runs import queue
from engine.spec import RunSpec
from engine.users import OWNER, User


def spec(model, steps, **kw):
    return RunSpec(
        **{
            "model_name_or_path": str(model),
            "max_steps": steps,
            "per_device_train_batch_size": 2,
            "save_steps": 5,
            "eval_steps": 10_000,
            **kw,
        }
    )


def finished(run_id):
    run = runs.get(run_id, OWNER)
    return run if run["state"] in ("completed", "failed", "stopped") else None


def alive(pid):
    return runs.alive(pid)


def test_two_submissions_queue_and_run_in_order(tiny_model):
    first = runs.submit(spec(tiny_model, 30), User("ana", "owner"))
    second = runs.submit(spec(tiny_model, 5), User("ben", "owner"))
    wait_for(lambda: runs.get(first, OWNER)["state"] == "running")
    listed = {r["id"]: r for r in runs.list_runs(OWNER)}
    assert listed[second]["state"] == "queued"
    assert listed[second]["position"] == 1
    a, b = wait_for(lambda: finished(first)), wait_for(lambda: finished(second))
    assert a["state"] == b["state"] == "completed", (a["error"], b["error"])
    assert a["finished_at"] <= b["started_at"], "one slot: the second waits for the first"
    assert (rundir.read_status(b["run_dir"])["step"]) == 5


def test_stop_ends_the_process_tree_within_10_seconds(tiny_model):
    run_id = runs.submit(spec(tiny_model, 100_000), OWNER)
    run = wait_for(lambda: (r := runs.get(run_id, OWNER))["pid"] and rundir.read_metrics(r["run_dir"]) and r)
    pids = [run["pid"], run["supervisor_pid"]]
    started = time.time()
    stopped = runs.stop(run_id, OWNER)
    assert time.time() - started < 10
    assert stopped["state"] == "stopped"
    assert not any(alive(p) for p in pids), "no process of the run remains"
    assert rundir.read_status(run["run_dir"])["state"] == "stopped"


def test_kill_9_of_a_trainer_is_noticed_and_recorded(tiny_model):
    run_id = runs.submit(spec(tiny_model, 100_000), OWNER)
    run = wait_for(lambda: (r := runs.get(run_id, OWNER))["pid"] and rundir.read_metrics(r["run_dir"]) and r)
    os.kill(run["pid"], signal.SIGKILL)
    ended = wait_for(lambda: finished(run_id), timeout=30)
    assert ended["state"] == "failed"
    assert "killed by signal 9" in ended["error"]
    assert rundir.read_status(run["run_dir"])["state"] == "failed"


def test_cli_submit_list_show(tmp_path, tiny_model):
    cfg = tmp_path / "run.yaml"
    spec(tiny_model, 2).save(cfg)
    out = run_cli("engine.runs", "submit", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["id"]
    listed = json.loads(run_cli("engine.runs", "list", "--json").stdout)
    assert {"id", "state", "stage", "method", "position", "pid"} <= set(listed[0])
    wait_for(lambda: finished(run_id))
    shown = json.loads(run_cli("engine.runs", "show", str(run_id), "--json").stdout)
    assert shown["state"] == "completed"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["show", "999"], "There is no run 999"),
        (["stop"], "`stop` needs a run id"),
        (["submit", "/no/such.yaml"], "Config file /no/such.yaml does not exist"),
    ],
)
def test_cli_errors(args, expected):
    out = run_cli("engine.runs", *args)
    assert out.returncode == 2 and expected in out.stderr and "Traceback" not in out.stderr


def test_a_run_outlives_the_app_process_that_started_it(tmp_path, tiny_model):
    cfg = tmp_path / "run.yaml"
    spec(tiny_model, 6).save(cfg)
    app = (
        "import os; from pathlib import Path; from engine import runs; from engine.spec import RunSpec; "
        "from engine.users import OWNER; "
        f"print(runs.submit(RunSpec.load(Path({str(cfg)!r})), OWNER), flush=True); os.kill(os.getpid(), 9)"
    )
    out = subprocess.run([sys.executable, "-c", app], capture_output=True, text=True, cwd=runs.paths.REPO)
    assert out.returncode == -9, "the 'app' died abruptly right after submitting"
    run_id = int(out.stdout.split()[0])
    run = wait_for(lambda: finished(run_id))
    assert run["state"] == "completed", run["error"]
    assert (Path(run["run_dir"]) / "final" / "adapter_config.json").is_file()


def test_compare_and_queue_views_on_the_runs_page(tiny_model):
    from streamlit.testing.v1 import AppTest

    a = runs.submit(spec(tiny_model, 3), OWNER)
    b = runs.submit(spec(tiny_model, 3, lora_r=8), OWNER)
    wait_for(lambda: finished(a) and finished(b))
    at = AppTest.from_file(str(runs.paths.REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["setting"]) == ["lora_r"] and set(table.iloc[0, 1:]) == {"16", "8"}


def test_stop_then_resume_continues_the_same_curve(tiny_model):
    run_id = runs.submit(spec(tiny_model, 100_000, save_steps=3), OWNER)
    run = wait_for(lambda: (r := runs.get(run_id, OWNER))["run_dir"] and rundir.last_checkpoint(r["run_dir"]) and r)
    runs.stop(run_id, OWNER)
    stopped_at = max(m["step"] for m in rundir.read_metrics(run["run_dir"]) if "loss" in m)
    checkpoint = int(rundir.last_checkpoint(run["run_dir"]).name.split("-")[1])
    (Path(run["run_dir"]) / "config.yaml").write_text(
        (Path(run["run_dir"]) / "config.yaml").read_text().replace("max_steps: 100000", f"max_steps: {checkpoint + 4}")
    )
    runs.resume(run_id, OWNER)
    done = wait_for(lambda: finished(run_id))
    assert done["state"] == "completed", done["error"]
    steps = [m["step"] for m in rundir.read_metrics(run["run_dir"]) if "loss" in m]
    assert steps == list(range(1, checkpoint + 5)), (stopped_at, checkpoint, steps)


def test_a_run_from_before_a_reboot_is_not_kept_alive_by_a_reused_pid(tmp_path):
    """After a restart, the recorded PIDs may belong to new, unrelated processes (here: this test's own, which is
    alive). The run must still be settled as ended, not shown as running forever, and never signalled."""
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    db = runs.connect()
    run_id = db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, started_at, pid, "
        "supervisor_pid, boot_id) VALUES ('me', ?, 'sft', 'lora', 'running', ?, ?, ?, ?, 'a-boot-ago')",
        (str(run_dir), time.time() - 600, time.time() - 590, os.getpid(), os.getpid()),
    ).lastrowid
    same_boot = db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, started_at, pid, "
        "supervisor_pid, boot_id) VALUES ('me', ?, 'sft', 'lora', 'running', ?, ?, ?, ?, ?)",
        (str(run_dir), time.time(), time.time(), os.getpid(), os.getpid(), runs.boot_id()),
    ).lastrowid
    states = {r["id"]: r for r in runs.list_runs(OWNER)}
    assert states[run_id]["state"] == "failed" and "disappeared" in states[run_id]["error"]
    assert states[same_boot]["state"] == "running", "a live process recorded in this boot still counts"


@pytest.mark.parametrize(
    "around_app, slots, expected",
    [
        (None, [1], "1"),  # every GPU NVML sees: slot k is GPU k
        ("2,3", [0], "2"),  # a server that gives the app GPUs 2 and 3: the first run lands on GPU 2, not 0
        ("2,3", [0, 1], "2,3"),
        ("GPU-abc,GPU-def", [1], "GPU-def"),
        ("3,-1,2", [0], "3"),  # CUDA ignores everything from an invalid entry on
    ],
)
def test_runs_use_only_the_gpus_the_app_was_given(monkeypatch, around_app, slots, expected):
    """The slot -> GPU mapping the supervisor puts in a trainer's CUDA_VISIBLE_DEVICES (NVML stubbed to 4 GPUs: this
    machine has none)."""
    monkeypatch.setattr(queue, "gpu_count", lambda: 4)
    if around_app is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", around_app)
    assert runs.devices_for(slots) == expected
    assert runs.slot_count() == len(runs.visible_gpus())


def test_a_multi_gpu_run_never_gets_two_slots_on_one_gpu(monkeypatch):
    """Four slots on two GPUs (a workshop sharing each GPU between two students): with slot 1 busy, a 2-GPU run
    must take slots 0 and 3 (GPUs 0 and 1), not 0 and 2, which CUDA_VISIBLE_DEVICES=0,0 would turn into no GPU."""
    monkeypatch.setenv("TUNEWISE_SLOTS", "4")
    monkeypatch.setattr(queue, "gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    db = runs.connect()
    busy = db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, slots_needed, slots, submitted_at) "
        "VALUES ('a', 'a', 'sft', 'lora', 'running', 1, '[1]', 1)"
    ).lastrowid
    queued = db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, slots_needed, submitted_at) "
        "VALUES ('b', 'b', 'sft', 'lora', 'queued', 2, 2)"
    ).lastrowid
    slots = queue.claim(db, queued, gpus=2)
    assert slots == [0, 3] and runs.devices_for(slots) == "0,1"
    db.execute("DELETE FROM runs WHERE id IN (?, ?)", (busy, queued))
    with pytest.raises(runs.RunError, match="but 2 are visible here"):
        runs.submit(RunSpec(num_processes=3), OWNER)
