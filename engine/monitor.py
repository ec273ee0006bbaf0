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
    if status.get("started_at"):  # after a resume, time the steps of this attempt only
        train = [r for r in train if r.get("time", 0) >= status["started_at"]] or train[-1:]
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


@dataclass
class Alert:
    level: str    # "error" | "warning"
    title: str    # what is happening, in plain words
    advice: str   # what to do about it


def health(records: list[dict]) -> list[Alert]:
    """Plain-words alerts over the logged curve: NaN, explosion, spikes, overfitting, memory creeping up."""
    alerts = []
    steps, loss = series(records, "loss")
    bad = [s for s, v in zip(steps, loss) if v != v or v in (float("inf"), float("-inf"))]
    if bad:
        alerts.append(Alert("error", f"The loss became NaN or infinite at step {bad[0]}.",
                            "The run is not learning any more. Stop it, then lower the learning rate 10x; also "
                            "check the data for empty answers, and prefer bf16 over fp16."))
        return alerts
    if len(loss) >= 10:
        recent, best = loss[-5:], min(loss[:-5])
        if min(recent) > 3 * best and recent[-1] >= recent[0]:
            alerts.append(Alert("error", f"The loss is exploding: {recent[-1]:.3g} now, {best:.3g} at best.",
                                "Stop the run and restart with a learning rate 3-10x lower (or more warm-up)."))
        else:
            window = loss[-21:-1]
            mean = sum(window) / len(window)
            spread = (sum((v - mean) ** 2 for v in window) / len(window)) ** 0.5
            if loss[-1] > mean + 4 * spread and loss[-1] > 1.5 * mean:
                alerts.append(Alert("warning", f"The loss spiked at step {steps[-1]} ({loss[-1]:.3g} against "
                                    f"about {mean:.3g} before).",
                                    "One spike is often a hard batch and recovers; if spikes repeat, lower the "
                                    "learning rate or look for broken examples."))
    eval_steps, eval_loss = series(records, "eval_loss")
    if len(eval_loss) >= 3 and eval_loss[-1] > eval_loss[-2] > eval_loss[-3]:
        before = [v for s, v in zip(steps, loss) if s <= eval_steps[-3]]
        after = [v for s, v in zip(steps, loss) if s > eval_steps[-3]]
        if before and after and sum(after) / len(after) < sum(before[-5:]) / len(before[-5:]):
            alerts.append(Alert("warning", "The held-out loss is rising while the training loss falls: the "
                                "model is starting to memorise its examples (overfitting).",
                                "Stop now: the checkpoint with the lowest held-out loss is kept. Next time train "
                                "fewer steps or epochs, or add more varied data."))
    mem_steps, memory = series(records, "memory_gib")
    if len(memory) >= 20:
        settled, now = memory[len(memory) // 4], memory[-1]
        if now > settled * 1.15 and now > settled + 0.5 and memory[-1] >= memory[-5] >= memory[-10]:
            alerts.append(Alert("warning", f"Memory keeps creeping up: {settled:.1f} GiB after warm-up, "
                                f"{now:.1f} GiB now.",
                                "Usually longer examples arriving late; if it keeps rising, the run may run out "
                                "of memory. Lower the batch size or the maximum length."))
    return alerts
