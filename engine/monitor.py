"""What a person watching a run wants to know, computed from the run directory: progress, ETA, the curves.
Pure functions over status.json and metrics.jsonl records; the Runs and Train pages draw them.

Health alerts must not cry wolf: a newcomer told "the loss is exploding" stops a good run. So every alert rests on
evidence that holds over a window (medians of several steps, not one batch), and every threshold has an absolute
part scaled to the run's starting loss, because near convergence 3x a tiny loss is noise. The rules are replayed
step by step over recorded real curves in tests/test_monitor.py (tests/data/curves/: healthy runs raise nothing,
NaN, divergence and overfitting are each caught).
"""

import math
import statistics
import time
from dataclasses import dataclass

TRAINING_STATES = ("running",)  # the states in which an ETA means something (engine.rundir.STATES)
RATE_INTERVALS = 10  # the step time is the median of the last this-many intervals between logged steps
WARMUP_RECORDS = 2  # logged steps of an attempt that time loading and warm-up, not the steady pace
WINDOW = 5  # steps per smoothing window of the health rules (a median: one odd batch moves nothing)


@dataclass
class Progress:
    step: int
    max_steps: int
    fraction: float  # 0..1, from steps (the progress bar)
    elapsed_s: float  # of this attempt (a resumed run starts again at its resume)
    eta_s: float | None  # None while not training, or until a few steps of this attempt give a rate
    seconds_per_step: float | None
    training: bool = False  # the run is in a state where it advances (running)
    logged: int = 0  # logged steps of this attempt (the ETA waits for WARMUP_RECORDS + 2 of them)


