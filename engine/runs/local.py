"""The local executor: a detached supervisor process per run that waits for its turn, starts the trainer here as
its child, enforces the instructor's time limit, and records how the run ended.

The supervisor runs in its own session, so it outlives the app; `stop` ends the whole process tree (accelerate
starts each GPU's worker in a session of its own, out of reach of a killpg)."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine import distributed, paths, rundir
from engine.runs import queue
from engine.runs.registry import RunError, alive, boot_id, connect, record_end
from engine.spec import SpecError

# A graceful stop lets the trainer finish the step under way and save it. How long that takes is the trainer's own
# measure (status.json's stop_s: its slowest recent step + the last evaluation + the last checkpoint save), times
# STOP_SLACK for a host whose load changes (steps of the embedded model on 2 busy cores went from 13 to 18 s), plus
# STOP_GRACE_S for the save and exit it has not measured yet. A fixed 6.5 s killed CPU runs mid-step, with no
# checkpoint: one step there takes 2-18 s.
STOP_GRACE_S = 6.5
STOP_SLACK = 1.5
STOP_GRACE_MAX_S = 300.0  # ...but never longer: then every process of the run is killed...
KILL_WAIT_S = 2.5  # ...and gone within this
POLL_S = 1.0


def train_command(run: sqlite3.Row) -> list[str]:
    cmd = [sys.executable, "-m", "engine.train", "--config", str(Path(run["run_dir"]) / "config.yaml")]
    return cmd + ["--resume"] if run["resume"] else cmd


def start_supervisor(run_id: int) -> None:
    with open(paths.home() / "supervisor.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.runs", "_supervise", str(run_id)],
            start_new_session=True,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=str(paths.REPO),
        )
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it, so it never lingers as a zombie
    connect().execute("UPDATE runs SET supervisor_pid=?, boot_id=? WHERE id=?", (proc.pid, boot_id(), run_id))


def supervise(run_id: int) -> None:
    """The run's supervisor: wait for its turn in our queue, then hand it to its executor (here, or a Ray job)."""
    from engine.runs import executors

    db = connect()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop while queued ends the wait quietly
    run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if run is not None and run["state"] == "running" and run["job_id"]:
        return executors.of(run).watch(db, run)  # after an app restart: follow the cluster's job again
    remote = run is not None and run["executor"] not in (None, executors.LOCAL)
    gpus = [] if remote else queue.visible_gpus()  # NVML once for this run
    # a run's slots on different GPUs; a cluster's slots are not this machine's GPUs, and processes on a CPU share it
    spread = queue.slot_count() if remote or not gpus else len(gpus)
    while (slots := queue.claim(db, run_id, max(1, spread))) is None:
        row = db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or row["state"] != "queued":
            return  # stopped or removed while waiting
        time.sleep(POLL_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if remote:
        return executors.of(run).execute(db, run)
    execute(db, run, slots, gpus)


def execute(db: sqlite3.Connection, run: sqlite3.Row, slots: list[int], gpus: list[str]) -> None:
    """Start the trainer as this supervisor's child on the GPUs of its slots, wait, record how it ended."""
    run_id, run_dir = run["id"], Path(run["run_dir"])
    env = dict(os.environ, TUNEWISE_LOG_REDIRECTED="1", PYTHONUNBUFFERED="1")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = queue.devices_for(slots, gpus)
    cmd = train_command(run)
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    limit_s = run["time_limit_s"]
    with open(run_dir / "train.log", "a") as log:
        trainer = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=str(paths.REPO)
        )
        db.execute("UPDATE runs SET pid=?, boot_id=? WHERE id=?", (trainer.pid, boot_id(), run_id))
        try:
            code = trainer.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:  # the instructor's limit: save a checkpoint and end, like a stop
            end_tree(trainer.pid, descendants(trainer.pid), grace_s=stop_grace_s(run_dir))
            record_end(db, run_id, trainer.wait(), reason=time_limit_reason(limit_s))
            return
    record_end(db, run_id, code)


def time_limit_reason(limit_s: float) -> str:
    return (
        f"Stopped after {limit_s / 60:g} minutes, the longest run your instructor allows. Its last checkpoint "
        "is kept: resume it to continue (another turn in the queue), or start a shorter run (fewer steps)."
    )


