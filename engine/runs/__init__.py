"""The runs: registry, fair queue and executor. Runs survive closed browsers and restarted apps.

    python -m engine.runs submit runs/demo.yaml [--as NAME] [--json]   # prints the new run's id
    python -m engine.runs submit sft.yaml dpo.yaml --chain             # a pipeline: each stage starts from the last
    python -m engine.runs list [--as NAME] [--json]
    python -m engine.runs show ID | stop ID | resume ID | remove ID [--as NAME] [--json]

Every call takes the acting user (engine.users.User): a student sees and acts on their own runs only, an
instructor (and the one person of personal mode) on all. `--as NAME` acts as that account; without it the CLI is
the machine's administrator. Each submitted run gets a detached supervisor process (engine/runs/local.py) that
waits for its turn in the fair-share queue (engine/runs/queue.py), starts `python -m engine.train --config
RUN/config.yaml` as its child, and records how it ended. A run needs `num_processes` GPU slots, one job per GPU
(TUNEWISE_SLOTS overrides the count; CUDA_VISIBLE_DEVICES around the app limits the GPUs; a machine without a GPU
has one CPU slot). The run directory stays the source of metrics; the database is the index. A pipeline's later
stages are runs in state 'waiting' until the stage before them completes (engine/runs/pipeline.py).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from engine import access, paths, rundir
from engine.runs import executors, local, pipeline, queue, ray
from engine.runs.local import train_command
from engine.runs.queue import devices_for, gpu_count, slot_count, visible_gpus
from engine.runs.registry import RunError, alive, boot_id, connect, record_end
from engine.spec import RunSpec

if TYPE_CHECKING:
    from engine.users import User

__all__ = [
    "RunError",
    "submit",
    "submit_chain",
    "list_runs",
    "get",
    "stop",
    "resume",
    "remove",
    "connect",
    "slot_count",
    "visible_gpus",
    "gpu_count",
    "devices_for",
    "train_command",
    "record_end",
    "boot_id",
    "alive",
]


def runs_dir_for(actor: User) -> Path:
    return paths.user_area(actor.name) / "runs" if actor.role != "owner" else paths.runs_dir()


def submit(spec: RunSpec, actor: User) -> int:
    """Check the run against the actor's paths and quotas, register it, write its directory, start its supervisor.
    Returns the run id."""
    return _register([spec], actor)[0]


def submit_chain(specs: list[RunSpec], actor: User) -> list[int]:
    """The stages of one plan, registered together: the first queued, each later one waiting for the one before
    and starting from its result (engine/runs/pipeline.py). Returns the ids.

    Quotas: the pipeline is one entry against the waiting-runs quota, counted while any of its stages is queued or
    waiting, so a chain needs one free place, like a single run, and holds it until its last stage starts; every
    stage is checked for the per-run limits (steps, GPUs) now, so a later stage is not checked again when it is
    released. The stages are registered in one transaction: nothing is registered if a stage is refused."""
    pipeline.check(specs)
    return _register(specs, actor)


def _register(specs: list[RunSpec], actor: User) -> list[int]:
    """submit() for one run or a chain: checks, the rows in one transaction, directories, the first's supervisor."""
    executor = executors.current()
    for spec in specs:  # every stage's paths, before anything is registered
        try:
            access.check_spec(spec, actor)
        except access.AccessError as e:
            raise RunError(str(e)) from None
        try:  # too many GPUs, a run directory the cluster cannot see: refused here, with a sentence
            executors.of(executor).check(
                spec, Path(spec.output_dir).expanduser().resolve().parent if spec.output_dir else runs_dir_for(actor)
            )
        except ray.Unreachable:
            pass  # the run waits in line until the cluster answers; it is checked again before it is handed over
    db = connect()
    db.execute("BEGIN IMMEDIATE")  # the waiting-runs quota is counted and the rows added in one transaction
    try:
        quotas = [queue.admit(spec, actor.name, db, count_waiting=not i) for i, spec in enumerate(specs)]
        ids = []
        for spec, quota in zip(specs, quotas):
            # 'preparing' until the directory and config exist: neither the queue nor reconcile() touches it before
            ids.append(
                db.execute(
                    "INSERT INTO runs (owner, run_dir, stage, method, state, slots_needed, submitted_at, "
                    "time_limit_s, pipeline, after_run) VALUES (?, '', ?, ?, 'preparing', ?, ?, ?, ?, ?)",
                    (
                        actor.name,
                        spec.stage,
                        spec.method,
                        spec.num_processes,
                        time.time(),
                        quota.max_minutes * 60 if quota.max_minutes else None,
                        ids[0] if ids else None,
                        ids[-1] if ids else None,
                    ),
                ).lastrowid
            )
        if len(ids) > 1:
            db.execute("UPDATE runs SET pipeline=? WHERE id=?", (ids[0], ids[0]))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    run_dirs = []
    for run_id, spec in zip(ids, specs):
        if not spec.output_dir:
            spec.output_dir = str(runs_dir_for(actor) / f"{run_id:04d}-{spec.stage}-{spec.method}")
        run_dir = Path(spec.output_dir).expanduser().resolve()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            spec.output_dir = str(run_dir)
            spec.save(run_dir / "config.yaml")
        except OSError as e:
            db.execute(f"DELETE FROM runs WHERE id IN ({','.join('?' * len(ids))})", ids)
            raise RunError(
                f"Cannot write the run directory {run_dir} ({e.strerror}). Choose another output directory."
            ) from None
        run_dirs.append(run_dir)
    for i, (run_id, spec, run_dir) in enumerate(zip(ids, specs, run_dirs)):
        state = "waiting" if i else "queued"
        rundir.write_status(run_dir, state, run_id=run_id, estimated_peak_gib=_predicted_peak_gib(spec))
        db.execute(
            "UPDATE runs SET run_dir=?, config=?, state=?, estimated_s=?, executor=? WHERE id=?",
            (str(run_dir), spec.to_yaml(), state, _expected_seconds(spec), executor, run_id),
        )
    local.start_supervisor(ids[0])
    return ids


