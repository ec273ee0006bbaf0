"""Step 4: choose the data, check it for the plan's stage, and see what the model will train on.

Validation runs here (pure Python, fast); token statistics need a tokenizer, so they run in a subprocess
(ui/datastats.py, shared with the Estimate page) and are cached by file, modification time and settings.
"""

import dataclasses

import pandas as pd
import plotly.express as px
import streamlit as st

from engine import access, paths
from engine.data import BUNDLED_ABOUT, DataError, bundled, check, guidance, remove_upload, save_upload, uploads
from engine.datafile import max_upload_mb
from engine.datastats import mask_html
from engine.spec import STAGE_NAMES, RunSpec
from ui.datastats import cached_stats, file_version, tokenizer_of
from ui.session import acting_name, actor

SOURCES = ("Bundled example set", "Upload a file", "A file on this machine")


@st.cache_data(show_spinner="Checking the file…", max_entries=32)
def cached_check(path: str, stage: str, version: tuple) -> dict:
    return check(path, stage).to_dict()


def problems_table(items: list, count: int, kind: str):
    rows = [{"line": str(i["line"] or ""), kind: i["message"]} for i in items]  # one type per column: Arrow
    if not any(r["line"] for r in rows):  # notes about the whole file have no line: no empty column
        rows = [{kind: r[kind]} for r in rows]
    st.table(pd.DataFrame(rows))  # a table wraps long messages; a dataframe would cut them off
    if count > len(items):
        st.caption(f"… and {count - len(items):,} more {kind}s like these. Fix the first ones; they often repeat.")


if "spec" not in st.session_state:  # a deep link on a fresh server can run this page before app.py (see note)
    st.session_state.spec = RunSpec()
spec = st.session_state.spec
user = actor()
acting = acting_name(user)  # whose folder uploads go to; --as for the subprocess
st.title("4 · Data")
st.markdown(
    f"Data for **{STAGE_NAMES[spec.stage]}** "
    + (
        "(the stage chosen on the Goal page)"
        if st.session_state.get("goals")
        else "(the default; the Goal page sets it)"
    )
    + ". Every problem is caught "
    "here, before any training time is spent."
)

source = st.radio("Where is your data?", SOURCES, horizontal=True, key="data_source")
path = None
if source == SOURCES[0]:
    path = bundled(spec.stage)
    st.caption(BUNDLED_ABOUT[spec.stage])
elif source == SOURCES[1]:
    upload = st.file_uploader(
        f"JSONL, JSON, CSV or Parquet, up to {max_upload_mb():,.0f} MB",
        type=["jsonl", "json", "csv", "tsv", "parquet", "txt"],
        key="data_upload",
    )
    if upload is not None:
        try:
            path = save_upload(upload.name, upload.getvalue(), acting)
        except DataError as e:
            st.error(str(e))
    kept = uploads(acting)
    if kept:
        with st.expander(
            f"Your uploads ({len(kept)} file{'s' * (len(kept) != 1)}, {sum(u['bytes'] for u in kept) / 2**20:,.1f} MB)"
        ):
            for u in kept:
                name_col, remove_col = st.columns([5, 1])
                name_col.write(f"`{u['name']}` · {u['bytes'] / 2**20:,.2f} MB")
                if remove_col.button("Remove", key=f"remove_upload_{u['name']}"):
                    try:
                        remove_upload(u["name"], acting)
                        st.rerun()
                    except DataError as e:
                        st.error(str(e))
else:
    typed = st.text_input(
        "Path of a data file",
        key="data_path",
        placeholder="/home/me/tasks.jsonl" if user.role == "owner" else "shared/data/tasks.jsonl",
    )
    if user.role != "owner":
        st.caption(
            f"Files in your own folder or the class's shared folder ({paths.shared_dir()}); others' files "
            "cannot be opened."
        )
    if typed.strip():
        try:
            path = access.confine(typed, user, "data file")
        except access.AccessError as e:
            st.error(str(e))

if path is None:
    st.info(
        "Choose the bundled set, upload a file, or type a path. Your plan is unchanged until you press 'Use this data'."
    )
    st.stop()

