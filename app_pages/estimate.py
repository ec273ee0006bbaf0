"""Step 3 · Estimate: memory, time and cost of the planned run, before it is launched (engine/estimate.py)."""

import dataclasses
import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import catalog
from engine.estimate import (
    SHOWCASE_RUN,
    EstimateError,
    EstimateRequest,
    checkpointing_words,
    compiled,
    estimate_run,
    gpu_from_hardware,
    hours,
    largest_model,
    mean_tokens,
    peak_gib,
    trained_as,
)
from engine.hardware import load_presets
from engine.recommend import METHOD_NAMES, advise_method, apply_to_spec
from engine.spec import DISTRIBUTED, DISTRIBUTED_NAMES, METHODS, STAGE_NAMES, RunSpec
from engine.train.kernels import liger_wanted
from engine.vram import OPTIMIZERS
from ui.datastats import passes_over, plan_stats
from ui.session import acting_name, actor, model_label, warn_if_planned_elsewhere

LESSON_7B = {"full": "60+ GB", "lora": "16 GB", "qlora": "6 GB"}  # the lesson's PEFT comparison table
SEVEN_B = "mistralai/Mistral-7B-v0.3"
OPTIMIZER_NAMES = {
    "adamw_torch": "AdamW (standard)",
    "adamw_torch_fused": "AdamW (standard, fused: the default)",
    "adamw_8bit": "AdamW 8-bit (less GPU memory; NVIDIA only)",
    "paged_adamw_8bit": "AdamW 8-bit, paged (the least GPU memory; NVIDIA only)",
    "sgd": "SGD (no optimizer state; rarely trains as well)",
}
CPU_PARTS = {"CUDA context": "PyTorch and Python themselves", "allocator reserve": "memory allocator's reserve"}

if "spec" not in st.session_state:  # a deep link can run this page before app.py sets it
    st.session_state.spec = RunSpec()
spec = st.session_state.spec

st.title("3 · Estimate")
warn_if_planned_elsewhere("these figures are for the planned machine, not for where your runs train.")
st.write(
    "**Will it fit, how long, what will it cost?** Memory is what stops most first runs. This estimate is "
    "arithmetic on the model's published shape, checked against 44 real training runs on an H200 (135M to 8B "
    "parameters, eight model families): half of them came within 2.4 % of the memory the GPU showed."
)

hardware = st.session_state.get("hardware")
if hardware is None:
    st.info("No hardware chosen yet: choose it on the Hardware page, or pick a GPU to plan for here.")
    st.page_link("app_pages/hardware.py", label="Choose hardware on the Hardware page", icon="🖥️")
    presets = {k: p for k, p in load_presets().items() if p.kind == "cuda"}
    key = st.selectbox(
        "Plan for",
        list(presets),
        format_func=lambda k: presets[k].name,
        index=list(presets).index("rtx-4090") if "rtx-4090" in presets else 0,
    )
    hardware = presets[key].hardware()
gpu = gpu_from_hardware(hardware)
on_gpu = getattr(hardware, "kind", "cuda") == "cuda"
memory_word = "GPU memory" if on_gpu else "RAM" if hardware.kind == "cpu" else "unified memory"
st.caption(
    f"Hardware: **{gpu.count} × {gpu.name}**, {gpu.vram_gib:g} GiB each"
    if on_gpu
    else f"Hardware: **{gpu.name}**. The memory figure counts what training needs in this computer's RAM; it "
    "was checked on GPUs, so here it is a rough guide, on the high side."
)

advice = advise_method(hardware)  # what the Hardware page offers; QLoRA is not offered without an NVIDIA GPU
offered = [m for m in METHODS if advice.largest_model_b[m] is not None]
models = catalog.names()
own = spec.model_name_or_path
options = ["embedded"] + models + ([own] if own not in models and own != "embedded" else [])
left, right = st.columns(2)
model = left.selectbox(
    "Model",
    options,
    index=options.index(own) if own in options else 0,
    format_func=model_label,
)
stage = left.selectbox(
    "Stage", list(STAGE_NAMES), index=list(STAGE_NAMES).index(spec.stage), format_func=STAGE_NAMES.get
)
method = left.radio(
    "Method",
    offered,
    index=offered.index(spec.method if spec.method in offered else advice.peft),
    horizontal=True,
    format_func=METHOD_NAMES.get,
)
if len(offered) < len(METHODS):
    left.caption(next((c for c in advice.caveats if c.startswith("QLoRA")), "QLoRA is not offered here."))
