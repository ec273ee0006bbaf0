"""Runs: every run on this machine, its place in the queue, and a live view of the one you pick."""
import time

import streamlit as st

from engine import runs
from engine import monitor, rundir
from ui.monitor import compare, live_run

st.title("Runs")
st.caption("Runs are kept in a registry on this machine. They keep training when you close the browser; come "
           "back any time. One run per GPU at a time; the others wait in submission order.")

all_runs = runs.list_runs()
if not all_runs:
    st.info("No runs yet. Start one on the Train page.")
    st.page_link("app_pages/train.py", label="Go to Train", icon="🚀")
    st.stop()

me = st.session_state.get("owner", "me")


def when(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else ""


table = [{"id": r["id"], "who": r["owner"] if r["owner"] == me else "someone else", "state": r["state"],
          "queue position": r["position"] or "", "stage": r["stage"], "method": r["method"],
          "submitted": when(r["submitted_at"]), "finished": when(r["finished_at"])} for r in reversed(all_runs)]
st.dataframe(table, hide_index=True, use_container_width=True)

queued = [r for r in all_runs if r["state"] == "queued"]
if queued:
    running = [r for r in all_runs if r["state"] == "running"]
    etas = [monitor.progress(rundir.read_status(r["run_dir"]), rundir.read_metrics(r["run_dir"])).eta_s
            for r in running]
    known = [e for e in etas if e is not None]
    soonest = f"; the next slot frees in about {monitor.format_seconds(min(known))}" if known else ""
    mine = [r for r in queued if r["owner"] == me]
    ahead = f"Your first waiting run is number {mine[0]['position']} in line" if mine else "Runs are waiting"
    st.info(f"{ahead}: {len(running)} running, {len(queued)} waiting{soonest}.")

ids = [r["id"] for r in reversed(all_runs)]
default = ids.index(st.session_state.current_run) if st.session_state.get("current_run") in ids else 0
chosen = st.selectbox("Watch run", ids, index=default, format_func=lambda i: f"run {i}")
live_run(chosen)

try:
    run = runs.get(chosen)
except runs.RunError as e:  # removed from the command line meanwhile
    st.warning(str(e))
    st.stop()
if run["state"] in ("stopped", "failed"):
    if st.button("Resume from the last checkpoint", key=f"resume-{chosen}"):
        try:
            runs.resume(chosen)
            st.rerun()
        except runs.RunError as e:
            st.error(str(e))

st.divider()
st.subheader("Compare runs")
picked = st.multiselect("Runs to overlay", ids, default=ids[:2] if len(ids) > 1 else ids,
                        format_func=lambda i: f"run {i}")
if picked:
    compare([r for r in all_runs if r["id"] in picked])
