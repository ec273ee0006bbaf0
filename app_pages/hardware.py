"""Step 2 · Hardware: detect NVIDIA GPUs (NVML) or pick a machine to plan for -> full / LoRA / QLoRA, and why."""

import os

import pandas as pd
import streamlit as st

from engine.estimate import SHOWCASE_RUN, EstimateRequest, gpu_from_hardware, largest_model
from engine.hardware import detect_gpus, load_presets, preset_hardware, this_computer
from engine.recommend import METHOD_NAMES, advise_method, apply_to_spec, lesson, recommend
from engine.runs import executors
from engine.spec import CPU_RUN

HERE = "here"  # the option "this computer"; the others are preset keys from engine/assets/gpus.yaml


# "The largest model I could fine-tune" is worked out by the estimator at one stated setting, not by scaling the
# lesson's 7B table: 2048 tokens, micro-batch 1, gradient checkpointing, LoRA r 16 (the smallest run worth doing).
LARGEST_AT = EstimateRequest(seq=2048, batch=1, grad_ckpt=True)


def largest_estimated(hw, distributed: str = "ddp") -> dict:
    """Method -> the catalog model with the most parameters whose run at LARGEST_AT fits every GPU of hw."""
    req = EstimateRequest(**{**LARGEST_AT.__dict__, "gpus": hw.count, "distributed": distributed})
    return {
        METHOD_NAMES[m]: largest_model(req, hw.vram_gib, m) or "none fits" if b is not None else "not offered here"
        for m, b in advise_method(hw).largest_model_b.items()
    }


def largest_on_this_computer(hw, max_hours: float | None = None) -> dict:
    """On a processor memory is not the limit, time is: the largest catalog model whose showcase-sized run (100
    steps of 8 short examples, the Estimate page's default here) fits this computer's memory, or also trains
    within max_hours. The same estimator and settings as the Estimate page, so the two pages agree."""
    gpu = gpu_from_hardware(hw)
    return {
        METHOD_NAMES[m]: largest_model(SHOWCASE_RUN, hw.vram_gib, m, gpu, max_hours=max_hours) or "none"
        if b is not None
        else "not offered here"
        for m, b in advise_method(hw).largest_model_b.items()
    }


st.title("2 · Hardware")
st.write(
    "**What will you train on?** Memory decides which models and methods fit. We look for NVIDIA GPUs on this "
    "computer; you can also plan for another machine, e.g. one you would rent."
)

if executors.current() == executors.RAY:  # TUNEWISE_CLUSTER: runs train on the machines of a Ray cluster
    cluster = executors.describe()  # the dashboard's HTTP API: no ray import in this process
    st.subheader(f"Runs train on the Ray cluster at {cluster['address']}")
    if cluster["problem"]:
        st.warning(cluster["problem"])
    st.dataframe(
        pd.DataFrame(cluster["nodes"], columns=["node", "head", "gpus", "cpus"]), hide_index=True, width="stretch"
    )
if st.button("Detect again", help="Re-read the GPUs, e.g. after another program freed memory."):
    detect_gpus(refresh=True)
found = detect_gpus()
if found.gpus:
    st.success(
        f"Found {found.count} NVIDIA GPU{'s' if found.count > 1 else ''} · driver {found.driver_version} · "
        f"CUDA {found.cuda_version}"
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "#": g.index,
                    "GPU": g.name,
                    "Memory (GiB)": g.total_gib,
                    "Free (GiB)": g.free_gib,
                    "Used (GiB)": g.used_gib,
                    "Compute capability": f"{g.compute_capability[0]}.{g.compute_capability[1]}",
                    "bf16": "yes" if g.bf16 else "no (needs 8.0+)",
                }
                for g in found.gpus
            ]
        ),
        hide_index=True,
        width="stretch",
    )
here = this_computer()
if not found.gpus:
    runs_on = {"cpu": "Training runs on the processor (CPU).", "mps": "Training runs on this Mac's GPU."}
    st.info(f"{found.note} {runs_on.get(here.kind, '')} You can also plan for another machine below.")
    if found.detail:
        with st.expander("Details"):
            st.write(found.detail)
presets = load_presets()
labels = {HERE: here.name if here.kind != "cuda" else f"This computer: {here.count} × {here.name}"}
labels |= {key: p.name for key, p in presets.items() if not (here.kind == "cpu" and key == "cpu")}
current = st.session_state.get("hardware")
if st.session_state.get("hardware_choice") not in labels:  # first visit, or back from another page
    previous = HERE if current is None or current.detected else current.preset
    st.session_state.hardware_choice = previous if previous in labels else HERE
    st.session_state.hardware_count = current.count if current and not current.detected else 1
choice = st.selectbox("Plan for", list(labels), key="hardware_choice", format_func=labels.get)
count = 1
if choice != HERE and presets[choice].kind == "cuda":
    count = st.number_input("How many of these GPUs?", 1, 8, key="hardware_count")
hw = here if choice == HERE else preset_hardware(choice, int(count))
st.session_state.hardware = hw

a, b, c, d = st.columns(4)
a.metric("Memory per GPU" if hw.kind == "cuda" else "Memory", f"{hw.vram_gib:g} GiB")
if hw.kind == "cpu":  # 16-bit formats and tensor peaks are GPU words: say what a processor is good for
    b.metric("Cores", os.cpu_count() or "unknown", help="Training on a processor uses all of them.")
    c.metric(
        "Speed",
        "slow",
        help=f"About {hw.tflops_bf16:g} TFLOP/s at best: 50-100x below a GPU. Fine for the bundled 135M model "
        "(a few minutes), too slow for billions of parameters.",
    )
