"""Workshop mode in the engine: accounts, logins, isolation of runs and paths, the fair queue and quotas. Real
SQLite, real argon2 hashes, real trainer processes on a tiny model; every refusal is checked, from Python and from
the command line."""

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import run_cli, wait_for
from engine import access, paths, plans, rundir, runs, users
from engine.data import DataError, save_upload
from engine.runs import queue
from engine.spec import RunSpec

PASSWORDS = {"teach": "teach-pass-1", "ana": "ana-pass-1", "ben": "ben-pass-1"}


@pytest.fixture
def workshop(monkeypatch, tunewise_home):
    monkeypatch.setenv("TUNEWISE_MODE", "workshop")
    users.setup("teach", PASSWORDS["teach"])
    for name in ("ana", "ben"):
        users.add(name, password=PASSWORDS[name], by=users.OWNER)
    return {name: users.find(name) for name in PASSWORDS}


def tiny_spec(model, steps, **kw):
    return RunSpec(
        **{
            "model_name_or_path": str(model),
            "max_steps": steps,
            "per_device_train_batch_size": 2,
            "save_steps": 3,
            "eval_steps": 10_000,
            **kw,
        }
    )


def shared_model(tiny_model) -> str:
    """The tiny model published in the class's shared models folder (a student may use only such paths)."""
    target = paths.shared_dir() / "models" / "tiny"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(tiny_model, target_is_directory=True)
    return str(target)


def fake_run(owner: str, state: str = "completed") -> tuple[int, Path]:
    """A registry row and run directory as a finished run leaves them (for refusals that need no training)."""
    run_dir = paths.user_area(owner) / "runs" / f"fake-{owner}-{time.time_ns()}"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    RunSpec().save(run_dir / "config.yaml")
    rundir.write_status(run_dir, state)
    run_id = (
        runs.connect()
        .execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, config, submitted_at, started_at, finished_at) "
            "VALUES (?, ?, 'sft', 'lora', ?, ?, ?, ?, ?)",
            (owner, str(run_dir), state, RunSpec().to_yaml(), time.time(), time.time(), time.time()),
        )
        .lastrowid
    )
    return run_id, run_dir


# ---------------------------------------------------------------- accounts and logins


def test_passwords_are_argon2_hashes_never_plain_text(workshop):
    db = sqlite3.connect(paths.home() / "runs.db")
    stored = dict(db.execute("SELECT name, pw_hash FROM users"))
    assert all(h.startswith("$argon2id$") for h in stored.values())
    raw = (paths.home() / "runs.db").read_bytes()
    assert not any(p.encode() in raw for p in PASSWORDS.values()), "no password in the database file"


def test_login_right_and_wrong_and_the_wait_after_five_failures(workshop):
    """Five wrong passwords for a name make that computer wait; the student at another computer still logs in (a
    classmate, or anyone, cannot lock them out), and so does the one at the first computer once reset."""
    user, token, must_change = users.login("ana", PASSWORDS["ana"])
    assert user == workshop["ana"] and not must_change
    assert users.session_user(token) == workshop["ana"]
    with pytest.raises(users.AuthError, match="do not match an account") as wrong:
        users.login("ana", "wrong-password")
    with pytest.raises(users.AuthError, match="do not match an account") as unknown:
        users.login("nobody", "whatever-pw")
    assert str(unknown.value) == str(wrong.value), "an unknown name reads exactly like a wrong password"
    for _ in range(4):
        with pytest.raises(users.AuthError):
            users.login("ana", "wrong-password")
    with pytest.raises(users.AuthError, match="this computer must wait 5 minutes"):
        users.login("ana", PASSWORDS["ana"])  # even the right password, from this computer
    assert users.login("ana", PASSWORDS["ana"], client="10.0.0.7")[0] == workshop["ana"]  # from hers
    users.reset("ana", by=workshop["teach"])  # the instructor's way out of a wait


