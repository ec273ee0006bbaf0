"""Progress, ETA and the health alerts a person watching a run relies on."""

import json
import math
from pathlib import Path

import pytest

from engine import monitor


def curve(losses, **extra):
    return [
        {"step": i + 1, "loss": v, "time": 100.0 + 2 * i, **{k: f(i) for k, f in extra.items()}}
        for i, v in enumerate(losses)
    ]


def test_progress_and_eta_come_from_the_measured_step_time():
    records = curve([2.0, 1.8, 1.6, 1.5, 1.4])  # 2 s per step, the last one logged at t = 108
    prog = monitor.progress({"state": "running", "step": 5, "max_steps": 20, "started_at": 95.0}, records, now=108.0)
    assert prog.fraction == 0.25 and prog.training
    assert prog.seconds_per_step == 2.0
    assert prog.eta_s == 30.0
    assert monitor.eta_text(prog) == monitor.eta_text(prog, "running") == "30 s"
    later = monitor.progress({"state": "running", "step": 5, "max_steps": 20, "started_at": 95.0}, records, now=109.5)
    assert later.eta_s == 28.5  # counts down between logged steps...
    stalled = monitor.progress({"state": "running", "step": 5, "max_steps": 20, "started_at": 95.0}, records, now=200)
    assert stalled.eta_s == 28.0  # ...but never past the next step's due time (an eval pass, a checkpoint)


def test_warm_up_and_an_eval_pass_do_not_set_the_pace():
    times = [130.0, 160.0, 163.0, 166.0, 169.0, 190.0, 193.0, 196.0]  # loading, then 3 s steps; an eval at 6
    records = [{"step": i + 1, "loss": 1.0, "time": t} for i, t in enumerate(times)]
    prog = monitor.progress({"state": "running", "step": 8, "max_steps": 100, "started_at": 100.0}, records, now=196)
    assert prog.seconds_per_step == 3.0 and prog.eta_s == 3.0 * 92


def test_no_rate_until_a_few_steps_ran():
    for n in (0, 1, 2, 3):  # the first logged step holds the loading; then two intervals make a pace
        prog = monitor.progress(
            {"state": "running", "step": n, "max_steps": 20, "started_at": 95.0}, curve([2.0] * n), now=103
        )
        more = f"{4 - n} more logged step{'s' if n < 3 else ''}"  # says why it waits, and how long
        assert prog.eta_s is None and monitor.eta_text(prog) == f"known after {more} (the first ones include warm-up)"
    assert monitor.progress({"state": "running", "step": 4, "max_steps": 20}, curve([2.0] * 4)).eta_s is not None


def test_after_a_resume_only_this_attempts_steps_time_the_run():
    old = curve([2.0, 1.8, 1.6, 1.5, 1.4, 1.3])  # steps 1-6 at t = 100..110
    resumed_at = 100.0 + 3600  # an hour later
    new = [{"step": 6 + i, "loss": 1.2, "time": resumed_at + 20 + 2 * i} for i in range(1, 3)]
    status = {"state": "running", "step": 8, "max_steps": 20, "started_at": resumed_at}
    prog = monitor.progress(status, old + new, now=resumed_at + 24)
    assert prog.eta_s is None and monitor.eta_text(prog).startswith("known after 2 more")  # never "1 h 00 min"
    assert prog.elapsed_s == 24
    more = new + [{"step": 9 + i, "loss": 1.2, "time": resumed_at + 26 + 2 * i} for i in range(2)]
    prog = monitor.progress({**status, "step": 10}, old + more, now=resumed_at + 28)
    assert prog.seconds_per_step == 2.0 and prog.eta_s == 20.0


def test_a_run_that_is_not_training_has_no_eta():
    records = curve([2.0, 1.8, 1.6, 1.5, 1.4])
    for state in ("queued", "stopped", "failed", "completed"):
        prog = monitor.progress(
            {"state": state, "step": 5, "max_steps": 20, "started_at": 95.0, "finished_at": 120.0}, records, now=130.0
        )
        assert prog.eta_s is None and not prog.training
        assert monitor.eta_text(prog) == monitor.eta_text(prog, state) == "-"
        assert prog.elapsed_s == 25.0  # up to the end, not up to now
    done = monitor.progress({"state": "completed", "step": 20, "max_steps": 20}, records)
    assert done.fraction == 1.0


def test_a_healthy_curve_raises_no_alert():
    assert monitor.health(curve([2.0 / (1 + 0.1 * i) for i in range(40)])) == []


def test_nan_loss_is_an_error_with_advice():
    alerts = monitor.health(curve([2.0, 1.5, float("nan"), 1.0]))
    assert alerts[0].level == "error" and "step 3" in alerts[0].title and "learning rate" in alerts[0].advice


def test_exploding_loss():
    alerts = monitor.health(curve([2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 3.0, 4.0, 6.0, 9.0, 14.0]))
    assert any("exploding" in a.title for a in alerts)


