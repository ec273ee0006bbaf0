"""Step 1 · Goal: what the model should learn -> the training steps in order, the method, and why."""

from pathlib import Path

import pandas as pd
import streamlit as st

from engine import plans, users
from engine.hardware import this_computer
from engine.recommend import METHOD_NAMES, apply_to_spec, compare_dataset, lesson, recommend
from engine.spec import STAGE_NAMES
from ui.datastats import count_rows
from ui.session import model_label, warn_if_planned_elsewhere

LESSON = lesson()
# The lesson's matrix names stages by their acronyms; a newcomer reads them spelled out
LESSON_STAGES = {
    "SFT": "supervised fine-tuning (SFT)",
    "DPO": "preference tuning (DPO)",
    "RLHF": "reward model + reinforcement learning (RLHF)",
    "RAG": "retrieval (RAG): no training, look facts up at answer time",
    "Pretraining": "continued pretraining",
}


def stage_name(stage: str) -> str:
    return STAGE_NAMES[stage][:1].upper() + STAGE_NAMES[stage][1:]


st.title("1 · Goal")  # the sidebar's name: every page is titled by its place in the steps
st.write(
    "**What should the model learn?** Fine-tuning is not one thing: some training adds **skills**, some shapes "
    "**behaviour**. Tick everything you need. We put the training stages in order and tell you why."
)
with st.expander("The three kinds of training, and what each costs"):
    st.table(pd.DataFrame(LESSON["spectrum"]).set_index("Kind"))
    st.caption(
        "Almost every project lives in the last two rows: you start from a model someone already "
        "pretrained, then add skills and shape behaviour."
    )

if users.mode() == "workshop" and (class_plan := plans.class_plan()):
    if st.button(
        "Start from the class plan",
        help="The plan your instructor published: goals, hardware, model "
        "and data. It replaces your current plan; your runs are kept.",
    ):
        from ui.session import apply_plan

        apply_plan(class_plan)
        st.rerun()
if "goals" not in st.session_state:
    st.session_state.goals = []
left, right = st.columns(2)
chosen = []
for i, (key, goal) in enumerate(LESSON["goals"].items()):
    if (left if i % 2 == 0 else right).checkbox(
        goal["label"], value=key in st.session_state.goals, help=goal["help"], key=f"goal_{key}"
    ):
        chosen.append(key)
st.session_state.goals = chosen
if not chosen:
    st.session_state.pop("recommendation", None)
    st.info("Tick at least one goal above to get a plan.")
    st.stop()

hardware = st.session_state.get("hardware") or this_computer()
rec = recommend(chosen, hardware)
st.session_state.recommendation = rec
warn_if_planned_elsewhere(
    "the method and the models suggested below are for the planned machine. To train here, keep the bundled model."
)

st.subheader("Your plan")
st.markdown("#### " + " → ".join(stage_name(s) for s in rec.pipeline))
a, b, c = st.columns(3)
a.metric(
    "Stages",
    len(rec.pipeline),
    help="Trainings one after the other, each starting from the result of the "
    "one before. (Not to be confused with optimizer steps, the Train page's steps.)",
)
b.metric(
    "Method",
    METHOD_NAMES[rec.peft],
    help="How much of the model is trained: all of it (full), a small "
    "adapter (LoRA) or an adapter on a 4-bit base (QLoRA).",
)
c.metric(
    f"Examples for the first stage ({stage_name(rec.data.stage)})",
    f"{rec.data.min_examples:,}–{rec.data.max_examples:,}",
)
planned_for = hardware.name + (f" × {hardware.count}" if hardware.count > 1 else "")
st.caption(
    f"Method chosen for **{planned_for}**"
    + (
        "."
        if "hardware" in st.session_state
        else ", as no hardware is chosen yet. Planning for other hardware? Choose it on the Hardware page."
    )
)

st.markdown("**Why**")
st.table(
    pd.DataFrame(
        [
            {
                "You need": g.label,
                "Training stage": LESSON_STAGES.get(g.primary, g.primary),
                "Or also": LESSON_STAGES.get(g.secondary, g.secondary) or "–",
                "Why": g.why,
            }
            for g in rec.per_goal
        ]
    ).set_index("You need")
)
st.markdown("\n".join(f"- {r}" for r in rec.reasons if r not in {g.why for g in rec.per_goal}))
if rec.consider_rag:
    st.info(
        "📚 **Consider RAG too.** For facts, retrieval (looking the answer up in your documents at question "
        "time) is often more reliable than training them in. Many teams do both."
    )
for alt in rec.alternatives:
    st.info(f"**Plan B: {' → '.join(stage_name(s) for s in alt['pipeline'])}.** {alt['when']}")
st.warning("**Watch out**\n" + "\n".join(f"- {c}" for c in rec.caveats if "RAG" not in c))

if rec.base_models:
    st.subheader("Which model to start from")
    st.markdown(
        "\n".join(
            f"- **{model_label(b['model'])}** · {b['billions']:g}B · {b['licence']} · {b['languages']}  \n  {b['why']}"
            for b in rec.base_models
        )
    )
    st.caption(
        (
            f"On a processor time, not memory, limits the model: the bundled one, and the largest of the offline "
            f"catalog whose 100 steps of 8 short examples train within an hour on **{planned_for}** (the estimator; "
            "the Hardware page's table, for your first stage)."
            if hardware.kind == "cpu"
            else f"Models of the offline catalog that fit **{planned_for}** with {METHOD_NAMES[rec.peft]} (the "
            "estimator, 1024 tokens × 4 with checkpointing)."
        )
        + " Size against the task: a narrow task (one format, one skill) with "
        "a few thousand examples rarely needs more than 8B; broad knowledge or reasoning gains from the largest "
        "that fits. Check the languages your users write in, and the licence before you ship."
    )