seq_choices = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
seq = right.select_slider(
    "Sequence length (tokens)",
    seq_choices + ([spec.max_length] if spec.max_length not in seq_choices else []),
    value=spec.max_length,
)
batch = right.slider(
    "Micro-batch (examples per GPU per step)" if on_gpu else "Batch (examples per step)",
    1,
    64,
    min(spec.per_device_train_batch_size, 64),
)
ckpt = right.checkbox(
    "Gradient checkpointing",
    spec.gradient_checkpointing,
    help="Keeps one tensor per layer and recomputes the rest: far less memory, ~30 % slower.",
)
lora_r = right.select_slider(
    "LoRA rank r",
    [4, 8, 16, 32, 64, 128],
    value=spec.lora_r if spec.lora_r in (4, 8, 16, 32, 64, 128) else 16,
    disabled=method == "full",
)
optimizer = left.selectbox(
    "Optimizer",
    list(OPTIMIZERS),
    index=list(OPTIMIZERS).index(spec.optim) if spec.optim in OPTIMIZERS else 0,
    format_func=lambda o: OPTIMIZER_NAMES.get(o, o),
    help="How the weights are updated. AdamW (the default) suits almost every run; the 8-bit ones save GPU memory.",
)
distributed, offload = "ddp", False
if gpu.count > 1:  # several GPUs: a whole copy on each (DDP) or the model sharded across them (FSDP)
    distributed = left.radio(
        f"How the {gpu.count} GPUs share the model",
        list(DISTRIBUTED),
        index=DISTRIBUTED.index(spec.distributed),
        horizontal=True,
        format_func=DISTRIBUTED_NAMES.get,
        help="DDP is simplest and fastest when the model fits one GPU. FSDP splits the weights, gradients and "
        "optimizer state between the GPUs and gathers one layer at a time, so a model too big for one GPU trains.",
    )
    offload = left.checkbox(
        "Keep the shards in CPU memory (FSDP offload; slower, for the largest models)",
        spec.fsdp_offload,
        disabled=distributed != "fsdp",
    )
# The plan's data (the stage's bundled set unless the Data page chose a file): its rows and its tokens per example,
# cut at the sequence length. A run capped at max_steps sees steps x batch x accumulation examples.
user = actor()
stats = plan_stats(spec, stage, acting_name(user))
accum = spec.gradient_accumulation_steps
planned = spec.max_steps * spec.per_device_train_batch_size * accum if spec.max_steps > 0 else None
default_examples = planned or (stats["rows"] if stats else 2000)
examples = left.number_input(
    "Examples the run will see (steps × batch)",
    1,
    10_000_000,
    default_examples,
    step=500,
    help="The plan's steps x batch x accumulation when it sets max steps; else the rows of "
    "its data. Saved as the plan's number of steps if you change it.",
)
tokens_each = left.number_input(
    "Average tokens per example (from your data; 0 = every example fills the sequence length)",
    0,
    1_000_000,
    mean_tokens(stats["lengths"], seq) if stats else 0,
    help="Measured on the plan's data: a what-if here, not a setting of the plan. It sets "
    "the time, not the memory: the longest batch decides the memory.",
)

epochs = spec.num_train_epochs if spec.max_steps <= 0 else 1.0  # max steps already counted the examples
try:
    req = EstimateRequest(
        model=model,
        stage=stage,
        method=method,
        seq=seq,
        batch=batch,
        grad_ckpt=ckpt,
        lora_r=lora_r,
        optimizer=optimizer,
        examples=int(examples),
        epochs=epochs,
        tokens_per_example=min(int(tokens_each), seq),
        gpus=gpu.count,
        distributed=distributed,
        offload=offload and distributed == "fsdp",
        liger=liger_wanted(spec.extra, method) if on_gpu else False,  # a GPU run's kernels (engine/train/kernels.py)
    )
    req = dataclasses.replace(req, compile=compiled(req, gpu))  # engine.train's choice on this GPU (long runs)
    est = estimate_run(req, gpu)
except EstimateError as e:
    st.error(str(e))
    st.stop()

