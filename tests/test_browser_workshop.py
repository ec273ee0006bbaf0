"""Workshop mode in a real browser: an instructor and two students, each in their own browser context (own cookies),
on one server started the way an admin starts it (`python -m engine.serve --workshop`). Student A's run and upload
are invisible and untouchable for student B, through the pages and through direct engine calls; the instructor sees
and stops A's run; a reload keeps B logged in with the plan B built."""

import hashlib
import os
import re
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, pick_another_model, run_cli, start_app

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="`make test` installs chromium")
SHOTS = Path(os.environ.get("TUNEWISE_SHOTS", "/tmp"))  # TUNEWISE_SHOTS=docs refreshes the README's pictures
PASSWORDS = {"teach": "teach-pass-1", "ana": "ana-pass-12", "ben": "ben-pass-12"}
DATA = b'{"prompt": "Create a task: A", "completion": "{\\"title\\": \\"A\\"}"}\n' * 20


@pytest.fixture
def workshop_server(tunewise_home, tiny_model):
    env = {**os.environ, "TUNEWISE_HOME": str(tunewise_home), "TUNEWISE_MODE": "workshop", "TUNEWISE_SLOTS": "1"}
    assert (
        run_cli(
            "engine.users",
            "setup",
            "--instructor",
            "teach",
            "--password-stdin",
            env=env,
            input_text=PASSWORDS["teach"] + "\n",
        ).returncode
        == 0
    )
    for name in ("ana", "ben"):
        assert (
            run_cli(
                "engine.users", "add", name, "--password-stdin", env=env, input_text=PASSWORDS[name] + "\n"
            ).returncode
            == 0
        )
    shared = tunewise_home / "shared" / "models" / "tiny"
    shared.symlink_to(tiny_model, target_is_directory=True)  # the instructor publishes a model to the class
    url, proc = start_app("--workshop", env=env)
    yield {"url": url, "env": env, "home": tunewise_home, "model": str(shared)}
    os.killpg(proc.pid, 9)
    proc.wait()


def log_in(browser, url, name):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto(url)
    tab.get_by_role("textbox", name="Name").fill(name)
    tab.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    tab.get_by_role("button", name="Log in").click()
    tab.get_by_text(f"Logged in as {name}").wait_for()
    return tab


def go(tab, link):
    tab.get_by_role("link", name=link).click()


def start_run(tab, model, steps, another=False):
    go(tab, "5 · Train")
    if another:  # the run started from this tab comes first; the form folds away below it
        tab.get_by_text("Start another run").click()
    pick_another_model(tab, model)
    tab.get_by_role("spinbutton", name="Max steps (optimizer steps; -1 = use Epochs)").fill(str(steps))
    tab.get_by_text("More settings").click()
    tab.get_by_role("spinbutton", name="Batch size per device").fill("2")
    tab.get_by_role("button", name="Start training").click()
    tab.get_by_text("python -m engine.train --config").first.wait_for(timeout=300_000)


def test_two_students_and_an_instructor(workshop_server):
    from playwright.sync_api import sync_playwright

    url, env, home = workshop_server["url"], workshop_server["env"], workshop_server["home"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ana = log_in(browser, url, "ana")
        go(ana, "4 · Data")
        ana.get_by_text("Upload a file").click()
        ana.locator("input[type=file]").set_input_files(
            {"name": "../../secret-tasks.jsonl", "mimeType": "application/json", "buffer": DATA}
        )
        ana.get_by_text("Usable rows").wait_for()
        upload = home / "users" / "ana" / "uploads" / f"{hashlib.sha256(DATA).hexdigest()[:10]}_secret-tasks.jsonl"
        assert upload.is_file(), "the upload landed in ana's own folder whatever its name said"
        start_run(ana, workshop_server["model"], 3)
        ana.get_by_text("completed").first.wait_for(timeout=300_000)
        done_dir = next((home / "users" / "ana" / "runs").iterdir())
        start_run(ana, workshop_server["model"], 100_000, another=True)  # a long one, for the instructor to stop
        ana.get_by_text(re.compile(r"step [1-9]\d* / 100000")).first.wait_for(timeout=300_000)
        ana.screenshot(path=str(SHOTS / "workshop-student-train.png"))

        ben = log_in(browser, url, "ben")
        go(ben, "6 · Runs")
        ben.get_by_text("No runs yet").wait_for()
        go(ben, "7 · Try & Export")
        ben.get_by_text("No finished run yet").wait_for()
        ben.get_by_text("A run from somewhere else (a folder on this server)").click()
        ben.get_by_role("textbox", name="Run folder").fill(str(done_dir))
        ben.keyboard.press("Enter")
        ben.get_by_text("is outside your own folder").wait_for()
        go(ben, "4 · Data")
        ben.get_by_text("A file on this machine").click()
        ben.get_by_role("textbox", name="Path of a data file").fill(str(upload))
        ben.keyboard.press("Enter")
        ben.get_by_text("is outside your own folder").wait_for()
        ben.screenshot(path=str(SHOTS / "workshop-refused-path.png"))
        assert not ben.get_by_text("Usable rows").is_visible(), "nothing of ana's file was shown"

        # Direct engine calls as ben are refused too, and change nothing.
        listed = run_cli("engine.runs", "list", "--as", "teach", "--json", env=env)
        run_ids = [r["id"] for r in __import__("json").loads(listed.stdout)]
        for command in [["engine.runs", verb, str(i)] for verb in ("stop", "remove", "resume") for i in run_ids] + [
            ["engine.generate", "--run", str(done_dir), "--prompt", "hi"],
            ["engine.export", str(done_dir), "--out", str(home / "users" / "ben" / "copy")],
        ]:
            out = run_cli(*command, "--as", "ben", env=env)
            assert out.returncode == 2 and "error: " in out.stderr, (command, out.stderr)

        # ben builds a plan, reloads: still logged in, same plan.
        go(ben, "1 · Goal")
        ben.get_by_text("Safer, more aligned outputs").click()
        ben.get_by_role("button", name="Use this plan").click()
        ben.get_by_text("Saved: your first run will be").wait_for()
        ben.reload()
        ben.get_by_text("Logged in as ben").wait_for()
        ben.get_by_text("What should the model learn?").wait_for()
        assert ben.get_by_text("Stage: DPO (preferences)").is_visible(), "the plan survived the reload"
        assert not ben.get_by_role("button", name="Log in").is_visible()

        teach = log_in(browser, url, "teach")
        go(teach, "6 · Runs")
        # the runs table lists ana's runs (a data grid: its cells are in the page for screen readers, drawn on a canvas)
        teach.get_by_role("gridcell", name="ana", exact=True, include_hidden=True).first.wait_for(state="attached")
        go(teach, "Class")
        teach.get_by_text("1 training").wait_for()
        teach.screenshot(path=str(SHOTS / "workshop-instructor.png"), full_page=True)
        teach.get_by_role("button", name="Stop it").click()
        teach.get_by_text("0 training").wait_for(timeout=30_000)
        states = {
            r["id"]: r["state"]
            for r in __import__("json").loads(run_cli("engine.runs", "list", "--as", "ana", "--json", env=env).stdout)
        }
        assert sorted(states.values()) == ["completed", "stopped"], states
        assert done_dir.is_dir()
        browser.close()
