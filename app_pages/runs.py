"""Runs: your runs (every run, for an instructor), your place in the fair queue, and a live view of the one you
pick."""

import time

import streamlit as st

from engine import monitor, rundir, runs, users
from engine.recommend import METHOD_NAMES
from engine.runs import executors, pipeline
from ui.monitor import STAGE_SHORT, STATE_ICONS, compare, live_run
from ui.session import actor
from ui.tracking import tracker_line

user = actor()
st.title("6 · Runs")
workshop = users.mode() == "workshop"
st.caption(
    "Runs keep training when you close the browser; come back any time. "
    + ("One run per GPU at a time; " if runs.gpu_count() else "One run at a time on this computer's processor; ")
    + (
        "waiting runs take turns across students, so everyone's first run starts before anyone's second."
        if workshop
        else "the others wait in submission order."
    )
)

all_runs = runs.list_runs(user)
if cluster_note := executors.note():  # TUNEWISE_CLUSTER names a Ray cluster that cannot take runs now
    st.warning(cluster_note)
if not all_runs:
    st.info("No runs yet. Start one on the Train page.")
    st.page_link("app_pages/train.py", label="Go to Train", icon="🚀")
    st.stop()


def when(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else ""


def starts_in(run):
    if not run["position"]:
        return ""
    if run["expected_start"] is None:
        return "after the runs ahead (no estimate)"
    return f"in about {monitor.format_seconds(max(0.0, run['expected_start'] - time.time()))}"


def what(r) -> str:
    return f"{STAGE_SHORT[r['stage']]} · {METHOD_NAMES.get(r['method'], r['method'])}"


def pipeline_state(stages: list[dict]) -> str:
    """One pipeline's state in a few words: the stage that holds it, the one training, or where it ended."""
    for i, r in enumerate(stages, 1):
        if r["state"] in ("failed", "stopped") and i < len(stages) and stages[i]["state"] == "waiting":
            return f"held: stage {i} {r['state']}"
        if r["state"] in ("running", "queued"):
            return f"stage {i} of {len(stages)} {r['state']}"
    last = stages[-1]["state"]
    return "completed" if all(r["state"] == "completed" for r in stages) else last


table, seen = [], set()
for r in reversed(all_runs):
    stages = pipeline.stages_of(r, all_runs)
    if stages[0]["id"] in seen:
        continue
    seen.add(stages[0]["id"])
    icons = " → ".join(f"{STATE_ICONS.get(x['state'], '')} {STAGE_SHORT[x['stage']]}" for x in stages)
    table.append(
        {
            "run": " → ".join(str(x["id"]) for x in stages),
            **({"who": r["owner"]} if user.sees_all else {}),
            "state": pipeline_state(stages) if len(stages) > 1 else r["state"],
            "what": icons if len(stages) > 1 else what(r),
            "queue position": next((x["position"] for x in stages if x["position"]), ""),
            "starts": next((starts_in(x) for x in stages if x["position"]), ""),
            "submitted": when(stages[0]["submitted_at"]),
            "finished": when(stages[-1]["finished_at"]),
            "where": r["where"],
        }
    )
st.dataframe(
    table,
    hide_index=True,
    use_container_width=True,
    column_config={
        "run": st.column_config.TextColumn(
            "run", help="A pipeline's stages are one row: 3 → 4 means run 4 starts from run 3's result"
        )
    },
)

mine = [r for r in all_runs if r["position"] and r["owner"] == user.name]
if mine:
    first = min(mine, key=lambda r: r["position"])
    st.info(
        f"Your first waiting run (run {first['id']}) is number {first['position']} in line; it should start "
        f"{starts_in(first)}."
    )


def label(run_id: int) -> str:
    r = by_id[run_id]
    stages = pipeline.stages_of(r, all_runs)
    where = f", stage {stages.index(r) + 1} of {len(stages)}" if len(stages) > 1 else ""
    return f"run {run_id} · {what(r)}{where} · {r['state']}"


by_id = {r["id"]: r for r in all_runs}
ids = [r["id"] for r in reversed(all_runs)]
# The run this tab started, unless it only waits while another trains: then the one training (newest first)
training = [i for i in ids if by_id[i]["state"] == "running"]
current = st.session_state.get("current_run")
if current not in ids or (by_id[current]["state"] == "queued" and training):
    current = (training or ids)[0]
default = ids.index(current)
chosen = st.selectbox("Watch run", ids, index=default, format_func=label)
live_run(chosen)

try:
    run = runs.get(chosen, user)
except runs.RunError as e:  # removed from the command line meanwhile
    st.warning(str(e))
    st.stop()
if line := tracker_line(run["run_dir"]):
    st.caption(line)
if run["state"] in ("stopped", "failed", "completed"):
    resume_col, remove_col = st.columns(2)
    resumable = rundir.last_checkpoint(run["run_dir"]) is not None or (run["pipeline"] and not run["started_at"])
    if run["state"] != "completed" and resumable:
        if resume_col.button("Resume from the last checkpoint", key=f"resume-{chosen}"):
            try:
                runs.resume(chosen, user)
                st.rerun()
            except runs.RunError as e:
                st.error(str(e))
    elif run["state"] != "completed":
        resume_col.caption("No checkpoint yet to resume from (one is saved every few steps, see save steps).")
        if resume_col.button("Start again with the same settings", key=f"again-{chosen}"):
            try:
                st.session_state.current_run = runs.submit(runs.spec_of(run), user)
                st.rerun()
            except runs.RunError as e:
                st.error(str(e))
    confirming = st.session_state.get("confirm_remove") == chosen
    if not confirming and remove_col.button(
        "Remove this run…",
        key=f"remove-{chosen}",
        help="Asks first: deletes its folder (checkpoints, result and logs).",
    ):
        st.session_state.confirm_remove = chosen
        st.rerun()
    if confirming:
        st.warning(
            f"Remove run {chosen} ({what(run)})? Its folder is deleted: checkpoints, the trained result and "
            "the logs. There is no undo; export the result first if you want to keep it."
        )
        yes, no = st.columns(2)
        if yes.button(f"Yes, remove run {chosen}", key=f"remove-yes-{chosen}", type="primary"):
            st.session_state.pop("confirm_remove", None)
            try:
                runs.remove(chosen, user)
                st.rerun()
            except runs.RunError as e:
                st.error(str(e))
        if no.button("Cancel", key=f"remove-no-{chosen}"):
            st.session_state.pop("confirm_remove", None)
            st.rerun()

st.divider()
st.subheader("Compare runs")
picked = st.multiselect("Runs to overlay", ids, default=ids[:2] if len(ids) > 1 else ids, format_func=label)
if len(picked) > 1:
    compare([r for r in all_runs if r["id"] in picked])
else:
    st.caption("Pick two or more runs to overlay their loss curves and see which settings differ.")
