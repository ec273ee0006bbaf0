"""The frame: the login (workshop mode), the pages, and the sidebar every page shares.

make run        # personal mode: this computer only (127.0.0.1), no login
make workshop   # workshop mode: every network interface, behind a login (python -m engine.users setup first)
"""

import streamlit as st

from engine import users
from engine.recommend import METHOD_NAMES
from engine.spec import STAGE_NAMES, RunSpec
from ui import session

st.set_page_config(page_title="Tunewise: fine-tune a language model", page_icon="🎛️", layout="wide")

# Who acts: in workshop mode the logged-in account (the login form otherwise), else the machine's one person.
user = session.require_login() if users.mode() == "workshop" else users.OWNER
# The plan every page reads and refines: Goal sets the stage, Hardware/Estimate the method and sizes, Data the
# dataset, Train launches it. One typed RunSpec, kept server-side per user so a reload finds it again.
session.restore_plan(user)
if "spec" not in st.session_state:
    st.session_state.spec = RunSpec()

pages = {
    "Plan": [
        st.Page("app_pages/goal.py", title="1 · Goal", icon="🎯", default=True),
        st.Page("app_pages/hardware.py", title="2 · Hardware", icon="🖥️"),
        st.Page("app_pages/estimate.py", title="3 · Estimate", icon="📐"),
        st.Page("app_pages/data.py", title="4 · Data", icon="📄"),
    ],
    "Train": [
        st.Page("app_pages/train.py", title="5 · Train", icon="🚀"),
        st.Page("app_pages/runs.py", title="6 · Runs", icon="📈"),
        st.Page("app_pages/try_export.py", title="7 · Try & Export", icon="🧪"),
    ],
}
if users.mode() == "workshop" and user.sees_all:
    pages["Class"] = [st.Page("app_pages/instructor.py", title="Class", icon="🧑‍🏫")]
elif users.mode() == "workshop":  # a student typing /instructor gets the page's sentence, not "Page not found"
    pages["Train"].append(st.Page("app_pages/instructor.py", title="Class", icon="🧑‍🏫", visibility="hidden"))
page = st.navigation(pages)

_slot = st.sidebar.empty()


def sidebar() -> None:
    """Drawn before the page (kept if the page stops early) and again after it, so it shows what the page
    just decided rather than the state of the previous rerun."""
    with _slot.container():
        if users.mode() == "workshop":
            st.markdown(f"Logged in as **{user.name}** ({user.role})")
        spec = st.session_state.spec
        st.markdown("**Your plan so far**")
        if not st.session_state.get("goals"):
            st.caption("Nothing chosen yet: these are the defaults. Start with **1 · Goal**.")
        hardware = st.session_state.get("hardware")
        model = session.model_label(spec.model_name_or_path)
        st.markdown(
            f"- Stage: **{STAGE_NAMES[spec.stage]}**\n"
            f"- Method: **{METHOD_NAMES.get(spec.method, spec.method)}**\n"
            f"- Model: **{model}**\n"
            f"- Data: **{spec.dataset_name or 'bundled example set'}**\n"
            f"- Hardware: **{getattr(hardware, 'name', None) or 'not chosen yet'}**"
        )
        pipeline = st.session_state.get("recommendation")
        if pipeline is not None:
            st.caption("Recommended stages: " + " → ".join(STAGE_NAMES[s] for s in getattr(pipeline, "pipeline", [])))


sidebar()
if users.mode() == "workshop":
    session.logout_button()
try:
    page.run()
finally:  # also when the page ended early with st.stop() or st.rerun(): the plan is kept server-side
    session.save_plan(user)
sidebar()
