"""What a person watching a run wants to know, computed from the run directory: progress, ETA, the curves.
Pure functions over status.json and metrics.jsonl records; the Runs and Train pages draw them."""
import time
from dataclasses import dataclass


@dataclass
class Progress:
    step: int
    max_steps: int
    fraction: float        # 0..1, from steps (the progress bar)
    elapsed_s: float
    eta_s: float | None    # None until two logged steps give a rate
    seconds_per_step: float | None


def progress(status: dict, records: list[dict], now: float | None = None) -> Progress:
    now = now or time.time()
    train = [r for r in records if "loss" in r]
    step = max([status.get("step") or 0] + [r["step"] for r in train])
    max_steps = status.get("max_steps") or 0
    started = status.get("started_at") or (train[0]["time"] if train else now)
    end = status.get("finished_at") or now
    rate = None
    if len(train) >= 2 and train[-1]["step"] > train[0]["step"]:
        rate = (train[-1]["time"] - train[0]["time"]) / (train[-1]["step"] - train[0]["step"])
    eta = rate * max(0, max_steps - step) if rate is not None and max_steps else None
    if status.get("state") in ("completed", "failed", "stopped"):
        eta = 0.0
    fraction = min(1.0, step / max_steps) if max_steps else 0.0
    return Progress(step, max_steps, fraction, max(0.0, end - started), eta, rate)


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, in step order, skipping records that lack it."""
    points = sorted((r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)))
    return [p[0] for p in points], [p[1] for p in points]


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