current = st.session_state.spec.model_name_or_path
start_from = current
options = [b["model"] for b in rec.base_models]
if current not in options:
    options.insert(0, current)
if len(options) > 1:
    start_from = st.radio(
        "Start from",
        options,
        index=options.index(current),
        format_func=lambda m: model_label(m) + (" (your current choice)" if m == current else ""),
        help="Saved with the plan when you press Use this plan; the Train page can still change it.",
    )

st.subheader("How much data")
for d in rec.data_by_stage:
    st.markdown(f"- **{stage_name(d.stage)}**: {d.min_examples:,}–{d.max_examples:,} {d.unit}. {d.note}")
spec = st.session_state.spec
target = next((d for d in rec.data_by_stage if d.stage == spec.stage), rec.data)
n_examples = None
if spec.dataset_name and Path(spec.dataset_name).is_file():
    n_examples = count_rows(spec.dataset_name, target.stage)
    st.caption(
        f"Your dataset **{Path(spec.dataset_name).name}** has {n_examples:,} usable rows for "
        f"{STAGE_NAMES[target.stage]}."
    )
else:
    n_examples = st.number_input(
        f"How many {target.unit.split(' (')[0]} do you have, or plan to collect, for "
        f"{STAGE_NAMES[target.stage]}? (0 = not sure yet)",
        0,
        100_000_000,
        0,
        step=100,
    )
if n_examples:
    level, sentence = compare_dataset(target, int(n_examples))
    {"low": st.warning, "ok": st.success, "high": st.info}[level](sentence)

if st.button("Use this plan", type="primary"):
    st.session_state.spec = apply_to_spec(spec, stage=rec.pipeline[0], method=rec.peft, model_name_or_path=start_from)
    st.success(
        f"Saved: your first run will be **{STAGE_NAMES[rec.pipeline[0]]}** with "
        f"**{METHOD_NAMES[rec.peft]}**, starting from **{model_label(start_from)}**."
        + (" When it is done, the next stage starts from its result." if len(rec.pipeline) > 1 else "")
    )

if len(rec.pipeline) > 1:
    st.subheader("Run the whole pipeline")
    st.write(
        "Queue every stage now: " + " → ".join(f"**{stage_name(s)}**" for s in rec.pipeline) + ". Each "
        "stage starts by itself when the one before completes, from its result"
        + (", and RL is scored by the reward model the pipeline trains" if "rl" in rec.pipeline else "")
        + ". If a stage fails or is stopped, the rest wait until you resume it on the Runs page."
    )
    chosen_data = {spec.stage: spec.dataset_name} if spec.dataset_name else {}
    st.caption(
        "Data: "
        + "; ".join(
            f"{stage_name(s)}: " + (Path(chosen_data[s]).name if s in chosen_data else "the bundled example set")
            for s in rec.pipeline
        )
        + ". Choose your own files on the Data page."
    )
    planned = spec.max_steps if spec.max_steps > 0 else 0
    steps = st.number_input(
        "Optimizer steps per stage (0 = one whole pass over each stage's data)",
        0,
        1_000_000,
        planned,
        step=10,
        help="Your plan's setting (the Hardware page sets 100 on a computer "
        "without a GPU). Each step trains on one batch of examples.",
    )
    if st.button("Run this pipeline", type="primary", key="run_pipeline"):
        import dataclasses

        from engine import runs
        from ui.session import actor

        stages = [
            dataclasses.replace(
                spec,
                stage=s,
                method=rec.peft,
                model_name_or_path=start_from,
                init_from="",
                output_dir="",
                dataset_name=chosen_data.get(s, ""),
                max_steps=int(steps) or -1,
                extra={k: v for k, v in spec.extra.items() if k not in ("reward_model", "reward_checks")},
            )
            for s in rec.pipeline
        ]
        try:
            ids = runs.submit_chain(stages, actor())
        except runs.RunError as e:
            st.error(str(e))
        else:
            st.session_state.current_run = ids[0]
            st.success(
                f"Queued as runs {', '.join(map(str, ids))}. The first starts when a slot is free; watch "
                "them on the Runs page."
            )
            st.page_link("app_pages/runs.py", label="Watch the pipeline on the Runs page", icon="📈")

st.divider()
with st.expander("Which method for which use case"):
    st.table(pd.DataFrame(LESSON["matrix"]).set_index("Use case"))
with st.expander("DPO or RLHF?"):
    st.table(pd.DataFrame(LESSON["rlhf_vs_dpo"]).set_index(""))
    st.caption("Start with DPO. Move to RLHF only when DPO proves insufficient.")
with st.expander("Common misconceptions"):
    for m in LESSON["misconceptions"]:
        st.markdown(f"- *“{m['myth']}”* {m['truth']}")
st.page_link("app_pages/hardware.py", label="Next: what will you train on?", icon="🖥️")
