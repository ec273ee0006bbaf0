"""The two modes as a server admin starts them: personal listens on 127.0.0.1 only, workshop on every interface and
only once it is set up; the login page in AppTest."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import free_port, run_cli

REPO = Path(__file__).resolve().parent.parent


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on this port, read from the kernel (/proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def serve(*args, env=None):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.serve", "--port", str(port), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    return port, proc


def wait_listening(port, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if listening_addresses(port):
            return listening_addresses(port)
        time.sleep(0.3)
    raise AssertionError(f"not listening: {proc.poll()} {proc.stderr.read() if proc.poll() is not None else ''}")


def test_personal_mode_listens_on_127_0_0_1_only():
    port, proc = serve(env={"TUNEWISE_MODE": ""})
    try:
        assert wait_listening(port, proc) == {"0100007F"}, "127.0.0.1, and no other address"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def websocket_answers(port: int, host: str) -> bool:
    """Whether the app's WebSocket opens for a browser that reached this port under the name `host` (what a page on
    another site gets after DNS rebinding points its own name at 127.0.0.1)."""
    import asyncio

    import websockets

    async def attempt():
        uri, origin = f"ws://{host}:{port}/_stcore/stream", f"http://{host}:{port}"
        try:
            async with websockets.connect(
                uri, host="127.0.0.1", port=port, origin=origin, subprotocols=["streamlit"], open_timeout=20
            ):
                return True
        except websockets.InvalidStatus:
            return False

    return asyncio.run(attempt())


def test_personal_mode_answers_only_this_computers_names():
    """DNS rebinding: a web page at attacker.example whose name resolves to 127.0.0.1 must not drive the app (in
    personal mode it reads any file its user can)."""
    port, proc = serve(env={"TUNEWISE_MODE": ""})
    try:
        wait_listening(port, proc)
        assert websocket_answers(port, "localhost") and websocket_answers(port, "127.0.0.1")
        assert not websocket_answers(port, "attacker.example")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_a_bare_streamlit_run_answers_only_this_computers_names_too():
    """.streamlit/config.toml keeps even `streamlit run app.py` (no engine.serve) closed to DNS rebinding."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
        cwd=REPO,
        env={**os.environ, "TUNEWISE_MODE": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    try:
        wait_listening(port, proc)
        assert websocket_answers(port, "localhost") and not websocket_answers(port, "attacker.example")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_personal_mode_on_another_address_warns_that_it_has_no_login():
    port, proc = serve("--address", "0.0.0.0", env={"TUNEWISE_MODE": ""})
    try:
        wait_listening(port, proc)
    finally:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
    assert "personal mode has no login" in err and "--workshop" in err


def test_workshop_mode_refuses_to_start_until_set_up_then_listens_everywhere(tunewise_home):
    port, proc = serve("--workshop")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Workshop mode is not set up" in err and "engine.users setup" in err
    assert not listening_addresses(port)
    done = run_cli("engine.users", "setup", "--instructor", "teach", "--password-stdin", input_text="teach-pass-1\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "Start it with `make workshop`.", "its own line, after the account's"
    port, proc = serve("--workshop")
    try:
        addresses = wait_listening(port, proc)
        assert addresses & {"00000000", "00000000000000000000000000000000"}, addresses
        assert websocket_answers(port, "gpu1.lab.example"), "students reach it under the server's names"
        # the login counts failures per browser address: the connection's own, never an X-Forwarded-For header
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in item
        )
        assert environ["FORWARDED_ALLOW_IPS"] == "", "uvicorn trusts no proxy's header"
        assert oct(tunewise_home.stat().st_mode & 0o777) == "0o700", "nobody else on the server reads the class's files"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_setup_prints_the_one_time_password_and_how_to_start_on_separate_lines(tunewise_home, capsys):
    from engine import users

    assert users.main(["setup", "--instructor", "teach"]) == 0
    account, start = capsys.readouterr().out.splitlines()
    password = account.rsplit("one-time password: ", 1)[1]
    assert users.login("teach", password)[2] and start == "Start it with `make workshop`."


@pytest.fixture
def workshop_app(monkeypatch, tunewise_home):
    from engine import users

    monkeypatch.setenv("TUNEWISE_MODE", "workshop")
    users.setup("teach", "teach-pass-1")
    users.add("ana", password="ana-pass-12", by=users.OWNER)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    return at


def log_in(at, name, password):
    inputs = {w.label: w for w in at.text_input}
    inputs["Name"].input(name)
    inputs["Password"].input(password)
    next(b for b in at.button if b.label == "Log in").click()
    at.run()


def test_workshop_pages_stay_behind_the_login(workshop_app):
    at = workshop_app
    assert not at.exception
    assert at.title[0].value == "🎛️ Tunewise workshop"
    assert not any("Goal" in t.value for t in at.title), "no page before the login"
    inputs = {w.label: w for w in at.text_input}  # what password managers read to fill a login form
    assert (inputs["Name"].proto.autocomplete, inputs["Password"].proto.autocomplete) == (
        "username",
        "current-password",
    )
    log_in(at, "", "")
    assert [e.value for e in at.error] == ["Type your name and password."], "not a failed login"
    log_in(at, "ana", "wrong-password")
    assert any("do not match an account" in e.value for e in at.error)
    log_in(at, "ana", "ana-pass-12")
    assert not at.exception
    assert at.title[0].value == "1 · Goal"
    assert any("Logged in as **ana** (student)" in m.value for m in at.sidebar.markdown)


def test_a_one_time_password_must_be_replaced_first(workshop_app):
    from engine import users

    _, one_time = users.add("ben", by=users.OWNER)
    at = workshop_app
    log_in(at, "ben", one_time)
    assert at.title[0].value == "Welcome, ben"
    inputs = {w.label: w for w in at.text_input}
    assert "One-time password" not in inputs, "not asked again right after it was typed"
    shown = [str(e.value) for kind in ("markdown", "caption", "info", "error", "text") for e in at.get(kind)]
    assert not any(one_time in text for text in shown), "kept server-side, never on the page"
    inputs["New password"].input("bens-own-pw")
    inputs["New password again"].input("bens-own-pw")
    assert inputs["New password"].proto.autocomplete == "new-password"
    next(b for b in at.button if b.label == "Save my password").click()
    at.run()
    assert at.title[0].value == "1 · Goal"
    assert any("Password saved" in t.value for t in at.toast)
    assert "one_time_password" not in at.session_state
    with pytest.raises(users.AuthError):  # set_password checked the one-time password and replaced it
        users.login("ben", one_time)
    users.login("ben", "bens-own-pw")


def test_after_a_reload_the_choose_password_form_asks_for_the_one_time_password(workshop_app):
    from engine import users

    _, one_time = users.add("ben", by=users.OWNER)
    at = workshop_app
    log_in(at, "ben", one_time)
    del at.session_state["one_time_password"]  # a new tab, logged in by its cookie: nothing typed here
    at.run()
    inputs = {w.label: w for w in at.text_input}
    inputs["One-time password"].input("not-the-one-time")
    inputs["New password"].input("bens-own-pw")
    inputs["New password again"].input("bens-own-pw")
    next(b for b in at.button if b.label == "Save my password").click()
    at.run()
    assert any("current password is not right" in e.value for e in at.error), "still verified"


def finished_run_of(owner: str, state: str = "completed", slots: str | None = None) -> int:
    """A registry row and run directory as a run of this owner leaves them (a running one: this process is its
    supervisor, so the registry leaves it alone)."""
    from engine import paths, rundir, runs
    from engine.runs.registry import boot_id
    from engine.spec import RunSpec

    run_dir = paths.user_area(owner) / "runs" / f"0001-sft-lora-{time.time_ns()}"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    RunSpec().save(run_dir / "config.yaml")
    rundir.write_status(run_dir, state)
    now = time.time()
    return (
        runs.connect()
        .execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, config, slots, supervisor_pid, boot_id, "
            "submitted_at, started_at, finished_at) VALUES (?, ?, 'sft', 'lora', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                owner,
                str(run_dir),
                state,
                RunSpec().to_yaml(),
                slots,
                os.getpid(),
                boot_id(),
                now,
                now,
                None if state == "running" else now,
            ),
        )
        .lastrowid
    )


