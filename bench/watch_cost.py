"""What watching a run costs a laptop: the CPU time of the app server and of a real Chromium showing the Runs page's
live view, while a run's metrics grow at the showcase's pace (one step every 2.75 s, replayed from a recorded run;
no trainer, so the figures are the watcher's alone). A benchmark, not a timed test.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/watch_cost.py [--seconds 120] [--metrics RUN/metrics.jsonl] [--label X]

On 2 cores the watcher takes its CPU from the trainer: each second of it cost the showcase ~1 s of wall time (the
trainer's two OpenMP threads wait for each other at every barrier). Appends a line to
bench/results/watch_cost.jsonl.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from bench.showcase_browser import browser_cpu_seconds, cpu_seconds  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS, start_app  # noqa: E402

RECORDED = REPO / "tests" / "data" / "curves" / "healthy-showcase-sft-lora.jsonl"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--step-s", type=float, default=2.75)
    p.add_argument("--metrics", default=str(RECORDED), help="a recorded metrics.jsonl to replay")
    p.add_argument("--label", default="")
    a = p.parse_args()
    home = tempfile.mkdtemp(prefix="tw-watch-")
    os.environ["TUNEWISE_HOME"] = home
    from engine import rundir, runs

    recorded = [json.loads(line) for line in Path(a.metrics).read_text().splitlines() if line.strip()]
    steps = [r for r in recorded if "loss" in r]
    run_dir = Path(home) / "runs" / "0001-sft-lora"
    run_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", str(a.seconds + 120)])  # stands for the trainer: a live pid
    db = runs.connect()
    db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, started_at, pid, supervisor_pid) "
        "VALUES ('me', ?, 'sft', 'lora', 'running', ?, ?, ?, ?)",
        (str(run_dir), time.time(), time.time(), sleeper.pid, sleeper.pid),
    )
    started = time.time()
    rundir.write_status(run_dir, "running", step=0, max_steps=len(steps), started_at=started, pid=sleeper.pid)
    url, server = start_app(env={"TUNEWISE_HOME": home, "HF_HUB_OFFLINE": "1"})
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "label": a.label, "seconds": a.seconds, "step_s": a.step_s}
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_role("link", name="6 · Runs").click()
            page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
            server_before, browser_before = cpu_seconds(server.pid, children=False), browser_cpu_seconds()
            t0, n = time.time(), 0
            while time.time() - t0 < a.seconds and n < len(steps):
                rundir.append_metrics(run_dir, {**steps[n], "time": time.time()})
                n += 1
                rundir.write_status(run_dir, "running", step=n, max_steps=len(steps), started_at=started)
                time.sleep(a.step_s)
            out["steps_replayed"] = n
            out["server_cpu_s"] = round(cpu_seconds(server.pid, children=False) - server_before, 2)
            out["browser_cpu_s"] = round(browser_cpu_seconds() - browser_before, 2)
            out["watched_s"] = round(time.time() - t0, 1)
            browser.close()
    finally:
        os.killpg(server.pid, 9)
        sleeper.kill()
    out["cpu_share_of_a_core"] = round((out["server_cpu_s"] + out["browser_cpu_s"]) / out["watched_s"], 3)
    print(json.dumps(out))
    with open(REPO / "bench" / "results" / "watch_cost.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
