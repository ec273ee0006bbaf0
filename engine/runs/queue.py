"""Admission: GPU slots, per-user quotas and a fair-share queue.

Fair share: waiting runs are taken across users in turn, each user's own runs in their order. A run's turn is
(its owner's runs started in the last FAIR_WINDOW_S + its rank among the owner's waiting runs, submission time),
so every student's first run starts before anyone's second, whoever pressed Start ten times first. Starts are
counted from the `starts` ledger, written as a run starts, so removing finished runs does not move a student up
the line. Quotas (set by the instructor, for the class and per student) bound runs waiting at once (a pipeline is
one, while any of its stages waits), runs training at once, minutes and steps per run and GPUs per run; they
apply to students only. A user at their running limit is passed over, never blocks the line.
"""

import json
import os
import sqlite3
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

from engine.runs.registry import RunError, connect

FAIR_WINDOW_S = 12 * 3600  # a teaching day: runs started earlier no longer count against a user's turn
# What `engine.users setup` gives a new class; the instructor changes them on the Class page or with the CLI.
WORKSHOP_DEFAULTS = {"max_waiting": 3, "max_running": 1, "max_minutes": 30.0, "max_steps": None, "max_gpus": 1}
CLASS = "*"  # the quotas row that holds the class's defaults


@dataclass
class Quota:
    max_waiting: int | None = None  # runs queued at once
    max_running: int | None = None  # runs training at once
    max_minutes: float | None = None  # a run is stopped (with a checkpoint) after this long
    max_steps: int | None = None  # longest run in optimizer steps
    max_gpus: int | None = None  # GPUs per run


def slot_count() -> int:
    """Runs that may train at once: this machine's GPUs (one CPU slot without any), or the Ray cluster's slots
    when TUNEWISE_CLUSTER is set (engine/runs/ray.py; 0 while it cannot be reached, so runs wait)."""
    from engine.runs import ray

    if ray.address():
        return ray.slot_count()
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


# ---------------------------------------------------------------- quotas


def quota_for(owner: str, db: sqlite3.Connection | None = None) -> Quota:
    """The limits that apply to this owner's runs: none for instructors and personal mode, else the class's
    defaults with the student's own overrides on top."""
    db = db or connect()
    role = db.execute("SELECT role FROM users WHERE name=?", (owner,)).fetchone()
    if role is None or role["role"] != "student":
        return Quota()
    merged = {}
    for key in (CLASS, owner):
        row = db.execute("SELECT * FROM quotas WHERE user=?", (key,)).fetchone()
        if row:
            merged.update({k: row[k] for k in asdict(Quota()) if row[k] is not None})
    return Quota(**merged)


def set_quota(user: str | None, only_if_unset: bool = False, *, by, **limits) -> None:
    """Set limits for one student (user) or the class (None), as `by` (an instructor: a student is refused). A limit
    of None or 0 means no limit."""
    from engine.users import require_instructor  # engine.users imports this package

    require_instructor(by, "change the quotas")
    unknown = set(limits) - set(asdict(Quota()))
    if unknown:
        raise RunError(f"Unknown quota {', '.join(sorted(unknown))}; the quotas are {', '.join(asdict(Quota()))}.")
    key = user or CLASS
    db = connect()
    if only_if_unset and db.execute("SELECT 1 FROM quotas WHERE user=?", (key,)).fetchone():
        return
    values = {k: (v if v else None) for k, v in limits.items()}
    for k, v in values.items():
        if v is not None and v < 0:
            raise RunError(f"A quota cannot be negative ({k}={v}); use 0 for no limit.")
    db.execute("INSERT OR IGNORE INTO quotas (user) VALUES (?)", (key,))
    for k, v in values.items():
        db.execute(f"UPDATE quotas SET {k}=? WHERE user=?", (v, key))


def class_quota() -> Quota:
    row = connect().execute("SELECT * FROM quotas WHERE user=?", (CLASS,)).fetchone()
    return Quota(**{k: row[k] for k in asdict(Quota())}) if row else Quota()


def admit(spec, owner: str, db: sqlite3.Connection, count_waiting: bool = True, pipeline: int | None = None) -> Quota:
    """Refuse a new run that breaks the owner's quotas, with a sentence; returns the quota that applies.
    Waiting runs are counted as entries: a run on its own, or a pipeline while any of its stages is queued or
    waiting for the one before. pipeline: the run joins that pipeline (a stage resumed), which is left out of the
    count, so it stays one entry. count_waiting=False checks the per-run limits only (a new pipeline's later
    stages, admitted with its first)."""
    quota = quota_for(owner, db)
    if quota.max_gpus and spec.num_processes > quota.max_gpus:
        raise RunError(
            f"Your instructor allows {quota.max_gpus} GPU(s) per run and this run asks for "
            f"{spec.num_processes}. Lower the number of GPUs."
        )
    if quota.max_steps and not 0 < spec.max_steps <= quota.max_steps:
        raise RunError(
            f"Your instructor allows at most {quota.max_steps} steps per run; set Max steps between 1 "
            f"and {quota.max_steps} (whole epochs are not allowed under this limit)."
        )
    if quota.max_waiting and count_waiting:
        waiting = db.execute(
            "SELECT COUNT(DISTINCT CASE WHEN pipeline IS NULL THEN id ELSE -pipeline END) FROM runs WHERE owner=? "
            "AND state IN ('queued', 'preparing', 'waiting') AND (pipeline IS NULL OR pipeline IS NOT ?)",
            (owner, pipeline),
        ).fetchone()[0]
        if waiting >= quota.max_waiting:
            raise RunError(
                f"You already have {waiting} run(s) waiting, the most your instructor allows at once. "
                "Wait until one starts, or stop one on the Runs page."
            )
    return quota


