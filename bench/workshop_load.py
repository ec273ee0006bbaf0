"""Workshop load: 30 students log in and each submits 2 short runs within a minute, one training slot.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/workshop_load.py --students 30 --runs-each 2

What it does, against a real workshop server (`python -m engine.serve --workshop`) and registry:
1. makes the accounts with the CLI (`engine.users add --password-stdin`), publishes a tiny 2-layer model in
   shared/models (3 steps a run: the figure is about the queue, not the training);
2. 30 processes start at one barrier; each logs in (engine.users.login: argon2 check, session token) and submits
   its runs as itself (engine.runs.submit, the call the Train page makes) - all within the minute;
3. while runs train, real Chromium contexts, each logged in as a student with its own cookie, load pages (a fresh
   navigation to the app's address, then Runs) and the time until the page's title is visible is recorded;
4. waits for every run, then checks: all registered, none lost, and the start order fair-share (every student's
   first run started before anyone's second).
Writes one JSON line to bench/results/workshop_load.jsonl.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from conftest import start_app  # noqa: E402  (one way to start the app, shared with the tests)


def student(args):
    index, model, runs_each, barrier = args
    from engine import runs, users
    from engine.spec import RunSpec

    barrier.wait()
    started = time.time()
    user, _, _ = users.login(f"student{index:02d}", f"class-pw-{index:02d}")
    ids = [
        runs.submit(
            RunSpec(
                model_name_or_path=model, max_steps=3, per_device_train_batch_size=2, eval_steps=1000, save_steps=1000
            ),
            user,
        )
        for _ in range(runs_each)
    ]
    return index, ids, time.time() - started


def page_loads(url: str, names: list[str], rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    times = {"reload": [], "runs_page": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        tabs = []
        for name in names:
            tab = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
            tab.set_default_timeout(60_000)
            tab.goto(url)
            tab.get_by_role("textbox", name="Name").fill(name)
            tab.get_by_role("textbox", name="Password").fill(f"class-pw-{name[-2:]}")
            tab.get_by_role("button", name="Log in").click()
            tab.get_by_text(f"Logged in as {name}").wait_for()
            tabs.append(tab)
        for _ in range(rounds):
            for tab in tabs:
                t0 = time.time()
                tab.goto(url)  # a reload: the cookie logs the student in again
                tab.get_by_text("What should the model learn?").wait_for()
                times["reload"].append(time.time() - t0)
                t0 = time.time()
                tab.get_by_role("link", name="6 · Runs").click()
                tab.get_by_role("heading", name="6 · Runs", exact=True).wait_for()
                times["runs_page"].append(time.time() - t0)
        browser.close()
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--runs-each", type=int, default=2)
    p.add_argument("--browsers", type=int, default=6, help="student browser contexts loading pages meanwhile")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="workshop-load-"))
    os.environ.update(TUNEWISE_HOME=str(home), TUNEWISE_SLOTS="1", HF_HUB_OFFLINE="1", TUNEWISE_MODE="workshop")
    from queue_load import make_tiny_model

    from engine import runs, users
    from engine.runs import queue

    model = home / "shared" / "models" / "tiny"
    users.setup("teach", "teach-password")
    queue.set_quota(None, max_waiting=a.runs_each, by=users.OWNER)
    for i in range(a.students):
        subprocess.run(
            [sys.executable, "-m", "engine.users", "add", f"student{i:02d}", "--password-stdin"],
            input=f"class-pw-{i:02d}\n",
            text=True,
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    make_tiny_model(model)
    url, server = start_app("--workshop")  # as `make workshop` starts it, once it answers its health check
    barrier = multiprocessing.Manager().Barrier(a.students)
    t0 = time.time()
    with multiprocessing.Pool(a.students) as pool:
        done = pool.map(student, [(i, str(model), a.runs_each, barrier) for i in range(a.students)])
    submitted_s = time.time() - t0
    teach = users.find("teach")

    def training():
        return sum(r["state"] == "running" for r in runs.list_runs(teach))

    training_before = training()
    by_kind = page_loads(url, [f"student{i:02d}" for i in range(a.browsers)], a.rounds)
    loads = by_kind["reload"] + by_kind["runs_page"]
    training_after, waiting_after = training(), sum(r["state"] == "queued" for r in runs.list_runs(teach))
    while any(r["state"] in ("queued", "running") for r in runs.list_runs(teach)):
        time.sleep(2)
    listed = runs.list_runs(teach)
    os.killpg(server.pid, 9)  # the server and the Streamlit process it started
    order = [r["owner"] for r in sorted(listed, key=lambda r: r["started_at"] or 0)]
    seen, second_before_first = set(), False
    for owner in order:
        if owner in seen and len(seen) < a.students:
            second_before_first = True
        seen.add(owner)
    first_starts = {}
    for r in sorted(listed, key=lambda r: r["started_at"] or 0):
        first_starts.setdefault(r["owner"], r["started_at"])
    last_first = max(first_starts.values())
    seconds = sorted(r["started_at"] for r in listed if r["started_at"] != first_starts[r["owner"]])
    loads.sort()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "students": a.students,
        "runs_each": a.runs_each,
        "slots": 1,
        "submitted": sum(len(ids) for _, ids, _ in done),
        "registered": len(listed),
        "completed": sum(r["state"] == "completed" for r in listed),
        "lost": a.students * a.runs_each - len(listed),
        "all_submitted_within_s": round(submitted_s, 1),
        "slowest_login_and_submit_s": round(max(t for *_, t in done), 2),
        "fair_order": not second_before_first and (not seconds or last_first <= seconds[0]),
        "page_loads": len(loads),
        "page_load_p50_s": round(statistics.median(loads), 2),
        "page_load_p95_s": round(loads[int(0.95 * (len(loads) - 1))], 2),
        "page_load_max_s": round(loads[-1], 2),
        **{f"{kind}_p95_s": round(sorted(t)[int(0.95 * (len(t) - 1))], 2) for kind, t in by_kind.items()},
        "browser_contexts_on_the_same_machine": a.browsers,
        "runs_training_when_loads_began": training_before,
        "runs_training_when_loads_ended": training_after,
        "runs_waiting_when_loads_ended": waiting_after,
    }
    print(json.dumps(result, indent=1))
    with open(REPO / "bench" / "results" / "workshop_load.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
