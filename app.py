"""The frame: registers the pages and holds the sidebar every page shares.

    make run        # or: .venv/bin/streamlit run app.py
"""
import streamlit as st

from engine.spec import STAGE_NAMES, RunSpec

st.set_page_config(page_title="Tunewise: fine-tune a language model", page_icon="🎛️", layout="wide")

# The plan every page reads and refines: Goal sets the stage, Hardware/Estimate the method and sizes, Data the
# dataset, Train launches it. One typed RunSpec, not a dict of strings.
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
page = st.navigation(pages)



_slot = st.sidebar.empty()


def sidebar() -> None:
    """Drawn before the page (kept if the page stops early) and again after it, so it shows what the page
    just decided rather than the state of the previous rerun."""
    with _slot.container():
        spec = st.session_state.spec
        st.markdown("**Your plan so far**")
        hardware = st.session_state.get("hardware")
        model = "SmolLM2-135M-Instruct (embedded)" if spec.model_name_or_path == "embedded" else spec.model_name_or_path
        st.markdown(
            f"- Stage: **{STAGE_NAMES[spec.stage]}**\n"
            f"- Method: **{spec.method}**\n"
            f"- Model: **{model}**\n"
            f"- Data: **{spec.dataset_name or 'bundled example set'}**\n"
            f"- Hardware: **{getattr(hardware, 'name', None) or 'not chosen yet'}**"
        )
        pipeline = st.session_state.get("recommendation")
        if pipeline is not None:
            st.caption("Recommended pipeline: " + " → ".join(getattr(pipeline, "pipeline", [])))


sidebar()
page.run()
sidebar()