else:
    b.metric(
        "bf16",
        "yes" if hw.bf16 else "no",
        help="bfloat16 trains as fast as fp16 but is more stable. NVIDIA "
        "GPUs need compute capability 8.0 (Ampere) or newer.",
    )
    c.metric(
        "Peak speed",
        f"{hw.tflops_bf16:g} TFLOP/s" if hw.tflops_bf16 else "unknown",
        help="Dense 16-bit tensor peak per GPU from the datasheet. Real training reaches 30-50% of it.",
    )
d.metric(
    "Price",
    f"${hw.total_usd_per_hour:.2f}/h" if hw.usd_per_hour is not None else "owned",
    help="Indicative on-demand price for all the GPUs above; check your provider.",
)

advice = advise_method(hw)
st.subheader(f"Recommended method: {METHOD_NAMES[advice.peft]}")
st.markdown("\n".join(f"- {r}" for r in advice.reasons))
for caveat in advice.caveats:
    st.warning(caveat)
st.markdown("**Largest model that fits**" if hw.kind == "cpu" else "**Largest catalog model that fits**")
if hw.kind == "cpu":
    st.table(
        pd.DataFrame(
            [largest_on_this_computer(hw), largest_on_this_computer(hw, max_hours=1.0)],
            index=["Fits in memory", "Trains 100 steps within an hour"],
        )
    )
    st.caption(
        "Catalog models, for a showcase-sized run: 100 steps of 8 short examples (512 tokens at most). On a "
        "processor, memory would hold large models, but each step would take far too long to be useful: the "
        "second row is what trains such a run in an hour or less. The **Estimate** page works it out for your "
        "own model, text length and batch size."
    )
else:
    table = {"One copy per GPU" if hw.count > 1 else "Largest catalog model": largest_estimated(hw)}
    if hw.count > 1:
        table[f"Sharded across the {hw.count} GPUs (FSDP)"] = largest_estimated(hw, "fsdp")
    st.table(pd.DataFrame(list(table.values()), index=list(table)))
    st.caption(
        "Worked out by the estimator for 2048-token examples, one per GPU per step, with gradient checkpointing: "
        "the smallest run worth doing. Longer texts and bigger batches need more; the **Estimate** page checks "
        "your own model, length and batch."
    )
    if hw.count > 1 and table[f"Sharded across the {hw.count} GPUs (FSDP)"] != table["One copy per GPU"]:
        st.info(
            f"With one copy per GPU (DDP) every GPU must hold the whole model, its gradients and optimizer state, "
            f"so {hw.count} GPUs train nothing bigger than one does, only faster. FSDP splits all three "
            f"{hw.count} ways and gathers one layer at a time, so bigger models fit: choose it on the Estimate "
            "or Train page."
        )
st.page_link("app_pages/estimate.py", label="Check what actually fits on the Estimate page", icon="📐")

goals = st.session_state.get("goals")
if goals:  # the Goal page's plan follows the hardware chosen here
    st.session_state.recommendation = recommend(goals, hw)
if st.button(f"Use {METHOD_NAMES[advice.peft]} on this hardware", type="primary"):
    changes = {"method": advice.peft}
    if hw.detected and hw.kind == "cuda":
        changes["num_processes"] = hw.count  # one training process per GPU
    if hw.kind == "cpu":
        changes.update(CPU_RUN)  # a run sized for minutes on a processor
    st.session_state.spec = apply_to_spec(st.session_state.spec, **changes)
    st.success(
        f"Saved: method **{METHOD_NAMES[advice.peft]}**"
        + (f" on {hw.count} GPUs" if changes.get("num_processes", 1) > 1 else "")
        + (
            f", {CPU_RUN['max_steps']} training steps, then one check on examples it never saw (a few minutes "
            "for the bundled SmolLM2-135M model on a laptop; change the steps on the Train page)"
            if hw.kind == "cpu"
            else ""
        )
        + "."
    )

st.divider()
with st.expander("Full fine-tuning, LoRA or QLoRA?"):
    st.table(pd.DataFrame(lesson()["peft"]).set_index("Method"))
    st.caption(
        "LoRA trains small adapter matrices next to frozen weights; QLoRA does the same on a base model "
        "stored in 4 bits. The quality gap is often too small to notice, which is why QLoRA is a common "
        "default on small GPUs."
    )
with st.expander("Exercise: RTX 4090 vs A100 80 GB vs M3 Max 64 GB"):
    rows = []
    for key in ("rtx-4090", "a100-80", "apple-m-64"):
        option = advise_method(preset_hardware(key))
        rows.append(
            {
                "Machine": presets[key].name,
                "Recommended": METHOD_NAMES[option.peft],
                **largest_estimated(preset_hardware(key)),
                "Price": f"${presets[key].usd_per_hour:g}/h" if presets[key].usd_per_hour else "owned",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        "Largest catalog model per method at 2048 tokens, one example per step, with checkpointing (the "
        "estimator). On the same card QLoRA's 4-bit base reaches models several times the size LoRA reaches, and "
        "the A100's 80 GB reach further still. The Mac holds nearly as much as the A100 but has no QLoRA "
        "(bitsandbytes needs NVIDIA) and trains several times slower: fine for LoRA if you can wait. Rent the A100 "
        "when time matters more than the hourly price."
    )