def test_a_single_spike_is_a_warning():
    losses = [1.0 + 0.01 * math.sin(i) for i in range(25)] + [5.0]
    alerts = monitor.health(curve(losses))
    assert [a.level for a in alerts] == ["warning"] and "spiked at step 26" in alerts[0].title


def test_overfitting_when_eval_rises_and_train_falls():
    records = curve([2.0 - 0.04 * i for i in range(40)])
    for step, value in [(10, 1.2), (20, 1.3), (30, 1.4), (40, 1.5)]:
        records.append({"step": step, "eval_loss": value})
    alerts = monitor.health(records)
    assert any("overfitting" in a.title for a in alerts)


def test_memory_creeping_up():
    records = curve([1.0] * 40, memory_gib=lambda i: 10.0 + 0.1 * i)
    assert any("creeping" in a.title for a in monitor.health(records))
    steady = curve([1.0] * 40, memory_gib=lambda i: 10.0)
    assert not any("creeping" in a.title for a in monitor.health(steady))


def test_metrics_reader_reads_only_new_lines_and_survives_a_rewritten_file(tmp_path):
    import json
    import os

    from engine import rundir

    reader = rundir.MetricsReader(tmp_path)
    assert reader.poll() == []
    for step in (1, 2):
        rundir.append_metrics(tmp_path, {"step": step, "loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a line the trainer is still writing
    assert [r["step"] for r in reader.poll()] == [1, 2]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('ss": 0.9}\n')
    assert [r["step"] for r in reader.poll()] == [3]
    # a resumed run replaces the file with the lines up to its checkpoint
    tmp = tmp_path / "new"
    tmp.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2)))
    os.replace(tmp, tmp_path / "metrics.jsonl")
    reader.poll()
    assert [r["step"] for r in reader.records] == [1, 2]


# ------------------------------------------------------------------ recorded curves (tests/data/curves/README.md)
CURVES = Path(__file__).parent / "data" / "curves"
HEALTHY = sorted(p.name for p in CURVES.glob("healthy-*.jsonl"))
# bad curve -> (words of the alert it must raise, the step its trouble starts, steps it may take to be caught)
BAD = {
    "diverge-sft-lora-lr30x.jsonl": ("exploding", 2, 4),
    "nan-sft-lora-lr900x.jsonl": ("NaN", 9, 0),
    "overfit-tiny-sft-lora-modified.jsonl": ("overfitting", None, 0),
}


def read_curve(name):
    return [json.loads(line) for line in (CURVES / name).read_text().splitlines()]


def replay(records):
    """(step, alerts) after every record, as the live page sees the file grow line by line."""
    for i in range(1, len(records) + 1):
        yield records[i - 1]["step"], monitor.health(records[:i])


def test_the_recorded_curves_are_there():
    assert "healthy-showcase-sft-lora.jsonl" in HEALTHY and len(HEALTHY) >= 3
    assert all((CURVES / name).is_file() for name in BAD)


@pytest.mark.parametrize("name", HEALTHY)
def test_a_healthy_recorded_run_raises_no_alert_at_any_step(name):
    records = read_curve(name)
    false_alarms = [(step, [a.title for a in alerts]) for step, alerts in replay(records) if alerts]
    assert false_alarms == []


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_recorded_run_is_caught_within_a_few_steps(name):
    words, trouble_from, allowed = BAD[name]
    records = read_curve(name)
    if trouble_from is None:  # overfitting: from the evaluation after the held-out loss's best
        evals = [r for r in records if "eval_loss" in r]
        best = min(range(len(evals)), key=lambda i: evals[i]["eval_loss"])
        trouble_from, allowed = evals[best + 1]["step"], evals[best + 2]["step"] - evals[best + 1]["step"]
    caught = next((step for step, alerts in replay(records) if any(words in a.title for a in alerts)), None)
    assert caught is not None, f"{name}: no '{words}' alert"
    assert trouble_from <= caught <= trouble_from + allowed, f"{name}: caught at step {caught}"


def test_the_run_panel_states_predicted_and_measured_gpu_memory():
    from ui.monitor import memory_line

    status = {"memory": {"predicted_peak_gib": 20.4, "measured_peak_gib": 20.0, "free_at_start_gib": 23.0}}
    assert memory_line(status) == (
        "GPU memory: 20.4 GiB predicted, 20.0 GiB measured by NVML (+2 %) · 23.0 GiB were free at the start."
    )
    assert memory_line({}) == "", "a CPU run records no GPU memory"
    status["memory"]["checkpointing"] = "on for 7 of 28 layers (every 4)"
    assert memory_line(status).startswith(
        "GPU memory: 20.4 GiB predicted with gradient checkpointing on for 7 of 28 layers (every 4), 20.0 GiB measured"
    )


def test_the_run_panel_says_a_compiled_run_waits_longer_for_its_first_step():
    from ui.monitor import waiting_text

    assert "a few seconds" in waiting_text({}) and "compile" not in waiting_text({})
    assert "compiles the model first" in waiting_text({"memory": {"compiled": True, "predicted_peak_gib": 3.4}})
