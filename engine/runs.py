"""The run registry and the queue: runs survive closed browsers and restarted apps.

    python -m engine.runs submit runs/demo.yaml [--owner NAME] [--json]   # prints the new run's id
    python -m engine.runs list [--json]
    python -m engine.runs show ID | stop ID | resume ID | remove ID [--json]

Each submitted run gets a detached supervisor process (its own session, so it outlives the app) that waits for
its turn in SQLite, starts `python -m engine.train --config RUN/config.yaml` as its child, waits, and records
how it ended. Turns are strict submission order; a run needs `num_processes` GPU slots, one job per GPU
(TUNEWISE_SLOTS overrides the count; CUDA_VISIBLE_DEVICES around the app limits the GPUs; a machine without a GPU has
one CPU slot). The run directory stays the source of metrics; the database is the index.
"""
import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine import paths, rundir
from engine.spec import RunSpec, SpecError

STOP_GRACE_S = 6.5  # graceful stop (checkpoint + exit), then every process of the run is killed...
KILL_WAIT_S = 2.5   # ...and gone within this: < 10 s in all
POLL_S = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, run_dir TEXT NOT NULL, stage TEXT, method TEXT,
    config TEXT, state TEXT NOT NULL, slots_needed INTEGER NOT NULL DEFAULT 1, slots TEXT, resume INTEGER DEFAULT 0,
    supervisor_pid INTEGER, pid INTEGER, submitted_at REAL, started_at REAL, finished_at REAL, error TEXT,
    final_metrics TEXT)
"""


class RunError(ValueError):
    """A request the registry cannot honour; the message is for a person."""


def connect() -> sqlite3.Connection:
    paths.home().mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(paths.home() / "runs.db", timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    db.execute(SCHEMA)
    if "boot_id" not in {c["name"] for c in db.execute("PRAGMA table_info(runs)")}:
        try:  # registries made before this column existed
            db.execute("ALTER TABLE runs ADD COLUMN boot_id TEXT")
        except sqlite3.OperationalError:
            pass  # another process added it a moment ago
    return db


def boot_id() -> str:
    """This boot of the machine (Linux); "" where unknown. A process ID recorded in another boot names some other
    process now, so a run's PIDs count only in the boot that recorded them."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def slot_count() -> int:
    if os.environ.get("TUNEWISE_SLOTS"):
        return max(1, int(os.environ["TUNEWISE_SLOTS"]))
    return max(1, len(visible_gpus()))


def visible_gpus() -> list[str]:
    """The GPUs runs may use, as CUDA_VISIBLE_DEVICES names them: the ones CUDA_VISIBLE_DEVICES lists around the
    app (a shared server that gives the app GPUs 2 and 3: `CUDA_VISIBLE_DEVICES=2,3 make run`), else every GPU
    NVML sees. A run's slots index this list. CUDA stops reading the variable at an invalid entry such as -1."""
    count = gpu_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None or not count:
        return [str(i) for i in range(count)]
    names = []
    for name in (n.strip() for n in listed.split(",")):
        if not name or name.startswith("-"):
            break
        names.append(name)
    return names[:count]


def gpu_count() -> int:
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  no NVIDIA driver: the CPU is one slot
        return 0


def devices_for(slots: list[int], gpus: list[str] | None = None) -> str:
    """CUDA_VISIBLE_DEVICES for a run holding these slots (gpus: visible_gpus(), if already read). TUNEWISE_SLOTS
    above the GPU count shares the GPUs: slot k runs on GPU k modulo their number."""
    gpus = visible_gpus() if gpus is None else gpus
    return ",".join(gpus[s % len(gpus)] for s in slots)


def submit(spec: RunSpec, owner: str = "me") -> int:
    """Register a run, write its directory, start its supervisor. Returns the run id."""
    gpus = len(visible_gpus())
    if gpus and spec.num_processes > gpus:
        raise RunError(f"This run asks for {spec.num_processes} GPUs but the app was given {gpus}. Lower the number "
                       "of GPUs (num_processes), or start the app with more GPUs visible.")
    if spec.num_processes > slot_count():
        raise RunError(f"This run asks for {spec.num_processes} GPUs but this machine has {slot_count()} slot(s). "
                       "Lower the number of GPUs (num_processes), or run it on a machine with more GPUs.")
    db = connect()
    # 'preparing' until the directory and config exist: neither the queue nor reconcile() touches it before
    cur = db.execute("INSERT INTO runs (owner, run_dir, stage, method, state, slots_needed, submitted_at) "
                     "VALUES (?, '', ?, ?, 'preparing', ?, ?)",
                     (owner, spec.stage, spec.method, spec.num_processes, time.time()))
    run_id = cur.lastrowid
    if not spec.output_dir:
        spec.output_dir = str(paths.runs_dir() / f"{run_id:04d}-{spec.stage}-{spec.method}")
    run_dir = Path(spec.output_dir).expanduser().resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        spec.output_dir = str(run_dir)
        spec.save(run_dir / "config.yaml")
    except OSError as e:
        db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        raise RunError(f"Cannot write the run directory {run_dir} ({e.strerror}). Choose another output "
                       "directory.") from None
    rundir.write_status(run_dir, "queued", run_id=run_id, estimated_peak_gib=_predicted_peak_gib(spec))
    db.execute("UPDATE runs SET run_dir=?, config=?, state='queued' WHERE id=?", (str(run_dir), spec.to_yaml(), run_id))
    _start_supervisor(run_id)
    return run_id


