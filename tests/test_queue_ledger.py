"""The fair queue's ledger of starts and a pipeline's place in the waiting-runs quota (engine/runs/queue.py,
engine/runs.submit_chain), on the real registry. No trainer starts: rows are claimed with queue.claim as a
supervisor would, and submit's supervisors are recorded instead of started."""

import os
import time

import pytest

from engine import paths, runs, users
from engine.runs import local, queue
from engine.spec import RunSpec


@pytest.fixture
def workshop(monkeypatch):
    monkeypatch.setenv("TUNEWISE_MODE", "workshop")
    monkeypatch.setenv("TUNEWISE_SLOTS", "1")
    users.setup("teach", "teach-pass-1")  # the class's default quotas
    db = runs.connect()
    for name in ("bob", "carol"):  # the queue reads only the role; no login is needed here
        db.execute("INSERT INTO users (name, role, pw_hash) VALUES (?, 'student', '-')", (name,))
    return {name: users.find(name) for name in ("teach", "bob", "carol")}


def queued_row(owner: str) -> int:
    """A waiting run as submit leaves it, watched by a live supervisor (this process), so reconcile leaves it be."""
    run_dir = paths.user_area(owner) / "runs" / f"run-{time.time_ns()}"
    run_dir.mkdir(parents=True)
    return (
        runs.connect()
        .execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, supervisor_pid, boot_id) "
            "VALUES (?, ?, 'sft', 'lora', 'queued', ?, ?, ?)",
            (owner, str(run_dir), time.time(), os.getpid(), runs.boot_id()),
        )
        .lastrowid
    )


def finished_runs(owner: str, n: int) -> list[int]:
    """n runs that took their turn on the slot and completed."""
    db = runs.connect()
    ids = []
    for _ in range(n):
        run_id = queued_row(owner)
        assert queue.claim(db, run_id) == [0]
        db.execute("UPDATE runs SET state='completed', finished_at=? WHERE id=?", (time.time(), run_id))
        ids.append(run_id)
    return ids


def owners_in_line() -> list[str]:
    return [r["owner"] for r in queue.line(runs.connect())]


def test_removing_finished_runs_does_not_move_a_student_up_the_line(workshop):
    bobs = finished_runs("bob", 4)
    finished_runs("carol", 1)
    queued_row("carol")  # her 2nd run
    queued_row("bob")  # his 5th, pressed a moment later
    assert owners_in_line() == ["carol", "bob"]
    for run_id in bobs:
        runs.remove(run_id, workshop["bob"])
    assert owners_in_line() == ["carol", "bob"], "bob's four starts still count for the fairness window"


def test_a_run_stopped_and_resumed_counts_each_time_it_trained(workshop):
    """A run stopped at its time limit and resumed went back in line as if it were its owner's first: resumed every
    30 minutes, it kept the slot ahead of a student who had trained once."""
    db = runs.connect()
    dave = queued_row("bob")
    for _ in range(2):  # trains, is stopped at the limit, is resumed
        assert queue.claim(db, dave) == [0]
        db.execute("UPDATE runs SET state='queued', slots=NULL WHERE id=?", (dave,))
    db.execute("UPDATE runs SET submitted_at=0 WHERE id=?", (dave,))  # pressed Start before carol's
    finished_runs("carol", 1)
    queued_row("carol")
    assert owners_in_line() == ["carol", "bob"], "bob's run has trained twice, carol once"


def test_a_registry_from_before_the_ledger_keeps_its_starts(workshop):
    db = runs.connect()
    now = time.time()
    bobs = [
        db.execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, started_at, finished_at) "
            "VALUES (?, 'x', 'sft', 'lora', 'completed', ?, ?, ?)",
            (owner, now - 60, now - 60, now - 30),
        ).lastrowid
        for owner in ("bob", "bob", "carol")
    ][:2]
    db.execute("DROP TABLE IF EXISTS starts")  # as the registry was before this version
    runs.connect()  # the ledger is made and filled from the runs' start times
    queued_row("carol")
    queued_row("bob")
    for run_id in bobs:
        runs.remove(run_id, workshop["bob"])
    assert owners_in_line() == ["carol", "bob"]


@pytest.fixture
def supervisors(monkeypatch):
    started = []
    monkeypatch.setattr(local, "start_supervisor", started.append)
    return started


def chain() -> list[RunSpec]:
    return [RunSpec(stage="sft", max_steps=5), RunSpec(stage="dpo", max_steps=5)]


def registered() -> list[tuple[str, str]]:
    return [(r["owner"], r["stage"]) for r in runs.connect().execute("SELECT owner, stage FROM runs ORDER BY id")]


def test_a_refused_chain_registers_nothing(workshop, supervisors):
    queue.set_quota(None, max_waiting=1, by=users.OWNER)
    single = runs.submit(RunSpec(max_steps=5), workshop["bob"])
    with pytest.raises(runs.RunError, match="already have 1 run\\(s\\) waiting"):
        runs.submit_chain(chain(), workshop["bob"])
    assert registered() == [("bob", "sft")] and supervisors == [single]
    queue.set_quota("carol", max_waiting=5, by=users.OWNER)
    blocked = paths.user_area("carol") / "runs" / "a-file"  # the DPO stage's directory cannot be made
    blocked.parent.mkdir(parents=True)
    blocked.write_text("")
    stages = chain()
    stages[1].output_dir = str(blocked / "dpo")
    with pytest.raises(runs.RunError, match="Cannot write the run directory"):
        runs.submit_chain(stages, workshop["carol"])
    assert registered() == [("bob", "sft")], "the SFT stage is not left registered without its DPO stage"
    assert supervisors == [single], "nor queued to train"


def test_an_accepted_chain_is_one_waiting_entry_until_its_last_stage_starts(workshop, supervisors):
    queue.set_quota(None, max_waiting=1, by=users.OWNER)
    first, second = runs.submit_chain(chain(), workshop["carol"])
    assert supervisors == [first]
    db = runs.connect()
    assert [r["state"] for r in db.execute("SELECT state FROM runs ORDER BY id")] == ["queued", "waiting"]
    with pytest.raises(runs.RunError, match="already have 1 run\\(s\\) waiting"):
        runs.submit(RunSpec(max_steps=5), workshop["carol"])
    assert queue.claim(db, first) == [0]  # stage 1 trains; stage 2 still waits for it
    with pytest.raises(runs.RunError, match="already have 1 run\\(s\\) waiting"):
        runs.submit(RunSpec(max_steps=5), workshop["carol"])
    queue.set_quota(None, max_waiting=2, by=users.OWNER)
    runs.submit(RunSpec(max_steps=5), workshop["carol"])  # the chain took one place, not two