def test_one_computer_guessing_across_the_roster_waits_but_locks_nobody_out(workshop, monkeypatch):
    """A computer that fails 50 times in five minutes, whatever the names (an unknown name counts too), then waits
    after a single failure for a name, and its further guesses cost the server no argon2 hash (64 MiB each). A
    student at that computer (a class behind one address) who has not failed still logs in, and so does the class
    at other computers."""
    names = ["ana", "ben", "nobody", "teach"]
    for i in range(users.MAX_FAILED_CLIENT):  # ana is never guessed from 10.0.0.66
        with pytest.raises(users.AuthError):
            users.login(names[i % 4] if i % 4 != 0 else f"x{i}", "not-the-password", client="10.0.0.66")
    hashed = []
    verify = users._verify
    monkeypatch.setattr(users, "_verify", lambda *a: hashed.append(1) or verify(*a))
    with pytest.raises(users.AuthError, match="do not match"):
        users.login("ben", PASSWORDS["ben"], client="10.0.0.66")
    assert hashed == [], "a waiting computer's guess is refused before any hash"
    assert users.login("ana", PASSWORDS["ana"], client="10.0.0.66")[0] == workshop["ana"]
    assert users.login("ben", PASSWORDS["ben"], client="10.0.0.8")[0] == workshop["ben"]
    runs.connect().execute("UPDATE login_failures SET at = at - ?", (users.LOCK_S + 1,))
    assert users.login("ben", PASSWORDS["ben"], client="10.0.0.66")[0] == workshop["ben"]  # five minutes later


def test_guessing_a_name_from_many_computers_does_not_lock_its_owner_out(workshop):
    """Fifty failures for the instructor's name from ten computers (five each, the most one computer gets) make
    every computer that failed wait; the instructor at a computer that did not still logs in."""
    for guesser in range(users.MAX_FAILED_NAME // users.MAX_FAILED):
        for _ in range(users.MAX_FAILED):
            with pytest.raises(users.AuthError):
                users.login("teach", "not-the-password", client=f"10.1.0.{guesser}")
    with pytest.raises(users.AuthError):
        users.login("teach", PASSWORDS["teach"], client="10.1.0.0")
    assert users.login("teach", PASSWORDS["teach"], client="10.0.0.99")[0] == workshop["teach"]


def test_guesses_sent_in_parallel_still_lock_the_name(workshop):
    from concurrent.futures import ThreadPoolExecutor

    def guess(i):
        try:
            users.login("ben", f"guess-number-{i}")
        except users.AuthError:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(guess, range(16)))
    with pytest.raises(users.AuthError):
        users.login("ben", PASSWORDS["ben"])
    counted = runs.connect().execute("SELECT COUNT(*) FROM login_failures WHERE name='ben'").fetchone()[0]
    assert counted == users.MAX_FAILED, "no guess slipped past the count, and none counted once refused"


def test_sessions_end_on_logout_expiry_and_reset(workshop):
    _, token, _ = users.login("ben", PASSWORDS["ben"])
    users.logout(token)
    with pytest.raises(users.AuthError, match="Your login has ended"):
        users.session_user(token)
    _, token, _ = users.login("ben", PASSWORDS["ben"])
    runs.connect().execute("UPDATE sessions SET expires_at=?", (time.time() - 1,))
    with pytest.raises(users.AuthError, match="Your login has ended"):
        users.session_user(token)
    _, token, _ = users.login("ben", PASSWORDS["ben"])
    one_time = users.reset("ben", by=workshop["teach"])
    with pytest.raises(users.AuthError):
        users.session_user(token)
    with pytest.raises(users.AuthError):
        users.login("ben", PASSWORDS["ben"])  # the old password no longer works
    user, _, must_change = users.login("ben", one_time)
    assert must_change, "a one-time password must be replaced at the first login"
    with pytest.raises(users.AuthError, match="current password is not right"):
        users.set_password(user, "not-it-at-all", "brand-new-pw")
    _, elsewhere, _ = users.login("ben", one_time, client="10.0.0.9")  # someone else who read the sheet
    _, here, _ = users.login("ben", one_time)
    users.set_password(user, one_time, "brand-new-pw", keep_token=here)
    assert users.session_user(here) == user
    with pytest.raises(users.AuthError, match="Your login has ended"):
        users.session_user(elsewhere)  # choosing a password ends every other login of the account
    assert not users.login("ben", "brand-new-pw")[2]


