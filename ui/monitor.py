"""The live view of one run: state, progress bar with ETA, loss chart, log tail, stop. Refreshes itself every
two seconds (five on a machine without a GPU) with st.fragment(run_every=...), reading only the lines metrics.jsonl
gained since the last refresh."""

import time
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from engine import hardware, monitor, rundir, runs
from engine.recommend import METHOD_NAMES
from ui.session import actor

STATE_ICONS = {"waiting": "🔗", "queued": "⏳", "running": "🏃", "completed": "✅", "failed": "❌", "stopped": "⏹️"}
STAGE_SHORT = {"pt": "Pretraining", "sft": "SFT", "dpo": "DPO", "rm": "Reward model", "rl": "RL"}
# Without a GPU the trainer computes on the same cores as this server and the browser, and each refresh preempts
# one of its two OpenMP threads while the other waits at the next barrier: the showcase's steps took 3.47 s with the
# page open at 2 s refreshes, 2.93 s without it (bench/results/showcase_browser.jsonl)
REFRESH_S = 2.0 if hardware.detect_gpus().count else 5.0
CHART_EVERY_S = 8.0  # while a run trains, its charts are redrawn at most this often: each redraw costs the browser
#                      and the server CPU that a laptop's trainer needs (issue 22: the watching page took ~37 %)


def _reader(run_dir: str) -> rundir.MetricsReader:
    readers = st.session_state.setdefault("_metric_readers", {})
    if run_dir not in readers:
        readers[run_dir] = rundir.MetricsReader(Path(run_dir))
    return readers[run_dir]


def loss_chart(records: list[dict], title: str = "Loss") -> go.Figure:
    fig = go.Figure()
    steps, loss = monitor.series(records, "loss")
    fig.add_scatter(x=steps, y=loss, mode="lines+markers", name="train loss", marker={"size": 4})
    eval_steps, eval_loss = monitor.series(records, "eval_loss")
    if eval_loss:
        fig.add_scatter(
            x=eval_steps, y=eval_loss, mode="lines+markers", name="held-out loss (examples it never trained on)"
        )
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="loss",
        height=340,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return whole_steps(fig, steps)


def whole_steps(fig: go.Figure, steps: list) -> go.Figure:
    """A short run's axis ticks at whole steps (plotly put 1.5 and 2.5 between three steps)."""
    if steps and max(steps) <= 10:
        fig.update_xaxes(dtick=1)
    return fig


def metric_chart(records: list[dict], key: str, title: str, unit: str, line: float | None = None) -> go.Figure:
    steps, values = monitor.series(records, key)
    fig = go.Figure(go.Scatter(x=steps, y=values, mode="lines", name=title))
    if line is not None:
        fig.add_hline(y=line, line_dash="dash", annotation_text=f"estimated peak {line:.1f}")
    fig.update_layout(
        title=title, xaxis_title="step", yaxis_title=unit, height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10}
    )
    if values and min(values) == max(values) and values[0] > 0:  # a constant (e.g. the learning rate): plotly
        fig.update_yaxes(range=[0, 2 * values[0]])  # would centre it in [-1, 1] and it reads as 0
    return whole_steps(fig, steps)


def build_charts(run_dir: str, records: list[dict]) -> list[tuple[str, go.Figure]]:
    status = rundir.read_status(run_dir)
    predicted = (status.get("memory") or {}).get("predicted_peak_gib") or status.get("estimated_peak_gib")
    panels = [
        ("learning_rate", "Learning rate", "", None),
        ("grad_norm", "Gradient norm", "", None),
        ("tokens_per_second", "Speed", "tokens / s", None),
        ("mfu_percent", "Model FLOP utilisation", "% of the device's peak", None),
        ("memory_gib", "Memory", "GiB", predicted),
    ]
    figures = [("loss", loss_chart(records))]
    return figures + [
        (key, metric_chart(records, key, title, unit, line))
        for key, title, unit, line in panels
        if monitor.series(records, key)[0]
    ]