a, b, c, d = st.columns(4)
a.metric(
    (f"Peak {memory_word}" + (" per GPU" if gpu.count > 1 else "")) if on_gpu else f"Peak memory ({memory_word})",
    f"{est.peak_gib:.1f} GiB",
    f"{est.headroom_gib:+.1f} GiB headroom",
    delta_color="green" if est.fits else "red",  # headroom short of the need is bad news, in red
    delta_arrow="off",
)
b.metric("Largest micro-batch" if on_gpu else "Largest batch", est.max_batch or "none")
c.metric("Largest sequence", est.max_seq or "none")
chosen = trained_as(req, gpu) if on_gpu else None  # the checkpointing training turns on by itself to fit
timed = estimate_run(chosen, gpu) if chosen else est  # the time of the run as it will train
d.metric(
    "Time · cost" if est.fits or chosen else "Time · cost as set",
    ("< 1 min" if timed.hours * 60 < 0.5 else f"{timed.hours * 60:.0f} min")
    if timed.hours < 1
    else f"{timed.hours:.1f} h",
    ("owned GPU" if on_gpu else "your computer")
    if timed.usd is None
    else ("< $0.01" if timed.usd < 0.005 else f"${timed.usd:,.2f}"),
    delta_color="off",
    delta_arrow="off",
    help=None
    if est.fits or chosen
    else "It does not fit as set: this is the time these settings would take. The change that makes it fit "
    "(below) changes it too.",
)
has = f"the GPU has {gpu.vram_gib:g} GiB" if on_gpu else f"this computer has {gpu.vram_gib:g} GiB of {memory_word}"
if chosen:
    slower = hours(chosen, gpu)[1] / hours(dataclasses.replace(req, grad_ckpt=False), gpu)[1] - 1
    itself = (
        f"checkpoints by itself only as much as it must to fit (it keeps 10 % of the GPU spare): here gradient "
        f"checkpointing {checkpointing_words(chosen)}, {peak_gib(chosen):.1f} GiB, about {max(slower, 0):.0%} slower "
        "than without."
    )
    if est.fits:  # fits the whole card, not with the trainer's margin
        st.success(f"Fits, with little to spare: {est.peak_gib:.1f} of {gpu.vram_gib:g} GiB. Training {itself}")
    else:
        st.warning(f"Needs {est.peak_gib:.1f} GiB as set; {has}. Training on a GPU {itself}")
elif est.fits:
    st.success(f"Fits: {est.peak_gib:.1f} of {gpu.vram_gib:g} GiB, {est.headroom_gib:.1f} GiB to spare.")
else:
    st.error(
        f"Does not fit: needs {est.peak_gib:.1f} GiB, {has} (short by {-est.headroom_gib:.1f} GiB). "
        f"Cheapest change: {est.fix}. The time and cost above are for the run as set, which cannot train here; "
        "a change that makes it fit alters them."
    )
if est.sharding:
    st.info(est.sharding + " Choose “Sharded across them (FSDP)” above.")
if est.caveat:
    st.caption(est.caveat)

fig = go.Figure()
for part, gib in est.breakdown_gib.items():
    part = part if on_gpu else CPU_PARTS.get(part, part)
    fig.add_bar(x=["this run"], y=[gib], name=part, hovertemplate=f"{part}: %{{y:.2f}} GiB<extra></extra>")
fig.add_hline(
    y=gpu.vram_gib,
    line_dash="dash",
    line_color="red",
    annotation_text=f"{gpu.name if on_gpu else memory_word}: {gpu.vram_gib:g} GiB",
)
fig.update_layout(
    barmode="stack",
    height=380,
    yaxis_title="GiB",
    margin=dict(t=30, b=10),
    yaxis_range=[0, max(est.peak_gib, gpu.vram_gib) * 1.1],
)
st.plotly_chart(fig, width="stretch")
timing = (
    "at a measured share of the GPU's peak, and the time the computer takes to send each step's work to the "
    "GPU, which is what bounds small models and QLoRA (fitted to runs on an H200; that part varies with the server's "
    "processor, up to 2x between two H100 servers)"
    if on_gpu
    else "at the share of this processor's peak measured on the showcase run (2 cores)"
)
st.caption(
    f"{est.params / 1e9:.2f} B parameters, {est.trainable_params / 1e6:,.1f} M trained · "
    f"{est.tokens:,.0f} tokens ({int(examples):,} examples"
    + (f" × {epochs:g} passes" if epochs != 1 else "")
    + (f": {passes_over(int(examples) * epochs, stats['rows'])} over your {stats['rows']:,} rows" if stats else "")
    + ") · time from "
    "the arithmetic each token costs (about 6 operations per parameter; 4 with LoRA and QLoRA, whose base weights "
    f"get no gradients) {timing}."
    + (
        " This run is long enough that training compiles the model first (torch.compile): about a minute before "
        "the first step, then faster steps; the time includes both."
        if req.compile
        else ""
    )
)

