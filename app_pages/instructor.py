"""Class (instructors only): every run with its owner, the GPUs over time, the roster, quotas and the class plan."""

import json
import time

import pandas as pd
import plotly.express as px
import streamlit as st

from engine import monitor, plans, rundir, runs, users
from engine.hardware import gpu_usage
from engine.runs import queue
from ui.session import actor, current_plan

user = actor()
if not user.sees_all:  # the frame lists this page for instructors only; the engine refuses students anyway
    st.info("The Class page is the instructor's: it shows the whole class's runs and accounts.")
    st.page_link("app_pages/goal.py", label="Go to your plan: 1 · Goal", icon="🎯")
    st.stop()
st.title("Class")
gpus_here = runs.gpu_count()  # without an NVIDIA GPU a run's slot is the processor, not "GPU 0"


@st.fragment(run_every=5.0)
def class_runs() -> None:
    rows = runs.list_runs(user)
    active = [r for r in rows if r["state"] in ("queued", "running")]
    st.subheader(
        f"Runs: {sum(r['state'] == 'running' for r in rows)} training, "
        f"{sum(r['state'] == 'queued' for r in rows)} waiting, {len(rows)} in all"
    )
    table = []
    for r in reversed(rows):
        metrics = rundir.read_metrics(r["run_dir"]) if r["state"] == "running" else []
        memory = monitor.series(metrics, "memory_gib")[1]
        table.append(
            {
                "id": r["id"],
                "owner": r["owner"],
                "state": r["state"],
                "queue": r["position"] or "",
                "GPU": (",".join(str(s) for s in json.loads(r["slots"])) if gpus_here else "CPU") if r["slots"] else "",
                "memory GiB": f"{memory[-1]:.1f}" if memory else "",
                "elapsed": monitor.format_seconds((r["finished_at"] or time.time()) - r["started_at"])
                if r["started_at"]
                else "",
                "stage": r["stage"],
                "method": r["method"],
            }
        )
    if table:
        st.dataframe(table, hide_index=True, use_container_width=True)
    else:
        st.caption("No runs yet: each one a student starts appears here, with its owner and a Stop button.")
    if active:
        left, right = st.columns([3, 1])
        chosen = left.selectbox(
            "Stop a run",
            [r["id"] for r in active],
            format_func=lambda i: next(f"run {r['id']} of {r['owner']} ({r['state']})" for r in active if r["id"] == i),
        )
        if right.button("Stop it", type="secondary"):
            runs.stop(chosen, user)
            st.rerun()

    samples = st.session_state.setdefault("gpu_samples", [])
    now = pd.Timestamp.now()
    samples += [{**g, "time": now} for g in gpu_usage()]
    del samples[: -720 * 8]  # an hour at one sample per 5 s, for up to 8 GPUs
    if samples:
        frame = pd.DataFrame(samples)
        frame["GPU"] = frame["gpu"].astype(str)
        left, right = st.columns(2)
        left.plotly_chart(
            px.line(frame, x="time", y="used_gib", color="GPU", title="GPU memory in use (GiB)", height=280),
            use_container_width=True,
        )
        right.plotly_chart(
            px.line(frame, x="time", y="util_percent", color="GPU", title="GPU utilisation (%)", height=280),
            use_container_width=True,
        )
        st.caption("Sampled from NVML every 5 seconds while this page is open.")
    else:
        st.caption("No NVIDIA GPU on this server: runs train on the CPU, one at a time.")


class_runs()

st.subheader("Roster")
# The actions below rerun the page, so the table shows what they changed; what they made is shown once after it
news = st.session_state.pop("roster_news", {})
roster = users.list_users()
owners = [r["owner"] for r in runs.list_runs(user)]  # once, not once per student
st.dataframe(
    [
        {
            "name": u["name"],
            "role": u["role"],
            "password": "one-time (not changed yet)" if u["must_change"] else "chosen",
            "runs": owners.count(u["name"]),
        }
        for u in roster
    ],
    hide_index=True,
    use_container_width=True,
)
with st.form("add_students", clear_on_submit=True):
    names = st.text_area("Add students: one name a line", placeholder="ana\nben\nchloe")
    add = st.form_submit_button("Create accounts")
if add:
    made, problems = [], []
    taken = {u["name"] for u in roster}
    for name in [n.strip() for n in names.splitlines() if n.strip()]:
        try:
            if users.normalize(name) in taken:  # engine.users says it in the command line's words (`reset NAME`)
                problems.append(
                    f"There is already an account '{users.normalize(name)}'. Choose another name, or choose it "
                    "under Account below and press **New one-time password**."
                )
                continue
            account, password = users.add(name, by=user)
            made.append({"name": account.name, "one-time password": password})
        except users.AuthError as e:
            problems.append(str(e))
    st.session_state.roster_news = {"made": made, "problems": problems}
    st.rerun()
for problem in news.get("problems", []):
    st.error(problem)
if news.get("made"):
    made = news["made"]
    st.success(
        f"{len(made)} account(s) made. Hand each student their line; they choose their own password "
        "at the first login. The passwords are not shown again."
    )
    st.dataframe(made, hide_index=True)
    st.download_button(
        "Download as CSV", pd.DataFrame(made).to_csv(index=False), "accounts.csv", "text/csv", on_click="ignore"
    )
left, right = st.columns(2)
student_names = [u["name"] for u in roster if u["role"] == "student"]
who = left.selectbox("Account", student_names, index=None, placeholder="choose a student")
if who and left.button("New one-time password"):
    st.session_state.roster_news = {"reset": (who, users.reset(who, by=user))}
    st.rerun()
if "reset" in news:
    name, password = news["reset"]
    st.info(f"New one-time password for **{name}**: `{password}` (their logins end now).")
if who and right.button("Remove account", help="The account can no longer log in; its runs and files stay."):
    users.remove(who, by=user)
    st.rerun()

st.subheader("Quotas for every student")
q = queue.class_quota()
with st.form("quotas"):
    a, b, c, d, e = st.columns(5)
    waiting = a.number_input("Runs waiting at once", 0, 100, q.max_waiting or 0, help="0 = no limit")
    running = b.number_input("Runs training at once", 0, 100, q.max_running or 0, help="0 = no limit")
    minutes = c.number_input("Longest run (minutes)", 0.0, 10_000.0, float(q.max_minutes or 0), help="0 = no limit")
    steps = d.number_input("Longest run (steps)", 0, 10_000_000, q.max_steps or 0, help="0 = no limit")
    gpus = e.number_input("GPUs per run", 0, 64, q.max_gpus or 0, help="0 = no limit")
    if st.form_submit_button("Save quotas"):
        queue.set_quota(
            None,
            max_waiting=waiting,
            max_running=running,
            max_minutes=minutes,
            max_steps=steps,
            max_gpus=gpus,
            by=user,
        )
        st.success("Saved. New runs follow these limits; runs already waiting keep their place.")

st.subheader("Class plan")
st.write(
    "Students start from the class plan when they first log in (and can go back to it from the Goal page). "
    "Build the plan on the Goal, Hardware, Estimate and Data pages, then publish it here."
)
mine = current_plan()
spec = plans.spec_of(mine)
st.caption(
    f"Your current plan: {spec.stage} · {spec.method} · model {spec.model_name_or_path} · data "
    f"{spec.dataset_name or 'the bundled set'} · goals {', '.join(mine['goals']) or 'none'}"
)
if st.button("Publish my current plan as the class plan", type="primary"):
    plans.publish_class_plan(mine, by=user)
    st.success("Published. Students who log in from now on start from it.")