def charts(run_id: int, run_dir: str, records: list[dict], training: bool) -> None:
    """Figures are rebuilt only when new lines arrived, and while training at most every CHART_EVERY_S: the
    refresh must stay cheap for the server and the browser, which share the CPU with the trainer on a laptop.
    The loss chart always shows; the others on request."""
    cache = st.session_state.setdefault("_charts", {})
    count, built_at, _ = cache.get(run_id, (None, 0.0, None))
    if count != len(records) and (not training or time.time() - built_at >= CHART_EVERY_S or count is None):
        cache[run_id] = (len(records), time.time(), build_charts(run_dir, records))
    (_, loss), *small = cache[run_id][2]
    st.plotly_chart(loss, key=f"loss-{run_id}", use_container_width=True)
    if not small or not st.toggle("More charts (learning rate, speed, memory...)", key=f"more-{run_id}"):
        return
    for row in range(0, len(small), 2):
        for col, (key, fig) in zip(st.columns(2), small[row : row + 2]):
            col.plotly_chart(fig, key=f"{key}-{run_id}", use_container_width=True)


def memory_line(status: dict) -> str:
    """Predicted and NVML-measured GPU memory of a run, as the trainer recorded them (engine/train/common.py)."""
    memory = status.get("memory") or {}
    predicted, measured = memory.get("predicted_peak_gib"), memory.get("measured_peak_gib")
    if predicted is None:
        return ""
    text = f"GPU memory: {predicted:.1f} GiB predicted"
    if memory.get("checkpointing"):  # what the trainer chose (engine/train/common.py decide_grad_ckpt)
        text += f" with gradient checkpointing {memory['checkpointing']}"
    if measured:
        text += f", {measured:.1f} GiB measured by NVML ({100 * (predicted - measured) / measured:+.0f} %)"
    return text + f" · {memory.get('free_at_start_gib', 0):.1f} GiB were free at the start."


def waiting_text(status: dict) -> str:
    """What the panel says before a run's first logged step: a compiled run waits about a minute longer."""
    if (status.get("memory") or {}).get("compiled"):  # engine/train/common.py decide_compile
        return (
            "Waiting for the first logged step: training compiles the model first (torch.compile, about a minute "
            "on top of loading it), and every step after that runs faster..."
        )
    return "Waiting for the first logged step (loading the model and data takes a few seconds)..."


def queued_text(run: dict) -> str:
    """What the panel says while a run waits for its turn: nothing is loading yet."""
    free = "a GPU is free" if runs.gpu_count() else "the processor is free (one run trains at a time)"
    place = f" It is number {run['position']} in line." if run.get("position") else ""
    return f"Queued: it starts by itself when {free}.{place} Its chart appears after its first step."