def _predicted_peak_gib(spec: RunSpec) -> float | None:
    """The estimator's peak for this run, drawn as a line on the live memory chart (GPU runs only)."""
    if not gpu_count():
        return None
    from engine.estimate import EstimateError, peak_gib, request_for
    try:
        return peak_gib(request_for(spec))
    except (EstimateError, ValueError, OSError):
        return None  # a model the estimator cannot read still trains; the chart just has no line


def train_command(run: sqlite3.Row) -> list[str]:
    cmd = [sys.executable, "-m", "engine.train", "--config", str(Path(run["run_dir"]) / "config.yaml")]
    return cmd + ["--resume"] if run["resume"] else cmd


def _start_supervisor(run_id: int) -> None:
    with open(paths.home() / "supervisor.log", "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine.runs", "_supervise", str(run_id)],
                                start_new_session=True, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                cwd=str(paths.REPO))
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it, so it never lingers as a zombie
    connect().execute("UPDATE runs SET supervisor_pid=?, boot_id=? WHERE id=?", (proc.pid, boot_id(), run_id))


def _claim(db: sqlite3.Connection, run_id: int, gpus: int = 1) -> list[int] | None:
    """In one write transaction: if this run is first in line and enough slots are free, take them. With more
    slots than GPUs (slot k runs on GPU k mod gpus), a run's slots must be on different GPUs: CUDA sees no GPU at
    all when CUDA_VISIBLE_DEVICES names one twice."""
    db.execute("BEGIN IMMEDIATE")
    try:
        queued = db.execute("SELECT id, slots_needed FROM runs WHERE state='queued' "
                            "ORDER BY submitted_at, id").fetchall()
        if not queued or queued[0]["id"] != run_id:
            return None
        busy = {s for row in db.execute("SELECT slots FROM runs WHERE state='running'")
                for s in json.loads(row["slots"] or "[]")}
        taken = []
        for s in range(slot_count()):
            if s not in busy and all(s % gpus != t % gpus for t in taken):
                taken.append(s)
        taken = taken[: queued[0]["slots_needed"]]
        if len(taken) < queued[0]["slots_needed"]:
            return None
        db.execute("UPDATE runs SET state='running', slots=?, started_at=? WHERE id=?",
                   (json.dumps(taken), time.time(), run_id))
        return taken
    finally:
        db.execute("COMMIT")


def supervise(run_id: int) -> None:
    db = connect()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop while queued ends the wait quietly
    gpus = visible_gpus()  # NVML once for this run
    while (slots := _claim(db, run_id, max(1, len(gpus)))) is None:
        row = db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or row["state"] != "queued":
            return  # stopped or removed while waiting
        time.sleep(POLL_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    run_dir = Path(run["run_dir"])
    env = dict(os.environ, TUNEWISE_LOG_REDIRECTED="1", PYTHONUNBUFFERED="1")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = devices_for(slots, gpus)
    cmd = train_command(run)
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    with open(run_dir / "train.log", "a") as log:
        trainer = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=str(paths.REPO))
        db.execute("UPDATE runs SET pid=?, boot_id=? WHERE id=?", (trainer.pid, boot_id(), run_id))
        code = trainer.wait()
    record_end(db, run_id, code)


def record_end(db: sqlite3.Connection, run_id: int, code: int | None) -> None:
    """Settle a run's final state from its status.json and exit code (None: the process vanished)."""
    run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if run is None or run["state"] not in ("running", "queued"):
        return
    status = rundir.read_status(run["run_dir"])
    state, error = status.get("state"), status.get("error")
    if state not in rundir.FINISHED or (state != "failed" and code not in (0, None)):
        state = "failed"
        how = ("the trainer process disappeared (machine restart, or killed from outside)" if code is None
               else f"the trainer was killed by signal {-code}"
               + (" (on Linux usually the system running out of memory, or a kill from outside; try a smaller "
                  "batch or max length)" if code == -9 else "") if code < 0 else f"the trainer exited with code {code}")
        tail = rundir.log_tail(run["run_dir"], 8)
        error = f"{how}. Last lines of train.log:\n{tail}" if tail else how
        if Path(run["run_dir"]).is_dir():  # a run directory deleted by hand still settles in the registry
            rundir.write_status(run["run_dir"], "failed", error=error, finished_at=time.time())
    db.execute("UPDATE runs SET state=?, error=?, finished_at=?, final_metrics=? WHERE id=?",
               (state, error, time.time(), json.dumps(status.get("final_metrics") or {}), run_id))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def reconcile(db: sqlite3.Connection) -> None:
    """After an app or machine restart: settle runs whose supervisor is gone; restart waiting ones."""
    this_boot = boot_id()
    for run in db.execute("SELECT * FROM runs WHERE state IN ('running', 'queued')").fetchall():
        same_boot = not (run["boot_id"] and this_boot and run["boot_id"] != this_boot)
        if same_boot and _alive(run["supervisor_pid"]):
            continue
        if run["state"] == "running":
            if not (same_boot and _alive(run["pid"])):  # an orphaned trainer still running is left to finish
                record_end(db, run["id"], None)
        else:
            _start_supervisor(run["id"])