try:
    report = cached_check(str(path), spec.stage, file_version(path))
except Exception as e:  # noqa: BLE001 - a broken file must never take the page (or the plan) down
    report = {
        "ok": False,
        "errors": [{"line": None, "message": f"the file could not be read: {e}"}],
        "error_count": 1,
        "warnings": [],
        "warning_count": 0,
        "rows": 0,
        "format": "",
        "file_format": "",
    }

cols = st.columns([1, 2, 1, 1])
cols[0].metric("Usable rows", f"{report['rows']:,}")
cols[1].metric("Layout", report["format"] or "not recognised")
cols[2].metric("File type", report["file_format"] or "?")
cols[3].metric("Problems", f"{report['error_count']:,}")
if report["error_count"]:
    st.error(
        f"**{path.name}** cannot be used for {STAGE_NAMES[spec.stage]} yet: {report['error_count']:,} problem(s). "
        "Line numbers are lines of the file."
    )
    problems_table(report["errors"], report["error_count"], "error")
if report["warning_count"]:
    notes = report["warning_count"]
    with st.expander(f"{notes} note{'s' if notes > 1 else ''} about the file", expanded=not report["error_count"]):
        problems_table(report["warnings"], notes, "note")
if not report["ok"]:
    st.info("Your plan is unchanged: fix the file and it is checked again, or choose another source.")
    st.stop()

note = guidance(spec.stage, report["rows"])
(st.success if note["level"] == "ok" else st.warning)(note["message"])

st.subheader("What the model sees")
stats = cached_stats(str(path), spec.stage, spec.max_length, file_version(path), tokenizer_of(spec), acting)
if not stats.get("ok"):
    st.warning(f"No token statistics: {stats.get('error')}")
else:
    left, right = st.columns([3, 2])
    figure = px.histogram(
        x=stats["lengths"],
        nbins=40,
        labels={"x": "tokens per example"},
        title=f"Token lengths ({stats['sampled']:,} of {stats['rows']:,} rows)",
    )
    figure.add_vline(
        x=spec.max_length, line_dash="dash", line_color="red", annotation_text=f"maximum length {spec.max_length}"
    )
    figure.update_layout(yaxis_title="examples", height=320, margin={"t": 40, "b": 10})
    left.plotly_chart(figure, width="stretch")
    right.metric(
        "Cut off at the maximum length",
        f"{stats['truncated_share']:.1%}",
        help=f"Share of examples longer than the maximum length ({spec.max_length} tokens); their ends "
        "are cut off in training.",
    )
    right.metric("Median / 95th percentile / longest", f"{stats['p50']} / {stats['p95']} / {stats['max']}")
    right.metric("Tokens in the file (estimate)", f"{stats['total_tokens_estimate']:,}")
    if stats["truncated_share"] > 0.05:
        right.warning(
            f"Raise the sequence length on the Estimate page above {stats['p95']} to keep 95% whole, or "
            "shorten the examples."
        )
    st.markdown(f"**Loss mask.** {stats['mask_rule']} Green tokens count toward the loss, grey ones are context.")
    st.caption(
        "The chat template wraps each example the way the model was taught to read conversations: turn markers, "
        "and for some models (the bundled SmolLM2 among them) a default system prompt, the short line saying who "
        "the assistant is. The same wrapping is used when you try the model after training, so it is part of "
        "what the model learns to expect."
    )
    for number, example in enumerate(stats["examples"], start=1):
        with st.expander(f"Example {number} as the model sees it (chat template applied)", expanded=number == 1):
            st.markdown(mask_html(example["tokens"]), unsafe_allow_html=True)

chosen = "" if source == SOURCES[0] else str(path)
if spec.dataset_name == chosen:
    st.success("Your plan uses this data.")
    st.page_link("app_pages/train.py", label="Next: start training on the Train page", icon="🚀")
elif st.button("Use this data", type="primary"):
    st.session_state.spec = dataclasses.replace(spec, dataset_name=chosen)
    st.rerun()