@pytest.mark.parametrize(
    "password, why",
    [
        ("short-1", "at least 8"),
        ("password", "first ones anyone"),
        ("Password123", "first ones anyone"),
        ("aaaaaaaaaa", "first ones anyone"),
        ("BEN-ben-1", "more than the account's name"),
        ("ben12345", "more than the account's name"),
        ("P@ssw0rd!", "first ones anyone"),
        ("Welcome2024", "first ones anyone"),
        ("123456789a", "digits"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(workshop, password, why):
    with pytest.raises(users.AuthError, match=why):
        users.set_password(workshop["ben"], PASSWORDS["ben"], password)
    with pytest.raises(users.AuthError, match=why):
        users.add("ben2", password=password.replace("ben", "ben2").replace("BEN", "BEN2"), by=workshop["teach"])


def test_the_roster_quotas_and_class_plan_refuse_a_student_in_the_engine(workshop):
    """The Class page is the instructor's, and so are the engine calls behind it: a student calling them is
    refused there, whatever page or script calls."""
    ana = workshop["ana"]
    for call in (
        lambda: users.add("mallory", by=ana),
        lambda: users.reset("ben", by=ana),
        lambda: users.remove("ben", by=ana),
        lambda: plans.publish_class_plan({"spec": {}, "goals": []}, by=ana),
        lambda: queue.set_quota(None, max_steps=100_000, by=ana),
        lambda: queue.set_quota("ana", max_waiting=50, by=ana),
    ):
        with pytest.raises(users.AuthError, match="Only an instructor can"):
            call()
    assert users.find("ben") and plans.class_plan() is None and queue.class_quota().max_steps is None
    users.add("mallory", by=workshop["teach"])


def test_a_stolen_database_gives_no_session(workshop):
    """The registry keeps an HMAC of each session token, keyed by the server's secret file."""
    _, token, _ = users.login("ana", PASSWORDS["ana"])
    stored = [r[0] for r in sqlite3.connect(paths.home() / "runs.db").execute("SELECT token_hash FROM sessions")]
    assert token not in stored
    with pytest.raises(users.AuthError):
        users.session_user(stored[0])
    assert oct((paths.home() / "secret").stat().st_mode & 0o777) == "0o600"


def test_account_names_are_checked_and_the_last_instructor_stays(workshop):
    with pytest.raises(users.AuthError, match="cannot be an account name"):
        users.add("../etc", by=users.OWNER)
    assert users.add("Ana Lopez", by=users.OWNER)[0].name == "ana-lopez"
    with pytest.raises(users.AuthError, match="already an account"):
        users.add("ana", by=users.OWNER)
    with pytest.raises(users.AuthError, match="last instructor"):
        users.remove("teach", by=users.OWNER)
    fake_run("ana")
    users.remove("ana", by=users.OWNER)
    with pytest.raises(users.AuthError, match="still has runs or files here"):
        users.add("ana", by=users.OWNER)  # a new 'ana' would inherit the old one's runs


def test_cli_adds_a_class_from_a_list_and_prints_one_time_passwords(workshop, tmp_path):
    roster = tmp_path / "class.txt"
    roster.write_text("chloe\ndev\n# a comment\n\neve\n")
    out = run_cli("engine.users", "add", "--file", str(roster), "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert [m["name"] for m in made] == ["chloe", "dev", "eve"] and all(len(m["password"]) == 19 for m in made)
    assert users.login("dev", made[1]["password"])[2], "the printed password logs in, once"
    out = run_cli("engine.users", "add", "frank", "--password-stdin", input_text="short\n")
    assert out.returncode == 2 and "at least 8 characters" in out.stderr
    listed = run_cli("engine.users", "list", "--json")
    assert {"teach", "ana", "ben", "chloe"} <= {u["name"] for u in json.loads(listed.stdout)}


# ---------------------------------------------------------------- isolation of runs


def test_a_student_sees_and_acts_on_their_own_runs_only(workshop):
    ana, ben, teach = workshop["ana"], workshop["ben"], workshop["teach"]
    run_id, run_dir = fake_run("ana")
    assert [r["id"] for r in runs.list_runs(ana)] == [run_id]
    assert runs.list_runs(ben) == []
    for act in (runs.get, runs.stop, runs.resume, runs.remove):
        with pytest.raises(runs.RunError, match=f"There is no run {run_id} of yours"):
            act(run_id, ben)
    assert run_dir.is_dir(), "nothing of ana's was touched"
    assert [r["id"] for r in runs.list_runs(teach)] == [run_id], "the instructor sees every run"
    runs.remove(run_id, teach)
    assert not run_dir.exists()


def test_cli_refuses_a_student_acting_on_another_students_run(workshop):
    run_id, run_dir = fake_run("ana")
    for command in (
        ["engine.runs", "stop", str(run_id)],
        ["engine.runs", "remove", str(run_id)],
        ["engine.runs", "resume", str(run_id)],
        ["engine.runs", "show", str(run_id)],
        ["engine.generate", "--run", str(run_dir), "--prompt", "hi"],
        ["engine.evaluate", str(run_dir)],
        ["engine.export", str(run_dir), "--out", str(paths.user_area("ben") / "stolen")],
    ):
        out = run_cli(*command, "--as", "ben")
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "error: " in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert run_dir.is_dir() and runs.get(run_id, workshop["ana"])["state"] == "completed"
    assert not (paths.user_area("ben") / "stolen").exists()
    out = run_cli("engine.runs", "list", "--as", "ben", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    out = run_cli("engine.runs", "list", "--as", "nobody")
    assert out.returncode == 2 and "There is no account 'nobody'" in out.stderr


# ---------------------------------------------------------------- paths


def test_paths_are_confined_to_the_users_area_the_bundled_sets_and_shared_folders(workshop):
    ana, ben = workshop["ana"], workshop["ben"]
    upload = save_upload("../../tasks.jsonl", b'{"prompt": "a", "completion": "b"}\n', "ana")
    assert upload.parent == paths.user_area("ana") / "uploads", "path parts of an upload's name are dropped"
    assert access.confine(upload, ana) == upload
    assert access.confine(f"uploads/{upload.name}", ana) == upload, "relative paths start in the user's area"
    refused = [
        str(upload),
        f"../ana/uploads/{upload.name}",
        "/etc/passwd",
        str(paths.home() / "runs.db"),
        str(paths.home() / "secret"),
    ]
    link = paths.user_area("ben") / "innocent.jsonl"
    link.symlink_to(upload)
    refused.append(str(link))
    for typed in refused:
        with pytest.raises(access.AccessError, match="outside your own folder"):
            access.confine(typed, ben, "data file")
    with pytest.raises(access.AccessError) as refusal:  # the advice fits what was typed, wherever it was typed
        access.confine(str(upload), ben, "data file")
    assert "the bundled sets or the class's shared folder (" in str(refusal.value)
    assert "Upload the file instead" in str(refusal.value) and "on the Data page" not in str(refusal.value)
    _, other = fake_run("ana")
    with pytest.raises(access.AccessError) as refusal:
        access.check_run_dir(str(other), ben)
    assert str(refusal.value).endswith("Pick one of your own runs from the list instead."), refusal.value
    from engine.data import bundled

    assert access.confine(bundled("sft"), ben) == bundled("sft").resolve()
    shared = paths.shared_dir() / "data" / "class.jsonl"
    shared.write_text("{}\n")
    assert access.confine(shared, ben) == shared
    assert access.confine("/etc/passwd", users.OWNER) == Path("/etc/passwd"), "personal mode is not confined"


def test_cli_data_check_follows_the_same_rule(workshop):
    upload = save_upload("tasks.jsonl", b'{"prompt": "a", "completion": "b"}\n', "ana")
    out = run_cli("engine.data", "check", str(upload), "--stage", "sft", "--as", "ben")
    assert out.returncode == 2 and "outside your own folder" in out.stderr
    out = run_cli("engine.data", "check", str(upload), "--stage", "sft", "--as", "ana", "--json")
    assert out.returncode in (0, 1) and json.loads(out.stdout)["rows"] >= 0


def test_a_run_naming_paths_outside_the_users_area_is_refused_before_it_is_registered(workshop, tiny_model):
    ana = workshop["ana"]
    _, other = fake_run("ben")
    for field, value in (
        ("dataset_name", "/etc/hostname"),
        ("model_name_or_path", str(tiny_model)),
        ("init_from", str(other)),
        ("output_dir", str(paths.user_area("ben") / "mine")),
    ):
        with pytest.raises(runs.RunError, match="outside your own folder"):
            runs.submit(RunSpec(**{field: value, "max_steps": 2}), ana)
    with pytest.raises(runs.RunError, match="outside"):
        runs.submit(RunSpec(max_steps=2, extra={"reward_model": str(other)}), ana)
    with pytest.raises(runs.RunError, match="output directory must be a new folder inside"):
        runs.submit(RunSpec(max_steps=2, output_dir=str(paths.user_area("ana"))), ana)
    for extra in ({"output_dir": str(other)}, {"max_steps": 10**6}, {"push_to_hub": True}):
        with pytest.raises(runs.RunError, match="not allowed in a workshop"):
            runs.submit(RunSpec(max_steps=2, extra=extra), ana)
    for extra in ({"num_generations": 10**6}, {"max_completion_length": 10**9}, {"num_generations": "many"}):
        with pytest.raises(runs.RunError, match="outside what a workshop run may ask for"):
            runs.submit(RunSpec(stage="rl", max_steps=2, extra=extra), ana)
    assert runs.list_runs(workshop["teach"])[-1]["owner"] == "ben", "nothing of ana's was registered"


def test_oversized_uploads_get_a_sentence(workshop, monkeypatch):
    monkeypatch.setenv("TUNEWISE_MAX_UPLOAD_MB", "1")
    with pytest.raises(DataError, match="over this server's upload limit of 1 MB"):
        save_upload("big.jsonl", b"x" * (2 * 2**20), "ana")


# ---------------------------------------------------------------- the fair queue and quotas


def test_fair_order_takes_users_in_turn():
    queued = [
        {"id": i, "owner": o, "submitted_at": i} for i, o in enumerate(["ana"] * 10 + ["ben", "chloe", "ben"], start=1)
    ]
    order = queue.fair_order(queued, started={"ana": 1})
    owners = [next(q["owner"] for q in queued if q["id"] == i) for i in order]
    assert owners[:2] == ["ben", "chloe"], "ana already trained once: the others' first runs come first"
    assert owners[2:5] == ["ana", "ben", "ana"] and owners[5:] == ["ana"] * 8
    assert [i for i in order if i <= 10] == list(range(1, 11)), "each user's own runs stay in their order"


def test_every_students_first_run_starts_before_anyones_second(workshop, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNEWISE_SLOTS", "1")
    model = shared_model(tiny_model)
    ids = [runs.submit(tiny_spec(model, 2), workshop["ana"]) for _ in range(2)]
    ids.append(runs.submit(tiny_spec(model, 2), workshop["ben"]))
    for run_id in ids:
        ended = wait_for(
            lambda run_id=run_id: (r := runs.get(run_id, workshop["teach"]))["state"] in rundir.FINISHED and r
        )
        assert ended["state"] == "completed", ended["error"]
    started = sorted(runs.list_runs(workshop["teach"]), key=lambda r: r["started_at"])
    assert [r["owner"] for r in started] == ["ana", "ben", "ana"]  # first come, first served: ana, ana, ben
    assert Path(started[0]["run_dir"]).is_relative_to(paths.user_area("ana") / "runs")


def test_quotas_refuse_with_a_sentence(workshop, tiny_model):
    ana = workshop["ana"]
    queue.set_quota(None, max_waiting=1, max_steps=50, max_gpus=1, by=users.OWNER)
    with pytest.raises(runs.RunError, match="at most 50 steps per run"):
        runs.submit(RunSpec(max_steps=500), ana)
    with pytest.raises(runs.RunError, match="at most 50 steps"):
        runs.submit(RunSpec(max_steps=-1), ana)
    with pytest.raises(runs.RunError, match="1 GPU\\(s\\) per run"):
        queue.admit(RunSpec(max_steps=5, num_processes=2), "ana", runs.connect())
    db = runs.connect()
    db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at) VALUES "
        "('ana', 'x', 'sft', 'lora', 'queued', 1)"
    )
    with pytest.raises(runs.RunError, match="already have 1 run\\(s\\) waiting"):
        queue.admit(RunSpec(max_steps=5), "ana", db)
    queue.admit(RunSpec(max_steps=5), "teach", db)  # instructors have no quotas
    queue.set_quota("ana", max_waiting=5, by=users.OWNER)
    queue.admit(RunSpec(max_steps=5), "ana", db)  # a student's own limit overrides the class's


def test_a_user_at_their_running_limit_is_passed_over_not_blocking(workshop, monkeypatch):
    monkeypatch.setenv("TUNEWISE_SLOTS", "2")
    queue.set_quota(None, max_running=1, by=users.OWNER)
    db = runs.connect()
    rows = [("ana", "running", "[0]", 1), ("ana", "queued", None, 2), ("ben", "queued", None, 3)]
    ids = [
        db.execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, slots, submitted_at, started_at) "
            "VALUES (?, 'x', 'sft', 'lora', ?, ?, ?, ?)",
            (o, s, sl, t, t if s == "running" else None),
        ).lastrowid
        for o, s, sl, t in rows
    ]
    assert queue.claim(db, ids[1]) is None, "ana already trains one run, her limit"
    assert queue.claim(db, ids[2]) == [1], "ben's run takes the free slot"


def test_the_instructors_time_limit_stops_a_run_with_its_checkpoint(workshop, tiny_model):
    queue.set_quota(None, max_minutes=0.25, by=users.OWNER)
    run_id = runs.submit(tiny_spec(shared_model(tiny_model), 100_000, save_steps=2), workshop["ana"])
    ended = wait_for(lambda: (r := runs.get(run_id, workshop["ana"]))["state"] in rundir.FINISHED and r, timeout=120)
    assert ended["state"] == "stopped" and "Stopped after 0.25 minutes" in ended["error"]
    assert ended["finished_at"] - ended["started_at"] < 15 + 10
    assert not runs.alive(ended["pid"])


def test_waiting_runs_have_a_position_and_an_expected_start(workshop, monkeypatch):
    monkeypatch.setenv("TUNEWISE_SLOTS", "1")
    db = runs.connect()
    now = time.time()
    db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, slots, submitted_at, started_at, estimated_s, "
        "supervisor_pid, boot_id) VALUES ('ana', 'x', 'sft', 'lora', 'running', '[0]', ?, ?, 100, ?, ?)",
        (now - 10, now - 10, os.getpid(), runs.boot_id()),
    )
    for owner, t in (("ana", 1), ("ben", 2)):
        db.execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, estimated_s, supervisor_pid, "
            "boot_id) VALUES (?, 'x', 'sft', 'lora', 'queued', ?, 60, ?, ?)",
            (owner, now + t, os.getpid(), runs.boot_id()),
        )
    ben = runs.list_runs(workshop["ben"])
    assert len(ben) == 1 and ben[0]["position"] == 1, "ben's first run goes before ana's second"
    assert 80 < ben[0]["expected_start"] - now < 100
    ana_waiting = [r for r in runs.list_runs(workshop["ana"]) if r["state"] == "queued"][0]
    assert ana_waiting["position"] == 2 and 140 < ana_waiting["expected_start"] - now < 160


# ---------------------------------------------------------------- plans


def test_plans_are_kept_per_user_and_the_class_plan_is_a_starting_point(workshop):
    plans.save("ana", {"spec": {"stage": "dpo"}, "goals": ["safety"], "hardware": {"preset": "rtx-4090"}})
    assert plans.spec_of(plans.load("ana")).stage == "dpo"
    assert plans.load("ben") is None
    plans.publish_class_plan(
        {"spec": {"method": "qlora"}, "goals": ["capability"], "hardware": {}}, by=workshop["teach"]
    )
    assert plans.spec_of(plans.class_plan()).method == "qlora"
    plans.save("ben", {"spec": {"no_such_setting": 1}, "goals": []})
    assert plans.spec_of(plans.load("ben")) == RunSpec(), "a plan from older code falls back, not fails"
