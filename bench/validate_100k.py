"""Benchmark, not a test: how long `engine.data check` takes on a 100,000-row file.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/validate_100k.py            # SFT, input/output rows (the seed's layout)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/validate_100k.py --stage dpo --rows 100000

Rows are the bundled sets repeated with a row number appended, so there are no duplicates and the size is
realistic (~15-25 MB). Prints the in-process time of check() and the CLI's wall time (start-up included). The
CPU time is the figure to compare across machines; wall time depends on what else is running.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.data import bundled, check  # noqa: E402


def make_file(stage: str, rows: int, directory: Path) -> Path:
    source = [json.loads(line) for line in bundled(stage).read_text().splitlines()]
    first = next(iter(source[0]))  # the prompt-like field gets a row number, so every row is distinct
    path = directory / f"{stage}_{rows}.jsonl"
    with open(path, "w") as f:
        for i in range(rows):
            row = dict(source[i % len(source)])
            row[first] = f"{row[first]} (#{i})"
            f.write(json.dumps(row) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default="sft", choices=["pt", "sft", "dpo", "rm", "rl"])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(args.stage, args.rows, Path(tmp))
        size_mb = path.stat().st_size / 1e6
        start, cpu = time.perf_counter(), time.process_time()
        report = check(path, args.stage)
        in_process_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "engine.data", "check", str(path), "--stage", args.stage, "--json"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        cli_s = time.perf_counter() - start
    assert report.ok and report.rows == args.rows, report.summary()
    print(
        f"{args.rows:,} rows, {size_mb:.1f} MB, stage {args.stage}: "
        f"check() {in_process_s:.2f} s wall / {cpu_s:.2f} s CPU, "
        f"CLI {cli_s:.2f} s (exit {cli.returncode}), {args.rows / in_process_s:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
