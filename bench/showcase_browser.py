"""The seed's showcase walked through the pages with a real browser watching, timed: Goal (a consistent output
format) -> Hardware (this computer, "Use LoRA on this hardware": the CPU plan) -> Estimate -> Data (bundled Task API
set) -> Train (Start) -> the live view on the Runs page until the run completes. A benchmark, not a timed test.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/showcase_browser.py        # needs chromium (make browser)

Prints the Estimate page's time, Start -> completed wall time with the page open (goal <= 300 s on 2 cores),
the ETA shown along the way, the CPU time of the trainer and of the app server, and the load average; appends a
line to bench/results/showcase_browser.jsonl.
"""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from conftest import CHROMIUM, CHROMIUM_ARGS, start_app  # noqa: E402


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time of a process (and of the children it has waited for, when children: the trainer's time would count
    for the app server, whose supervisor waited for the trainer)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def browser_cpu_seconds() -> float:
    """CPU time of every running Chromium process (the renderer that draws the live view, its GPU and utility
    processes): on a laptop they share the cores with the trainer."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith(("chrom", "headless")):
                total += cpu_seconds(int(comm.parent.name), children=False)
        except OSError:  # ended meanwhile
            continue
    return total


def main() -> int:
    from playwright.sync_api import sync_playwright

    home = tempfile.mkdtemp(prefix="tw-showcase-")
    os.environ["TUNEWISE_HOME"] = home
    url, server = start_app(env={"TUNEWISE_HOME": home, "HF_HUB_OFFLINE": "1"})
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_text("A consistent output format").click()
            page.get_by_role("button", name="Use this plan").click()
            page.get_by_text("Saved: your first run will be").wait_for()  # each choice lands before the next page
            page.get_by_role("link", name="2 · Hardware").click()
            page.get_by_role("button", name="Use LoRA on this hardware").click()
            page.get_by_text("Saved: method").wait_for()
            page.get_by_role("link", name="3 · Estimate").click()
            page.get_by_text("Will it fit").wait_for()
            page.get_by_text("Time · cost").wait_for()  # the metrics come after the title
            text = page.inner_text("body")
            found = re.search(r"Time · cost\s*\n\s*([^\n]+)", text)  # the Estimate page's time metric
            out["estimate_page_time"] = found.group(1).strip() if found else None
            page.get_by_role("link", name="4 · Data").click()
            page.get_by_text("Usable rows").wait_for()
            page.get_by_role("link", name="5 · Train").click()
            page.get_by_role("spinbutton", name="Max steps (optimizer steps; -1 = use Epochs)").wait_for()
            steps = page.get_by_role("spinbutton", name="Max steps (optimizer steps; -1 = use Epochs)").input_value()
            assert steps == "100", f"the CPU plan's 100 steps did not reach the Train page ({steps})"
            page.get_by_role("button", name="Start training").click()
            started, browser_before = time.time(), browser_cpu_seconds()
            page.get_by_role("link", name="6 · Runs").click()
            etas, trainer_cpu = [], None
            from engine import runs
            from engine.users import OWNER

            while True:
                listed = runs.list_runs(OWNER)
                if listed and listed[0]["state"] in ("completed", "failed", "stopped"):
                    break
                bar = page.locator("[data-testid='stProgress']").first
                if bar.count():
                    etas.append((round(time.time() - started), bar.inner_text().strip()))
                if listed and listed[0]["pid"]:
                    out["trainer_pid"] = listed[0]["pid"]
                    try:
                        trainer_cpu = cpu_seconds(out["trainer_pid"])
                    except OSError:
                        pass
                time.sleep(5)
            out["start_to_completed_s"] = round(time.time() - started, 1)
            out["state"] = listed[0]["state"]
            out["trainer_cpu_s"] = trainer_cpu and round(trainer_cpu, 1)
            out["server_own_cpu_s"] = round(cpu_seconds(server.pid, children=False), 1)
            out["browser_cpu_s"] = round(browser_cpu_seconds() - browser_before, 1)
            out["eta_samples"] = etas[::3]
            page.get_by_text("Run 1: completed").wait_for()
            browser.close()
    finally:
        os.killpg(server.pid, 9)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    with open(REPO / "bench" / "results" / "showcase_browser.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    return 0 if out["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