@st.fragment(run_every=REFRESH_S)
def live_run(run_id: int) -> None:
    listed = runs.list_runs(actor())
    run = next((r for r in listed if r["id"] == run_id), None)
    if run is None:
        st.warning(f"There is no run {run_id} of yours any more (it was removed). Pick another one.")
        return
    # One source of truth: when any run's state changed since the page was drawn, the whole page is drawn again,
    # so the runs table above never says "running" next to a panel that says "failed".
    states = tuple((r["id"], r["state"]) for r in listed)
    if st.session_state.setdefault("_drawn_states", states) != states:
        st.session_state["_drawn_states"] = states
        st.rerun(scope="app")
    status = rundir.read_status(run["run_dir"])
    reader = _reader(run["run_dir"])
    reader.poll()
    state = run["state"]
    prog = monitor.progress(status, reader.records)
    head, button = st.columns([4, 1])
    position = f", position {run['position']} in the queue" if run["position"] else ""
    if run["position"] and run.get("expected_start"):
        position += (
            f", expected to start in about {monitor.format_seconds(max(0, run['expected_start'] - time.time()))}"
        )
    head.markdown(f"### {STATE_ICONS.get(state, '')} Run {run_id}: {state}{position}")
    if state in ("queued", "running", "waiting") and button.button("Stop", key=f"stop-{run_id}", type="secondary"):
        if state != "running":
            stopping = "Stopping: taking it out of the queue..."
        elif not prog.step:  # the trainer ends at once: there is no finished step to save
            stopping = "Stopping: no training step has finished yet, so there is no checkpoint to keep..."
        else:
            per_step = f" (a step takes about {monitor.format_seconds(prog.seconds_per_step)})"
            stopping = "Stopping: the step under way finishes and is saved as a checkpoint, then the process ends"
            stopping += (per_step if prog.seconds_per_step else "") + "..."
        with st.spinner(stopping):
            try:
                runs.stop(run_id, actor())
            except runs.RunError as e:  # it finished between the refresh and the click
                st.info(str(e))
        st.rerun()
    label = (
        f"step {prog.step} / {prog.max_steps or '?'} · elapsed {monitor.format_seconds(prog.elapsed_s)}"
        f" · time left {monitor.eta_text(prog, state)}"
    )
    if state == "queued" and not prog.step:  # not loading anything yet: "step 0 / ?" read as if it were
        label = "not started: waiting in the queue"
    st.progress(prog.fraction, text=label)
    if line := memory_line(status):
        st.caption(line)
    if state == "failed":
        st.error(f"The run failed: {status.get('error') or run.get('error') or 'no reason was recorded'}")
    if state == "completed" and run["stage"] != "rm":
        st.success("Finished. Next: ask it something and compare it with the model you started from.")
        st.page_link("app_pages/try_export.py", label="Try it on the Try & Export page", icon="🧪")
    if run.get("held"):
        (st.warning if run["held"].startswith("Held") else st.info)(run["held"])
    for alert in monitor.health(reader.records):
        (st.error if alert.level == "error" else st.warning)(f"**{alert.title}** {alert.advice}")
    if reader.records:
        charts(run_id, run["run_dir"], reader.records, training=state == "running")
    elif state == "queued":
        st.info(queued_text(run))
    elif state == "running":
        st.info(waiting_text(status))
    command = Path(run["run_dir"]) / "command.txt"
    if command.exists():
        st.caption("The exact command this run executes (re-run it from a shell):")
        st.code(command.read_text().strip(), language="bash")
    with st.expander("Log (last lines of train.log)"):
        st.code(rundir.log_tail(run["run_dir"], 25) or "(empty)", language="text")


def compare(run_rows: list[dict]) -> None:
    """Overlay the loss curves of several runs and put their settings side by side (only where they differ)."""
    import yaml

    fig = go.Figure()
    configs = {}
    logged = False
    for run in run_rows:
        records = rundir.read_metrics(Path(run["run_dir"]))
        steps, loss = monitor.series(records, "loss")
        logged = logged or bool(steps)
        method = METHOD_NAMES.get(run["method"], run["method"])
        fig.add_scatter(x=steps, y=loss, mode="lines", name=f"run {run['id']} ({STAGE_SHORT[run['stage']]}, {method})")
        configs[f"run {run['id']}"] = yaml.safe_load(run.get("config") or "{}") or {}
    fig.update_layout(
        title="Training loss",
        xaxis_title="step",
        yaxis_title="loss",
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    if logged:
        st.plotly_chart(fig, use_container_width=True, key="compare")
    else:  # empty axes from -1 to 6 would read as a broken chart
        st.caption("None of these runs has logged a training step yet: their loss curves appear here once they do.")
    keys = sorted({k for c in configs.values() for k in c if k not in ("output_dir", "extra")})
    differ = [k for k in keys if len({str(c.get(k)) for c in configs.values()}) > 1]
    if differ:
        st.dataframe(
            [{"setting": k, **{name: str(c.get(k)) for name, c in configs.items()}} for k in differ],
            hide_index=True,
            use_container_width=True,
        )
    else:
        st.caption("These runs used the same settings.")
