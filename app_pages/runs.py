"""Runs: your runs (every run, for an instructor), your place in the fair queue, and a live view of the one you
pick."""
import time

import streamlit as st

from engine import monitor, runs, users
from engine.runs import executors
from ui.monitor import compare, live_run
from ui.session import actor

user = actor()
st.title("Runs")
workshop = users.mode() == "workshop"
st.caption("Runs keep training when you close the browser; come back any time. One run per GPU at a time; "
           + ("waiting runs take turns across students, so everyone's first run starts before anyone's second."
              if workshop else "the others wait in submission order."))

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


table = [{"id": r["id"], **({"who": r["owner"]} if user.sees_all else {}), "state": r["state"],
          "queue position": r["position"] or "", "starts": starts_in(r), "stage": r["stage"], "method": r["method"],
          "submitted": when(r["submitted_at"]), "finished": when(r["finished_at"]), "where": r["where"]}
         for r in reversed(all_runs)]
st.dataframe(table, hide_index=True, use_container_width=True)

mine = [r for r in all_runs if r["position"] and r["owner"] == user.name]
if mine:
    first = min(mine, key=lambda r: r["position"])
    st.info(f"Your first waiting run (run {first['id']}) is number {first['position']} in line; it should start "
            f"{starts_in(first)}.")

ids = [r["id"] for r in reversed(all_runs)]
default = ids.index(st.session_state.current_run) if st.session_state.get("current_run") in ids else 0
chosen = st.selectbox("Watch run", ids, index=default, format_func=lambda i: f"run {i}")
live_run(chosen)

try:
    run = runs.get(chosen, user)
except runs.RunError as e:  # removed from the command line meanwhile
    st.warning(str(e))
    st.stop()
if run["state"] in ("stopped", "failed", "completed"):
    resume_col, remove_col = st.columns(2)
    if run["state"] != "completed" and resume_col.button("Resume from the last checkpoint", key=f"resume-{chosen}"):
        try:
            runs.resume(chosen, user)
            st.rerun()
        except runs.RunError as e:
            st.error(str(e))
    if remove_col.button("Remove this run", key=f"remove-{chosen}", help="Deletes its folder: checkpoints, result "
                         "and logs. There is no undo."):
        try:
            runs.remove(chosen, user)
            st.rerun()
        except runs.RunError as e:
            st.error(str(e))

st.divider()
st.subheader("Compare runs")
picked = st.multiselect("Runs to overlay", ids, default=ids[:2] if len(ids) > 1 else ids,
                        format_func=lambda i: f"run {i}")
if picked:
    compare([r for r in all_runs if r["id"] in picked])
