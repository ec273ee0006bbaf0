"""The seed's showcase, measured: LoRA SFT of the embedded SmolLM2-135M-Instruct on the bundled Task API set, then
the held-out Task API checks for the base model and the fine-tuned one. A benchmark, not a timed test.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/showcase.py                       # the recipe below, full held-out split
    HF_HUB_OFFLINE=1 .venv/bin/python bench/showcase.py --limit 80 -- --max-steps 30   # extra flags to engine.train

Target (issue 8): >= 95 % valid JSON, >= 95 % priority right, >= 90 % title exact on the held-out split, after at
most 5 minutes of training on 2 CPU cores. Prints training wall time, CPU time and the load average (a shared
machine is slower than an idle one; CPU time is what transfers) and writes bench/results/showcase-<time>.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The recipe: everything else is RunSpec's default (stage sft, method lora, r 16, all-linear, bundled task_api).
# Measured on 2 shared CPU cores (1 trainer thread; ~0.95 CPU-s per example), held-out Task API checks
# (JSON / priority / title; 60 rows unless marked):
#   steps x batch, lr     examples  JSON   priority  title   CPU-s (whole process)
#   10 x 8, 1e-3             80      98 %    47 %     78 %
#   20 x 8, 1e-3            160     100 %    45 %     92 %
#   40 x 8, 1e-3            320     100 %    74.6 %   95.0 %  315   (all 240 rows; bench/results/showcase-*.json)
#   60 x 8, 1e-3            480     100 %    77 %     97 %
#   80 x 8, 1e-3            640     100 %    82 %     95 %    586
#  100 x 4, 1e-3 / 2e-3     400     100 %    70 / 73 % 98 / 95 %  ~400
# JSON and title meet the bar within the budget; priority does not (see the note in the issue report).
RECIPE = {
    "--stage": "sft", "--method": "lora",
    "--lr": "1e-3",          # 5x the generic LoRA 2e-4: the fresh adapter of a 135M model learns the JSON format in
    #                          tens of steps at this rate (loss 1.86 -> 0.33 in 6 steps); 2e-3 was no better
    "--max-steps": "40",     # 320 examples: ~315 CPU-s, inside 5 minutes on 2 cores; 80 steps buys ~7 points of
    #                          priority for twice the time
    "--batch": "8",          # batch 4 with twice the steps was no better per example and ~25 % slower per example
    "--seq": "128",          # no speed effect (batches pad to their longest row, ~90 tokens); just truncation
    "--eval-steps": "1000",  # no held-out loss during training: 64 rows of eval cost as much as ~8 steps on a CPU
    "--save-steps": "1000",  # no mid-run checkpoint for a 5-minute run (saving the optimizer state costs seconds)
}
TARGETS = {"valid JSON": 0.95, "priority right": 0.95, "title exact": 0.90}
BUDGET_S = 300


def run(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return proc, time.time() - started, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=f"/tmp/tunewise-showcase-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out rows")
    p.add_argument("--threads", default="auto", help="OMP_NUM_THREADS for the trainer; auto: 1 when other "
                   "processes already load every core (2 threads then ran ~6x slower per step here), else unset")
    p.add_argument("train_flags", nargs="*", help="after --: flags for engine.train that override the recipe")
    a = p.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    threads = "1" if a.threads == "auto" and busy else a.threads
    if threads != "auto":
        env["OMP_NUM_THREADS"] = threads
    print(f"trainer threads: {env.get('OMP_NUM_THREADS', 'torch default')} (load average {os.getloadavg()[0]:.1f})")
    flags = dict(RECIPE)
    extra = list(a.train_flags)
    for flag, value in zip(extra[::2], extra[1::2]):
        flags[flag] = value
    cmd = [sys.executable, "-m", "engine.train", *[x for kv in flags.items() for x in kv], "--output-dir", a.run_dir]
    print("$ " + " ".join(cmd[1:]), flush=True)
    load_before = os.getloadavg()
    train, wall, cpu = run(cmd, env)
    load_after = os.getloadavg()
    if train.returncode != 0:
        print(train.stderr[-3000:])
        return 1
    metrics = [json.loads(line) for line in (Path(a.run_dir) / "metrics.jsonl").read_text().splitlines()]
    runtime = next((m["train_runtime"] for m in metrics if "train_runtime" in m), None)
    print(f"training: {wall:.0f} s wall for the whole process ({runtime:.0f} s inside trainer.train), {cpu:.0f} s CPU;"
          f" load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} cores",
          flush=True)
    ev_cmd = [sys.executable, "-m", "engine.evaluate", a.run_dir, "--json"]
    if a.limit:
        ev_cmd += ["--limit", str(a.limit)]
    ev, ev_wall, ev_cpu = run(ev_cmd, env)
    if ev.returncode != 0:
        print(ev.stderr[-3000:])
        return 1
    result = json.loads(ev.stdout)
    figures = {m["metric"]: m for m in result["metrics"]}
    print(f"evaluation on {result['held_out']}: {ev_wall:.0f} s wall, {ev_cpu:.0f} s CPU")
    ok = True
    for name, m in figures.items():
        target = TARGETS.get(name)
        passed = target is None or (m["fine_tuned"] or 0) >= target
        ok &= passed
        fmt = (lambda v: f"{v:8.1%}") if m["kind"] == "share" else (lambda v: f"{v:8.3f}")
        print(f"  {name:<28} base {fmt(m['base'])}   fine-tuned {fmt(m['fine_tuned'])}"
              + (f"   target >= {target:.0%} {'ok' if passed else 'MISSED'}" if target else ""))
    in_budget = wall <= BUDGET_S
    print(f"training within {BUDGET_S} s: {'yes' if in_budget else 'no'} (wall {wall:.0f} s)")
    out = REPO / "bench" / "results" / f"showcase-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(cmd[1:]), "train_wall_s": round(wall, 1),
                               "train_runtime_s": runtime, "train_cpu_s": round(cpu, 1),
                               "load_average_before": load_before, "load_average_after": load_after,
                               "cpu_count": os.cpu_count(), "eval_wall_s": round(ev_wall, 1),
                               "targets_met": ok, "eval": result}, indent=1))
    print(f"written to {out.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