def _step_time(train: list[dict]) -> float | None:
    """Seconds per step: the median of recent intervals between logged steps, once the warm-up steps are behind.
    A median ignores the odd interval that holds an evaluation pass or a checkpoint save."""
    steady = train[WARMUP_RECORDS - 1 :]
    pairs = [
        (b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(steady, steady[1:]) if b["step"] > a["step"]
    ]
    return statistics.median(pairs[-RATE_INTERVALS:]) if len(pairs) >= 2 else None  # one interval is no pace yet


def progress(status: dict, records: list[dict], now: float | None = None) -> Progress:
    now = now or time.time()
    train = sorted(
        (r for r in records if "loss" in r and isinstance(r.get("time"), (int, float))), key=lambda r: r["step"]
    )
    started_at = status.get("started_at")
    if started_at:  # after a resume: only this attempt's steps (the older ones would time the pause in between)
        train = [r for r in train if r["time"] >= started_at]
    step = max([status.get("step") or 0] + [r["step"] for r in train])
    max_steps = status.get("max_steps") or 0
    started = started_at or (train[0]["time"] if train else now)
    end = status.get("finished_at") or now
    training = status.get("state") in TRAINING_STATES
    rate = _step_time(train)
    eta = None
    if training and rate is not None and max_steps:
        # count down between logged steps, but never past the next step's due time (an eval pass may be running)
        since_last = min(max(0.0, now - train[-1]["time"]), rate)
        eta = max(0.0, rate * max(0, max_steps - step) - since_last)
    fraction = min(1.0, step / max_steps) if max_steps else 0.0
    return Progress(step, max_steps, fraction, max(0.0, end - started), eta, rate, training, len(train))


def eta_text(prog: Progress, state: str | None = None) -> str:
    """What the ETA label shows: "-" for a run that is not training (queued, stopped, failed, completed), the
    time left, or until a few logged steps give a pace, why it waits and for how many more. The first steps time
    loading and warm-up (a compiled run's second step recompiles: 10x a steady step), so an ETA from them misleads
    more than none."""
    training = prog.training if state is None else state in TRAINING_STATES
    if not training:
        return "-"
    if prog.eta_s is None and prog.seconds_per_step is None:
        more = max(1, WARMUP_RECORDS + 2 - prog.logged)
        return f"known after {more} more logged step{'s' if more > 1 else ''} (the first ones include warm-up)"
    return format_seconds(prog.eta_s)


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
    level: str  # "error" | "warning"
    title: str  # what is happening, in plain words
    advice: str  # what to do about it


def _medians(values: list[float], k: int = WINDOW) -> list[float]:
    """Running median over windows of k values: entry i is the median of values[i : i + k]."""
    return [statistics.median(values[i : i + k]) for i in range(len(values) - k + 1)]


def _nan_alert(steps: list[int], loss: list[float]) -> Alert | None:
    bad = [s for s, v in zip(steps, loss) if not math.isfinite(v)]
    if not bad:
        return None
    return Alert(
        "error",
        f"The loss became NaN or infinite at step {bad[0]}.",
        "The run is not learning any more. Stop it, then lower the learning rate 10x; also check the data "
        "for empty answers, and prefer bf16 over fp16.",
    )


def _explosion_alert(loss: list[float]) -> Alert | None:
    """The median of the last k steps is over 3x the best earlier window's median AND has climbed back by more
    than half the starting loss: a rise a beginner can trust, not the wobble of a loss near zero. k is WINDOW, or
    less in a run's first steps (at least 3), so that a run diverging from its first steps is caught early too."""
    k = min(WINDOW, len(loss) // 2)
    if k < 3:
        return None
    smooth = _medians(loss, k)
    start, recent = loss[0], smooth[-1]
    best = min(smooth[:-k] + [start])  # windows that end before the recent one begins, or the untrained model
    if recent > 3 * best and recent - best > 0.5 * start:
        return Alert(
            "error",
            f"The loss is exploding: about {recent:.3g} over the last {k} steps, against "
            f"{best:.3g} at its best" + ("." if best == start else f" and {start:.3g} at the start."),
            "Stop the run and restart with a learning rate 3-10x lower (or more warm-up).",
        )
    return None


def _spike_alert(steps: list[int], loss: list[float]) -> Alert | None:
    """The newest loss far above the last 20 steps' median, measured in their robust spread (MAD) and by a floor
    of a quarter of the starting loss; one spike is reported, not acted on."""
    if len(loss) < 2 * WINDOW + 1:
        return None
    window = loss[-21:-1]
    centre = statistics.median(window)
    mad = statistics.median(abs(v - centre) for v in window) * 1.4826  # ~ one standard deviation if normal
    if loss[-1] > centre + max(6 * mad, 0.25 * loss[0]) and loss[-1] > 1.5 * centre:
        return Alert(
            "warning",
            f"The loss spiked at step {steps[-1]} ({loss[-1]:.3g} against about {centre:.3g} before).",
            "One spike is often a hard batch and recovers; if spikes repeat, lower the "
            "learning rate or look for broken examples.",
        )
    return None


def _overfitting_alert(steps: list[int], loss: list[float], records: list[dict]) -> Alert | None:
    """The held-out loss has stayed above its best for two evaluations in a row and risen by 5 % of it and by 2 %
    of the starting training loss, while the training loss kept falling over the same steps."""
    eval_steps, eval_loss = series(records, "eval_loss")
    if len(eval_loss) < 3 or not loss:
        return None
    best = min(range(len(eval_loss)), key=eval_loss.__getitem__)
    if best > len(eval_loss) - 3:  # the best is one of the last two evaluations: no sustained rise yet
        return None
    rise = eval_loss[-1] - eval_loss[best]
    if eval_loss[-2] <= eval_loss[best] or rise <= 0.05 * eval_loss[best] or rise <= 0.02 * loss[0]:
        return None
    before = [v for s, v in zip(steps, loss) if s <= eval_steps[best]][-WINDOW:]
    after = [v for s, v in zip(steps, loss) if s > eval_steps[best]][-WINDOW:]
    if not before or not after or statistics.median(after) >= statistics.median(before):
        return None
    return Alert(
        "warning",
        f"The held-out loss is rising while the training loss falls ({eval_loss[best]:.3g} at "
        f"step {eval_steps[best]}, {eval_loss[-1]:.3g} now): the model is starting to memorise its "
        "examples (overfitting).",
        "Stop now: the checkpoint with the lowest held-out loss is kept. Next "
        "time train fewer steps or epochs, or add more varied data.",
    )


def _memory_alert(records: list[dict]) -> Alert | None:
    _, memory = series(records, "memory_gib")
    if len(memory) < 20:
        return None
    settled, now = memory[len(memory) // 4], memory[-1]
    if now > settled * 1.15 and now > settled + 0.5 and memory[-1] >= memory[-5] >= memory[-10]:
        return Alert(
            "warning",
            f"Memory keeps creeping up: {settled:.1f} GiB after warm-up, {now:.1f} GiB now.",
            "Usually longer examples arriving late; if it keeps rising, the run may run out of memory. "
            "Lower the batch size or the maximum length.",
        )
    return None


def health(records: list[dict]) -> list[Alert]:
    """Plain-words alerts over the logged curve: NaN, explosion, spikes, overfitting, memory creeping up."""
    steps, loss = series(records, "loss")
    nan = _nan_alert(steps, loss)
    if nan:
        return [nan]
    found = [
        _explosion_alert(loss) or _spike_alert(steps, loss),
        _overfitting_alert(steps, loss, records),
        _memory_alert(records),
    ]
    return [a for a in found if a]
