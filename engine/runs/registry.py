"""The SQLite registry: runs, accounts, logins, quotas, saved plans and server settings, in one WAL database
(TUNEWISE_HOME/runs.db). The run directories can rebuild the runs table's meaning; the database is the index."""

import json
import os
import sqlite3
import time
from pathlib import Path

from engine import paths, rundir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, run_dir TEXT NOT NULL, stage TEXT, method TEXT,
    config TEXT, state TEXT NOT NULL, slots_needed INTEGER NOT NULL DEFAULT 1, slots TEXT, resume INTEGER DEFAULT 0,
    supervisor_pid INTEGER, pid INTEGER, submitted_at REAL, started_at REAL, finished_at REAL, error TEXT,
    final_metrics TEXT);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, must_change INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, locked_until REAL, created_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL, expires_at REAL);
CREATE TABLE IF NOT EXISTS login_failures (name TEXT NOT NULL, client TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS quotas (
    user TEXT PRIMARY KEY, max_waiting INTEGER, max_running INTEGER, max_minutes REAL, max_steps INTEGER,
    max_gpus INTEGER);
CREATE TABLE IF NOT EXISTS plans (user TEXT PRIMARY KEY, plan TEXT NOT NULL, updated_at REAL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS starts (
    run_id INTEGER NOT NULL, owner TEXT NOT NULL, started_at REAL NOT NULL, UNIQUE (run_id, started_at));
"""
# starts: the fair-share ledger (engine/runs/queue.py). A run's start keeps counting toward its owner's turn after
# the run is removed from `runs`; one row per start (a run stopped and resumed has trained twice), pruned beyond the
# fairness window.
# Columns added after the first registries were made: (name, SQL type).
LATER_COLUMNS = (
    ("boot_id", "TEXT"),
    ("estimated_s", "REAL"),
    ("time_limit_s", "REAL"),
    ("executor", "TEXT"),
    ("job_id", "TEXT"),
    ("node", "TEXT"),  # where it ran: engine/runs/executors.py
    ("pipeline", "INTEGER"),
    ("after_run", "INTEGER"),
)  # stages of one plan: engine/runs/pipeline.py


class RunError(ValueError):
    """A request the registry cannot honour; the message is for a person."""


def connect() -> sqlite3.Connection:
    paths.home().mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(paths.home() / "runs.db", timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    had_ledger = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='starts'").fetchone()
    db.executescript(SCHEMA)
    have = {c["name"] for c in db.execute("PRAGMA table_info(runs)")}
    for name, kind in LATER_COLUMNS:
        if name not in have:
            try:  # registries made before this column existed
                db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError:
                pass  # another process added it a moment ago
    if not had_ledger:  # a registry made before the ledger: its runs' starts count as if it had always been kept
        db.execute("INSERT OR IGNORE INTO starts SELECT id, owner, started_at FROM runs WHERE started_at IS NOT NULL")
    return db


def setting(key: str, default=None):
    row = connect().execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
    return json.loads(row["value"]) if row else default


def set_setting(key: str, value) -> None:
    connect().execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (key, json.dumps(value)),
    )


def boot_id() -> str:
    """This boot of the machine (Linux); "" where unknown. A process ID recorded in another boot names some other
    process now, so a run's PIDs count only in the boot that recorded them."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def alive(pid: int | None) -> bool:
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


def record_end(db: sqlite3.Connection, run_id: int, code: int | None, reason: str = "", how: str = "") -> None:
    """Settle a run's final state from its status.json and exit code (None: the process vanished). A reason
    (the instructor's time limit) makes a run that the supervisor ended 'stopped' with that sentence; how says why
    a run that did not finish failed, where the executor knows better than an exit code (a cluster's node died)."""
    run = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if run is None or run["state"] not in ("running", "queued"):
        return
    status = rundir.read_status(run["run_dir"])
    state, error = status.get("state"), status.get("error")
    if reason:
        state, error = "stopped", reason
        if Path(run["run_dir"]).is_dir():
            rundir.write_status(run["run_dir"], "stopped", error=reason, finished_at=time.time())
    elif state not in rundir.FINISHED or (state != "failed" and code not in (0, None)):
        state = "failed"
        how = how or (
            "the trainer process disappeared (machine restart, or killed from outside)"
            if code is None
            else f"the trainer was killed by signal {-code}"
            + (
                " (on Linux usually the system running out of memory, or a kill from outside; try a smaller "
                "batch or max length)"
                if code == -9
                else ""
            )
            if code < 0
            else f"the trainer exited with code {code}"
        )
        tail = rundir.log_tail(run["run_dir"], 8)
        error = f"{how}. Last lines of train.log:\n{tail}" if tail else how
        if Path(run["run_dir"]).is_dir():  # a run directory deleted by hand still settles in the registry
            rundir.write_status(run["run_dir"], "failed", error=error, finished_at=time.time())
    db.execute(
        "UPDATE runs SET state=?, error=?, finished_at=?, final_metrics=? WHERE id=?",
        (state, error, time.time(), json.dumps(status.get("final_metrics") or {}), run_id),
    )
    if state == "completed" and run["pipeline"]:  # the next stage of its pipeline starts from this result
        from engine.runs import pipeline

        pipeline.release(db, run_id)