# ---------------------------------------------------------------- the fair order


def fair_order(queued: list[dict], started: dict[str, int]) -> list[int]:
    """Ids of the waiting runs in the order they get a slot. queued: rows with id, owner, submitted_at;
    started: runs each owner started within the fairness window (not counting waiting ones)."""
    rank = defaultdict(int)
    keyed = []
    for r in sorted(queued, key=lambda r: (r["submitted_at"] or 0, r["id"])):
        rank[r["owner"]] += 1
        keyed.append((started.get(r["owner"], 0) + rank[r["owner"]], r["submitted_at"] or 0, r["id"]))
    return [run_id for *_, run_id in sorted(keyed)]


def line(db: sqlite3.Connection, now: float | None = None) -> list[sqlite3.Row]:
    """The waiting runs, in fair order. Starts count from the ledger, one per start: a removed run still counts for
    the window, and a run stopped and resumed counts each time it trained (resumed after its 30 minutes, a run
    counted as a first run every time, ahead of students who had waited). A run the ledger has no row of (an older
    version's start) counts once, from the runs table."""
    now = time.time() if now is None else now
    queued = db.execute("SELECT * FROM runs WHERE state='queued'").fetchall()
    since = now - FAIR_WINDOW_S
    started = {
        r["owner"]: r["n"]
        for r in db.execute(
            "SELECT owner, COUNT(*) AS n FROM (SELECT owner FROM starts WHERE started_at >= ? UNION ALL "
            # a start the ledger missed (a row written by an older version of the app after the ledger's backfill)
            "SELECT owner FROM runs WHERE started_at >= ? AND id NOT IN (SELECT run_id FROM starts)) GROUP BY owner",
            (since, since),
        )
    }
    by_id = {r["id"]: r for r in queued}
    return [by_id[i] for i in fair_order([dict(r) for r in queued], started)]


def claim(db: sqlite3.Connection, run_id: int, gpus: int = 1) -> list[int] | None:
    """In one write transaction: if this run is the first in fair order whose owner may start another run, and
    enough slots are free, take them. With more slots than GPUs (slot k runs on GPU k mod gpus), a run's slots must
    be on different GPUs: CUDA sees no GPU at all when CUDA_VISIBLE_DEVICES names one twice."""
    db.execute("BEGIN IMMEDIATE")
    try:
        running = db.execute("SELECT owner, slots FROM runs WHERE state='running'").fetchall()
        per_owner = defaultdict(int)
        for r in running:
            per_owner[r["owner"]] += 1
        head = None
        for r in line(db):
            limit = quota_for(r["owner"], db).max_running
            if not limit or per_owner[r["owner"]] < limit:
                head = r
                break
        if head is None or head["id"] != run_id:
            return None
        busy = {s for r in running for s in json.loads(r["slots"] or "[]")}
        taken = []
        for s in range(slot_count()):
            if s not in busy and all(s % gpus != t % gpus for t in taken):
                taken.append(s)
        taken = taken[: head["slots_needed"]]
        if len(taken) < head["slots_needed"]:
            return None
        now = time.time()
        db.execute(
            "UPDATE runs SET state='running', slots=?, started_at=? WHERE id=?", (json.dumps(taken), now, run_id)
        )
        db.execute("INSERT INTO starts (run_id, owner, started_at) VALUES (?, ?, ?)", (run_id, head["owner"], now))
        db.execute("DELETE FROM starts WHERE started_at < ?", (now - FAIR_WINDOW_S,))
        return taken
    finally:
        db.execute("COMMIT")


def expected_starts(
    db: sqlite3.Connection, remaining_s: dict[int, float | None], waiting: list[sqlite3.Row] | None = None
) -> dict[int, float | None]:
    """When each waiting run should start (epoch seconds), by playing the fair order forward: running runs free
    their slots after remaining_s (the live ETA, else the estimate), waiting ones hold them for the estimator's run
    time (estimated_s, kept at submit). None where a run ahead has no known duration. waiting: line(db), if the
    caller already has it."""
    now = time.time()
    free_at = [now] * slot_count()
    for r in db.execute("SELECT id, slots, started_at, estimated_s FROM runs WHERE state='running'"):
        left = remaining_s.get(r["id"])
        if left is None and r["estimated_s"]:
            left = max(0.0, r["estimated_s"] - (now - (r["started_at"] or now)))
        for s in json.loads(r["slots"] or "[]"):
            if s < len(free_at):
                free_at[s] = None if left is None else now + left
    starts = {}
    for r in line(db) if waiting is None else waiting:
        need = min(r["slots_needed"], len(free_at))
        order = sorted(range(len(free_at)), key=lambda s: (free_at[s] is None, free_at[s] or 0))[:need]
        times = [free_at[s] for s in order]
        start = None if not times or any(t is None for t in times) else max(times)
        starts[r["id"]] = start
        for s in order:
            free_at[s] = None if start is None or not r["estimated_s"] else start + r["estimated_s"]
    return starts