def check(spec, run_dir: Path) -> None:
    """Refuse at submit a run this machine cannot hold, with a sentence."""
    gpus = len(queue.visible_gpus())
    try:
        distributed.check(spec, gpus)  # FSDP on one GPU or none, more GPUs than visible
    except SpecError as e:
        raise RunError(str(e)) from None
    if spec.num_processes > queue.slot_count():
        raise RunError(
            f"This run asks for {spec.num_processes} GPUs but this machine has {queue.slot_count()} "
            "slot(s). Lower the number of GPUs (num_processes), or run it on a machine with more GPUs."
        )
    if gpus:
        memory_check(spec)


def memory_check(spec) -> None:
    """The pre-flight at submit (engine.estimate.preflight): refuse a run that cannot fit the best visible GPU even
    with gradient checkpointing. A GPU counts with its free memory now, or all of it while runs of this app train
    (a queued run waits for them). The trainer checks again with the memory free when it starts."""
    from engine import estimate, hardware

    visible = set(queue.visible_gpus())
    found = [g for g in hardware.detect_gpus(refresh=True).gpus if str(g.index) in visible]
    if not found:
        return
    busy = connect().execute("SELECT COUNT(*) FROM runs WHERE state='running'").fetchone()[0] > 0
    best = max(found, key=lambda g: g.total_gib if busy else g.free_gib)
    room = best.total_gib if busy else best.free_gib
    try:
        refusal = estimate.preflight(estimate.request_for(spec), room, where=f"GPU {best.index} ({best.name})")
    except (estimate.EstimateError, ValueError, OSError):
        return  # a model the estimator cannot read is checked by the trainer, or trains as asked
    if refusal:
        raise RunError(refusal)


def settle(db: sqlite3.Connection, run: sqlite3.Row) -> None:
    """reconcile(), for a run whose supervisor is gone: a trainer gone too has ended; a waiting run waits again."""
    same_boot = not (run["boot_id"] and boot_id() and run["boot_id"] != boot_id())
    if run["state"] == "running":
        if not (same_boot and alive(run["pid"])):  # an orphaned trainer still running is left to finish
            record_end(db, run["id"], None)
    else:
        start_supervisor(run["id"])


def where(run) -> str:
    return "this machine"


def descendants(pid: int) -> list[int]:
    """Every process below pid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def stop_grace_s(run_dir) -> float:
    """How long a graceful stop of this run may take: the step under way, its checkpoint and the exit."""
    measured_s = rundir.read_status(run_dir).get("stop_s") or 0.0  # none before the first step: it ends at once
    return min(STOP_GRACE_MAX_S, STOP_GRACE_S + STOP_SLACK * measured_s)


def end_tree(trainer_pid: int | None, others: list[int], graceful: bool = True, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the trainer and its ranks (each finishes its step, saves a checkpoint and exits), wait grace_s for the
    trainer, then SIGKILL every process given and wait until they are gone (KILL_WAIT_S at most)."""
    tree = ([trainer_pid] if trainer_pid and alive(trainer_pid) else []) + [p for p in others if p != trainer_pid]
    if graceful and trainer_pid and alive(trainer_pid):
        for pid in tree:
            _signal(pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        while alive(trainer_pid) and time.time() < deadline:
            time.sleep(0.2)
    for pid in tree:
        _signal(pid, signal.SIGKILL)
    deadline = time.time() + KILL_WAIT_S  # return only once they are gone (a killed process takes a moment)
    while any(alive(p) for p in tree) and time.time() < deadline:
        time.sleep(0.05)


def stop(run: dict) -> None:
    """End every process of a queued or running run: its supervisor (killed, so it records nothing), the trainer
    and all below it."""
    supervisor, trainer = run["supervisor_pid"], run["pid"]
    below = descendants(supervisor) if supervisor and alive(supervisor) else []
    if run["state"] == "running" and alive(trainer):
        below += [p for p in descendants(trainer) if p not in below]
        _signal(supervisor, signal.SIGSTOP)  # it must not record the trainer's exit as its own ending meanwhile
        end_tree(trainer, [p for p in below if p != trainer], grace_s=stop_grace_s(run["run_dir"]))
    end_tree(None, [supervisor, *below] if supervisor else below, graceful=False)


def _signal(pid: int | None, sig: int) -> None:
    if pid and alive(pid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