def test_the_class_page_roster_shows_what_its_actions_just_did(workshop_app, monkeypatch):
    from engine import runs

    monkeypatch.setattr(runs, "gpu_count", lambda: 0)  # a server without an NVIDIA GPU
    finished_run_of("ana", "running", slots="[0]")
    at = workshop_app
    log_in(at, "teach", "teach-pass-1")
    at.switch_page("app_pages/instructor.py").run()
    assert not at.exception
    assert list(at.dataframe[0].value["GPU"]) == ["CPU"], "no 'GPU 0' on a server without one"
    at.text_area[0].input("ben")
    next(b for b in at.button if b.label == "Create accounts").click()
    at.run()
    assert not at.exception
    roster = at.dataframe[1].value
    assert "ben" in list(roster["name"]), "the new student is in the roster at once"
    made = at.dataframe[2].value
    assert list(made["name"]) == ["ben"] and len(made["one-time password"].iloc[0]) >= 8, "shown once"
    next(s for s in at.selectbox if s.label == "Account").select("ana").run()
    next(b for b in at.button if b.label == "New one-time password").click()
    at.run()
    roster = at.dataframe[1].value
    assert roster.set_index("name")["password"]["ana"] == "one-time (not changed yet)"
    assert any("New one-time password for **ana**" in i.value for i in at.info)
    at.run()
    assert not any("New one-time password" in i.value for i in at.info), "the password is shown once"


