"""The lesson's escalation, measured: SFT on the Task API set (the showcase recipe), then RL from that SFT run
rewarded by the task_api checks (GRPO, engine/checks.py), both scored on the same held-out rows. A benchmark.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/rl_checks.py --limit 60 --rl-steps 40

The RL run's evaluation compares its starting model (the SFT result) with the RL result, so "base" below is SFT
alone. Writes bench/results/rl_checks-<time>.json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from showcase import RECIPE, REPO, run  # noqa: E402


def step(cmd: list[str], env: dict) -> tuple[float, float]:
    print("$ " + " ".join(cmd[1:]), flush=True)
    proc, wall, cpu = run(cmd, env)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return wall, cpu


def evaluate(run_dir: Path, limit: int, env: dict) -> dict:
    proc, wall, _ = run([sys.executable, "-m", "engine.evaluate", str(run_dir), "--json", "--limit", str(limit)], env)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return {**json.loads(proc.stdout), "wall_s": round(wall, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=f"/tmp/tunewise-rl-checks-{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--sft-dir", help="an SFT run to start from instead of training one")
    a = p.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    root = Path(a.root)
    sft = Path(a.sft_dir) if a.sft_dir else root / "sft"
    out = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_count": os.cpu_count(), "limit": a.limit}
    if not a.sft_dir:
        out["sft_wall_s"], _ = step(
            [sys.executable, "-m", "engine.train", *[x for kv in RECIPE.items() for x in kv], "--output-dir", str(sft)],
            env,
        )
    rl = root / "rl"
    rl_cmd = [
        sys.executable,
        "-m",
        "engine.train",
        "--stage",
        "rl",
        "--method",
        "lora",
        "--init-from",
        str(sft),
        "--reward",
        "task_api",
        "--max-steps",
        str(a.rl_steps),
        "--save-steps",
        str(a.rl_steps),
        "--output-dir",
        str(rl),
    ]
    out["rl_command"] = " ".join(rl_cmd[1:])
    out["rl_wall_s"], out["rl_cpu_s"] = step(rl_cmd, env)
    out["sft_eval"] = evaluate(sft, a.limit, env)
    out["rl_eval"] = evaluate(rl, a.limit, env)
    rewards = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    out["rl_reward_curve"] = [(m["step"], m.get("reward")) for m in rewards if "reward" in m]
    print("held-out checks (" + out["rl_eval"]["held_out"] + "):")
    for m in out["rl_eval"]["metrics"]:
        if m["kind"] in ("share", "reward"):
            print(f"  {m['metric']:<32} SFT alone {m['base']:.3f}   SFT + RL {m['fine_tuned']:.3f}")
    path = REPO / "bench" / "results" / f"rl_checks-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"written to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