st.subheader(f"Largest catalog model on {gpu.name if on_gpu else 'this computer'}, with these settings")
st.caption(
    f"{seq:,} tokens × {batch} per step, checkpointing {'on' if ckpt else 'off'}. "
    + (
        "The Hardware page's table assumes 2048 tokens × 1 with checkpointing, the smallest run worth doing, so it "
        "reaches bigger models."
        if hardware.kind != "cpu"  # a Mac's GPU is sized like an NVIDIA one there
        else f"The Hardware page's table and the Goal page's models assume the showcase-sized run: "
        f"{SHOWCASE_RUN.examples:,} examples of {SHOWCASE_RUN.tokens_per_example} tokens on average, "
        f"{SHOWCASE_RUN.batch} per step. With those settings here, the two tables agree; more examples or longer "
        "ones take more time, so a smaller model trains them within the hour."
    )
)
rows = [
    {"Method": METHOD_NAMES[m], f"Fits in {memory_word}": largest_model(req, gpu.vram_gib, m) or "none fits"}
    | (
        {}
        if on_gpu
        else {
            f"Trains these {int(examples):,} examples within an hour": largest_model(
                req, gpu.vram_gib, m, gpu, max_hours=1.0
            )
            or "none"
        }
    )
    for m in offered
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

lesson_check = st.expander("Checking us against the lesson (a 7B model on an NVIDIA GPU)")
minimal = dataclasses.replace(req, model=SEVEN_B, seq=512, batch=1, grad_ckpt=True)
lesson_check.dataframe(
    pd.DataFrame(
        [
            {
                "Method": METHOD_NAMES[m],
                "Lesson": LESSON_7B[m],
                "Ours, 512 tokens × 1, checkpointing": f"{peak_gib(dataclasses.replace(minimal, method=m)):.1f} GiB",
                "Ours, your settings": f"{peak_gib(dataclasses.replace(req, model=SEVEN_B, method=m)):.1f} GiB",
            }
            for m in METHODS
        ]
    ),
    hide_index=True,
    width="stretch",
)
lesson_check.caption(
    f"{SEVEN_B}, on an NVIDIA GPU. The lesson's numbers assume short sequences and a small batch; "
    "activations grow with both, so check the right-hand column."
)

# What-ifs live in this page's widgets, which Streamlit forgets when the person moves to another page: say so
# while they differ from the plan, before they are lost (filled in below, once the button had its say)
unsaved_note = st.empty()
steps_shown = math.ceil(int(examples) * epochs / (batch * accum))  # the examples timed above, as steps


def unsaved(plan: RunSpec) -> list[str]:
    """The settings shown here that differ from the plan."""
    if plan.max_steps > 0:  # the steps the examples make, as saved below (a new batch size is named already)
        same_batch = batch == plan.per_device_train_batch_size
        examples_differ = same_batch and steps_shown != plan.max_steps
    else:
        examples_differ = int(examples) != default_examples
    shown = {
        "stage": (stage, plan.stage),
        "model": (model, plan.model_name_or_path),
        "method": (method, plan.method),
        "length": (seq, plan.max_length),
        "batch size": (batch, plan.per_device_train_batch_size),
        "checkpointing": (ckpt, plan.gradient_checkpointing),
        "LoRA rank": (lora_r, plan.lora_r) if method != "full" else (0, 0),
        "optimizer": (optimizer, plan.optim),
        "examples": (examples_differ, False),
    }
    return [name for name, (new, old) in shown.items() if new != old]


if st.button("Use these settings for training", type="primary"):
    changes = dict(
        stage=stage,
        model_name_or_path=model,
        method=method,
        max_length=seq,
        per_device_train_batch_size=batch,
        gradient_checkpointing=ckpt,
        lora_r=lora_r,
        optim=optimizer,
        distributed=distributed,
        fsdp_offload=offload and distributed == "fsdp",
    )
    if gpu.count > 1:
        changes["num_processes"] = gpu.count
    if int(examples) != default_examples or batch != spec.per_device_train_batch_size and planned:
        changes["max_steps"] = steps_shown
    st.session_state.spec = apply_to_spec(spec, **changes)
    saved = st.session_state.spec
    st.success(
        f"Saved to your plan: {STAGE_NAMES[saved.stage]}, {METHOD_NAMES[saved.method]}, "
        f"{model_label(saved.model_name_or_path)}, "
        f"{saved.max_length} tokens, batch {saved.per_device_train_batch_size}, "
        + (
            f"{saved.num_processes} GPUs ({'FSDP' if saved.distributed == 'fsdp' else 'DDP'}), "
            if saved.num_processes > 1
            else ""
        )
        + (f"{saved.max_steps} steps" if saved.max_steps > 0 else f"{saved.num_train_epochs:g} epoch(s)")
        + ". The Train page will use them; the tokens per example come from the data."
    )
if changed := unsaved(st.session_state.spec):
    named = ", ".join(changed[:-1]) + " and " + changed[-1] if len(changed) > 1 else changed[0]
    unsaved_note.info(
        f"You changed the {named} from your plan. Press **Use these settings for training** to keep "
        "them; otherwise the plan stays as it was when you leave this page."
    )