def test_the_class_page_says_there_are_no_runs_yet_instead_of_an_empty_grid(workshop_app):
    at = workshop_app
    log_in(at, "teach", "teach-pass-1")
    at.switch_page("app_pages/instructor.py").run()
    assert not at.exception
    assert any(c.value.startswith("No runs yet") for c in at.caption)
    assert "name" in at.dataframe[0].value.columns, "the first table is the roster: no empty runs grid above it"


def test_a_student_opening_the_class_page_gets_a_sentence_and_the_instructor_page_words(workshop_app):
    at = workshop_app
    log_in(at, "ana", "ana-pass-12")
    at.switch_page("app_pages/instructor.py").run()
    assert not at.exception
    assert [i.value for i in at.info][0].startswith("The Class page is the instructor's")
    assert not at.dataframe and not at.text_area, "nothing of the class shown"
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    log_in(at, "teach", "teach-pass-1")
    at.switch_page("app_pages/instructor.py").run()
    at.text_area[0].input("Ana")
    next(b for b in at.button if b.label == "Create accounts").click()
    at.run()
    error = at.error[0].value
    assert "already an account 'ana'" in error and "**New one-time password**" in error and "`reset" not in error


def test_the_instructors_try_page_says_whose_run_it_is(workshop_app):
    finished_run_of("ana")
    at = workshop_app
    log_in(at, "teach", "teach-pass-1")
    at.switch_page("app_pages/try_export.py").run()
    assert not at.exception
    picker = next(s for s in at.selectbox if s.label == "Finished run")
    assert picker.options[0].startswith("run 1 of ana · "), picker.options


def test_a_student_sees_the_class_limits_on_the_train_page_before_start(workshop_app):
    from engine import users
    from engine.runs import queue

    queue.set_quota(None, max_steps=3, by=users.OWNER)
    at = workshop_app
    log_in(at, "ana", "ana-pass-12")
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert any("this plan trains whole epochs" in w.value for w in at.warning), "the default plan: epochs"
    next(w for w in at.number_input if w.label.startswith("Max steps")).set_value(100).run()
    warnings = [w.value for w in at.warning]
    assert any("allows at most 3 steps per run; this plan asks for 100: set Max steps" in w for w in warnings), warnings
    assert any("Your earlier runs are on the Runs page" in i.value for i in at.info), "a student sees only theirs"
    next(w for w in at.number_input if w.label.startswith("Max steps")).set_value(3).run()
    assert not any("steps per run" in w.value for w in at.warning), "within the limit: nothing to say"