def _predicted_peak_gib(spec: RunSpec) -> float | None:
    """The estimator's peak for this run, drawn as a line on the live memory chart (GPU runs only)."""
    if not gpu_count():
        return None
    from engine.estimate import EstimateError, peak_gib, request_for

    try:
        return peak_gib(request_for(spec))
    except (EstimateError, ValueError, OSError):
        return None  # a model the estimator cannot read still trains; the chart just has no line


def _expected_seconds(spec: RunSpec) -> float | None:
    """The estimator's run time on this machine, for the queue's expected start times (None when unknown)."""
    from dataclasses import replace

    from engine.estimate import EstimateError, estimate_run, gpu_from_hardware, request_for
    from engine.hardware import this_computer

    try:
        if spec.max_steps > 0:
            examples = spec.max_steps * spec.per_device_train_batch_size * spec.gradient_accumulation_steps
            epochs = 1.0
        else:
            from engine import data

            path = spec.dataset_name or data.bundled(spec.stage)
            examples, epochs = max(1, data.check(path, spec.stage).rows), spec.num_train_epochs
        req = replace(request_for(spec), examples=examples, epochs=epochs)
        return estimate_run(req, gpu_from_hardware(this_computer())).hours * 3600 + 20  # + loading the model
    except (EstimateError, ValueError, OSError, KeyError):
        return None


def reconcile(db) -> None:
    """After an app or machine restart: settle runs whose supervisor is gone; restart waiting ones."""
    this_boot = boot_id()
    for run in db.execute("SELECT * FROM runs WHERE state IN ('running', 'queued')").fetchall():
        same_boot = not (run["boot_id"] and this_boot and run["boot_id"] != this_boot)
        if same_boot and alive(run["supervisor_pid"]):
            continue
        executors.of(run).settle(db, run)  # ended meanwhile, still running (a Ray job), or back in line
    for run in db.execute(
        "SELECT w.after_run FROM runs w JOIN runs r ON r.id = w.after_run WHERE "
        "w.state='waiting' AND r.state='completed'"
    ).fetchall():  # ended while no one released it
        pipeline.release(db, run["after_run"])


def list_runs(actor: User) -> list[dict]:
    """The runs the actor may see (their own; all for an instructor), each with its place in the fair queue
    (position among all waiting runs) and expected start time."""
    db = connect()
    reconcile(db)
    rows = [dict(r) for r in db.execute("SELECT * FROM runs WHERE state != 'preparing' ORDER BY id")]
    line = queue.line(db)
    waiting = [r["id"] for r in line]
    starts = queue.expected_starts(db, _remaining(rows), line) if waiting else {}
    for r in rows:
        r["position"] = waiting.index(r["id"]) + 1 if r["id"] in waiting else None
        r["expected_start"] = starts.get(r["id"])
        r["where"] = executors.of(r).where(r)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        r["held"] = pipeline.held(r, by_id)
    return [r for r in rows if actor.sees_all or r["owner"] == actor.name]


def _remaining(rows: list[dict]) -> dict[int, float | None]:
    from engine import monitor

    left = {}
    for r in rows:
        if r["state"] == "running":
            left[r["id"]] = monitor.progress(rundir.read_status(r["run_dir"]), rundir.read_metrics(r["run_dir"])).eta_s
    return left