def list_runs() -> list[dict]:
    db = connect()
    reconcile(db)
    rows = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id")]
    queued = [r["id"] for r in sorted(rows, key=lambda r: (r["submitted_at"] or 0, r["id"])) if r["state"] == "queued"]
    for r in rows:
        r["position"] = queued.index(r["id"]) + 1 if r["id"] in queued else None
    return rows


def get(run_id: int) -> dict:
    for r in list_runs():
        if r["id"] == run_id:
            return r
    raise RunError(f"There is no run {run_id}. `python -m engine.runs list` shows the runs there are.")


def _descendants(pid: int) -> list[int]:
    """Every process below pid. Needed because accelerate/torchrun start each GPU's worker in a session of its
    own, out of reach of a killpg on the trainer's group."""
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


def stop(run_id: int) -> dict:
    """Graceful first (SIGTERM: the trainer saves a checkpoint and exits), then every process of the run."""
    run = get(run_id)
    db = connect()
    if run["state"] not in ("queued", "running"):
        raise RunError(f"Run {run_id} is {run['state']}, so there is nothing to stop.")
    tree = [p for p in (run["supervisor_pid"], run["pid"]) if _alive(p)]
    tree += [p for p in (_descendants(run["supervisor_pid"]) if run["supervisor_pid"] else []) if p not in tree]
    if run["state"] == "running" and _alive(run["pid"]):
        for pid in tree[1:]:  # the trainer and, on several GPUs, every rank: each saves and exits
            _signal(pid, signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        while _alive(run["pid"]) and time.time() < deadline:
            time.sleep(0.2)
    for pid in tree:
        _signal(pid, signal.SIGKILL)
    deadline = time.time() + KILL_WAIT_S  # return only once they are gone (a killed process takes a moment)
    while any(_alive(p) for p in tree) and time.time() < deadline:
        time.sleep(0.05)
    db.execute("UPDATE runs SET state='stopped', finished_at=? WHERE id=? AND state IN ('queued', 'running')",
               (time.time(), run_id))
    status = rundir.read_status(run["run_dir"])
    if status.get("state") not in ("stopped", "completed") and Path(run["run_dir"]).is_dir():
        rundir.write_status(run["run_dir"], "stopped", finished_at=time.time())
    return get(run_id)


def _signal(pid: int, sig: int) -> None:
    if _alive(pid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def resume(run_id: int) -> dict:
    run = get(run_id)
    if run["state"] not in ("stopped", "failed"):
        raise RunError(f"Run {run_id} is {run['state']}; only a stopped or failed run can be resumed.")
    if rundir.last_checkpoint(run["run_dir"]) is None:
        raise RunError(f"Run {run_id} has no checkpoint to resume from; start it again instead.")
    db = connect()
    db.execute("UPDATE runs SET state='queued', resume=1, error=NULL, finished_at=NULL, submitted_at=? WHERE id=?",
               (time.time(), run_id))
    rundir.write_status(run["run_dir"], "queued", error=None, finished_at=None)
    _start_supervisor(run_id)
    return get(run_id)


def remove(run_id: int) -> None:
    import shutil
    run = get(run_id)
    if run["state"] in ("queued", "running"):
        raise RunError(f"Run {run_id} is {run['state']}; stop it before removing it.")
    shutil.rmtree(run["run_dir"], ignore_errors=True)
    connect().execute("DELETE FROM runs WHERE id=?", (run_id,))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.runs", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["submit", "list", "show", "stop", "resume", "remove", "_supervise"])
    p.add_argument("target", nargs="?", help="CONFIG for submit, run ID otherwise")
    p.add_argument("--owner", default=os.environ.get("USER", "me"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.command == "_supervise":
            supervise(int(a.target))
            return 0
        if a.command == "list":
            return _print(list_runs(), a.json)
        if not a.target:
            raise RunError(f"`{a.command}` needs {'a config file' if a.command == 'submit' else 'a run id'}.")
        if a.command == "submit":
            run_id = submit(RunSpec.load(Path(a.target)), a.owner)
            return _print({"id": run_id}, a.json) if a.json else print(run_id) or 0
        run_id = int(a.target) if a.target.isdigit() else -1
        result = {"show": get, "stop": stop, "resume": resume}.get(a.command, lambda i: remove(i) or {"removed": i})
        return _print(result(run_id), a.json)
    except (RunError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _print(value, as_json: bool) -> int:
    if as_json:
        print(json.dumps(value, default=str))
    elif isinstance(value, list):
        for r in value:
            print(f"{r['id']:>4}  {r['state']:<9} {r['stage']:<4} {r['method']:<6} pos={r['position'] or '-'} "
                  f"pid={r['pid'] or '-'}  {r['run_dir']}")
    else:
        for k, v in value.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