def get(run_id: int, actor: User) -> dict:
    for r in list_runs(actor):
        if r["id"] == run_id:
            return r
    raise RunError(
        f"There is no run {run_id} of yours. `python -m engine.runs list` (or the Runs page) shows the "
        "runs you can see."
        if not actor.sees_all
        else f"There is no run {run_id}. `python -m engine.runs list` shows the runs there are."
    )


def stop(run_id: int, actor: User) -> dict:
    """Graceful first (SIGTERM: the trainer saves a checkpoint and exits), then every process of the run."""
    run = get(run_id, actor)
    if run["state"] not in ("queued", "running", "waiting"):
        raise RunError(f"Run {run_id} is {run['state']}, so there is nothing to stop.")
    if run["state"] != "waiting":  # a pipeline's waiting stage has no process yet
        executors.of(run).stop(run)
    connect().execute(
        "UPDATE runs SET state='stopped', finished_at=? WHERE id=? AND state IN ('queued', 'running', 'waiting')",
        (time.time(), run_id),
    )
    status = rundir.read_status(run["run_dir"])
    if status.get("state") not in ("stopped", "completed") and Path(run["run_dir"]).is_dir():
        rundir.write_status(run["run_dir"], "stopped", finished_at=time.time())
    return get(run_id, actor)


def spec_of(run: dict) -> RunSpec:
    """A run's settings, as a new run would take them (its own directory left out): "start again"."""
    values = yaml.safe_load(run["config"] or "{}") or {}
    return RunSpec.from_dict({**values, "output_dir": ""})


def resume(run_id: int, actor: User) -> dict:
    run = get(run_id, actor)
    if run["state"] not in ("stopped", "failed"):
        raise RunError(f"Run {run_id} is {run['state']}; only a stopped or failed run can be resumed.")
    db = connect()
    if run["pipeline"] and not run["started_at"]:  # a pipeline's stage stopped before it began: back in its place
        before = db.execute("SELECT state FROM runs WHERE id=?", (run["after_run"],)).fetchone()
        ready = before is None or before["state"] == "completed"
        db.execute("BEGIN IMMEDIATE")
        try:  # the pipeline is one waiting entry again (nothing new if another of its stages still waits)
            queue.admit(spec_of(run), run["owner"], db, pipeline=run["pipeline"])
            db.execute(
                "UPDATE runs SET state=?, error=NULL, finished_at=NULL, submitted_at=? WHERE id=?",
                ("waiting" if run["after_run"] else "queued", time.time(), run_id),
            )
        finally:
            db.execute("COMMIT")
        rundir.write_status(run["run_dir"], "waiting" if run["after_run"] else "queued", error=None, finished_at=None)
        if not run["after_run"]:
            local.start_supervisor(run_id)
        elif ready:
            pipeline.release(db, run["after_run"])
        return get(run_id, actor)
    if rundir.last_checkpoint(run["run_dir"]) is None:
        raise RunError(f"Run {run_id} has no checkpoint to resume from; start it again instead.")
    db.execute("BEGIN IMMEDIATE")
    try:
        queue.admit(RunSpec.from_dict(yaml.safe_load(run["config"]) or {}), run["owner"], db, pipeline=run["pipeline"])
        db.execute(
            "UPDATE runs SET state='queued', resume=1, error=NULL, finished_at=NULL, submitted_at=?, "
            "executor=?, job_id=NULL, node=NULL WHERE id=?",
            (time.time(), executors.current(), run_id),
        )
    finally:
        db.execute("COMMIT")
    rundir.write_status(run["run_dir"], "queued", error=None, finished_at=None)
    local.start_supervisor(run_id)
    return get(run_id, actor)


def remove(run_id: int, actor: User) -> None:
    run = get(run_id, actor)
    if run["state"] in ("queued", "running", "waiting"):
        raise RunError(f"Run {run_id} is {run['state']}; stop it before removing it.")
    later = connect().execute("SELECT id FROM runs WHERE after_run=? AND state='waiting'", (run_id,)).fetchone()
    if later:
        raise RunError(
            f"Run {later['id']}, the next stage of this pipeline, waits for run {run_id} and would start "
            f"from its result. Stop run {later['id']} first, then remove both."
        )
    if Path(run["run_dir"]).resolve().is_relative_to(paths.home()) or actor.role == "owner":
        shutil.rmtree(run["run_dir"], ignore_errors=True)  # never delete outside the app's folders for a workshop
    connect().execute("DELETE FROM runs WHERE id=?", (run_id,))
