"""Step 3 · Estimate: GPU memory, time and cost of the planned run, before it is launched (engine/estimate.py)."""
import dataclasses

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import catalog
from engine.estimate import EstimateError, EstimateRequest, estimate_run, gpu_from_hardware, largest_model, peak_gib
from engine.hardware import load_presets
from engine.spec import METHODS, STAGE_NAMES, RunSpec
from engine.vram import OPTIMIZERS

LESSON_7B = {"full": "60+ GB", "lora": "16 GB", "qlora": "6 GB"}  # the lesson's PEFT comparison table
SEVEN_B = "mistralai/Mistral-7B-v0.3"

if "spec" not in st.session_state:  # a deep link can run this page before app.py sets it
    st.session_state.spec = RunSpec()
spec = st.session_state.spec

st.title("📐 Will it fit, how long, what will it cost?")
st.write("Memory is what stops most first runs. This estimate is arithmetic on the model's config.json, checked "
         "against real runs on an H200 (median error 2 % over 19 runs, 135M to 8B; see "
         "bench/results/estimate_accuracy.md).")

hardware = st.session_state.get("hardware")
if hardware is None:
    st.info("No hardware chosen yet: choose it on the Hardware page, or pick a GPU to plan for here.")
    st.page_link("app_pages/hardware.py", label="Choose hardware on the Hardware page", icon="🖥️")
    presets = {k: p for k, p in load_presets().items() if p.kind == "cuda"}
    key = st.selectbox("Plan for", list(presets), format_func=lambda k: presets[k].name,
                       index=list(presets).index("rtx-4090") if "rtx-4090" in presets else 0)
    hardware = presets[key].hardware()
gpu = gpu_from_hardware(hardware)
st.caption(f"Hardware: **{gpu.count} × {gpu.name}**, {gpu.vram_gib:.0f} GiB each"
           + ("" if getattr(hardware, "kind", "cuda") == "cuda" else " (not an NVIDIA GPU: figures are for CUDA)"))

models = catalog.names()
own = spec.model_name_or_path
options = ["embedded"] + models + ([own] if own not in models and own != "embedded" else [])
left, right = st.columns(2)
model = left.selectbox("Model", options, index=options.index(own) if own in options else 0,
                       format_func=lambda m: "SmolLM2-135M-Instruct (embedded)" if m == "embedded" else m)
stage = left.selectbox("Stage", list(STAGE_NAMES), index=list(STAGE_NAMES).index(spec.stage),
                       format_func=STAGE_NAMES.get)
method = left.radio("Method", METHODS, index=METHODS.index(spec.method), horizontal=True,
                    format_func={"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}.get)
seq_choices = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
seq = right.select_slider("Sequence length (tokens)", seq_choices + ([spec.max_length] if spec.max_length not in
                          seq_choices else []), value=spec.max_length)
batch = right.slider("Micro-batch (examples per GPU per step)", 1, 64, min(spec.per_device_train_batch_size, 64))
ckpt = right.checkbox("Gradient checkpointing", spec.gradient_checkpointing,
                      help="Keeps one tensor per layer and recomputes the rest: far less memory, ~30 % slower.")
lora_r = right.select_slider("LoRA rank r", [4, 8, 16, 32, 64, 128], value=spec.lora_r if spec.lora_r in
                             (4, 8, 16, 32, 64, 128) else 16, disabled=method == "full")
optimizer = left.selectbox("Optimizer", list(OPTIMIZERS), index=list(OPTIMIZERS).index(spec.optim)
                           if spec.optim in OPTIMIZERS else 0)
# Defaults from the plan: a run capped at max_steps sees steps x batch x accumulation examples; the Data page
# leaves the checked file's row count and mean tokens per example.
data = st.session_state.get("data_stats")
data = data if data and data["dataset"] == spec.dataset_name else None
planned = spec.max_steps * spec.per_device_train_batch_size * spec.gradient_accumulation_steps
examples = left.number_input("Training examples", 1, 10_000_000,
                             planned if spec.max_steps > 0 else (data["rows"] if data else 2000), step=500,
                             help="The plan's steps x batch x accumulation when it sets max steps; else the data's "
                                  "rows (after the Data page), else 2,000.")
tokens_each = left.number_input("Average tokens per example (0 = every example fills the sequence length)", 0,
                                1_000_000, data["mean_tokens"] if data else 0,
                                help="Filled in from the Data page once your data is checked; it sets the time, "
                                "not the memory: the longest batch decides the memory.")

epochs = spec.num_train_epochs if spec.max_steps <= 0 else 1.0  # max steps already counted the examples
try:
    req = EstimateRequest(model=model, stage=stage, method=method, seq=seq, batch=batch, grad_ckpt=ckpt,
                          lora_r=lora_r, optimizer=optimizer, examples=int(examples), epochs=epochs,
                          tokens_per_example=min(int(tokens_each), seq))
    est = estimate_run(req, gpu)
except EstimateError as e:
    st.error(str(e))
    st.stop()

a, b, c, d = st.columns(4)
a.metric("Peak GPU memory", f"{est.peak_gib:.1f} GiB", f"{est.headroom_gib:+.1f} GiB headroom",
         delta_color="normal" if est.fits else "inverse")
b.metric("Largest micro-batch", est.max_batch or "none")
c.metric("Largest sequence", est.max_seq or "none")
d.metric("Time · cost", f"{est.hours * 60:.0f} min" if est.hours < 1 else f"{est.hours:.1f} h",
         "owned GPU" if est.usd is None else f"${est.usd:,.2f}", delta_color="off")
with_ckpt = peak_gib(dataclasses.replace(req, grad_ckpt=True))
if est.fits:
    st.success(f"Fits: {est.peak_gib:.1f} of {gpu.vram_gib:.0f} GiB, {est.headroom_gib:.1f} GiB to spare.")
elif not ckpt and with_ckpt <= gpu.vram_gib:
    st.warning(f"Needs {est.peak_gib:.1f} GiB without gradient checkpointing; the GPU has {gpu.vram_gib:.0f} GiB. "
               f"Training on a GPU turns checkpointing on by itself when a run would not fit otherwise: "
               f"{with_ckpt:.1f} GiB, about 30 % slower.")
else:
    st.error(f"Does not fit: needs {est.peak_gib:.1f} GiB, the GPU has {gpu.vram_gib:.0f} GiB "
             f"(short by {-est.headroom_gib:.1f} GiB). Cheapest change: {est.fix}.")

fig = go.Figure()
for part, gib in est.breakdown_gib.items():
    fig.add_bar(x=["this run"], y=[gib], name=part, hovertemplate=f"{part}: %{{y:.2f}} GiB<extra></extra>")
fig.add_hline(y=gpu.vram_gib, line_dash="dash", line_color="red", annotation_text=f"{gpu.name}: {gpu.vram_gib:.0f} GiB")
fig.update_layout(barmode="stack", height=380, yaxis_title="GiB", margin=dict(t=30, b=10),
                  yaxis_range=[0, max(est.peak_gib, gpu.vram_gib) * 1.1])
st.plotly_chart(fig, width="stretch")
st.caption(f"{est.params / 1e9:.2f} B parameters, {est.trainable_params / 1e6:,.1f} M trained · "
           f"{est.tokens:,.0f} tokens ({int(examples):,} examples × {epochs:g} epoch) · time from "
           "6N FLOPs per token (4N with LoRA) at a measured share of the GPU's peak, and the time the computer "
           "takes to send each step's work to the GPU, which is what bounds small models (fitted to runs on an H200).")

st.subheader(f"Largest catalog model on {gpu.name}, with these settings")
st.dataframe(pd.DataFrame([{"Method": m, "Largest model": largest_model(req, gpu.vram_gib, m) or "none fits"}
                           for m in METHODS]), hide_index=True, width="stretch")

st.subheader("Checking us against the lesson (7B model)")
minimal = dataclasses.replace(req, model=SEVEN_B, seq=512, batch=1, grad_ckpt=True)
st.dataframe(pd.DataFrame([{
    "Method": m, "Lesson": LESSON_7B[m],
    "Ours, 512 tokens × 1, checkpointing": f"{peak_gib(dataclasses.replace(minimal, method=m)):.1f} GiB",
    "Ours, your settings": f"{peak_gib(dataclasses.replace(req, model=SEVEN_B, method=m)):.1f} GiB"}
    for m in METHODS]), hide_index=True, width="stretch")
st.caption(f"{SEVEN_B}. The lesson's numbers assume short sequences and a small batch; activations grow with "
           "both, so check the right-hand column.")

if st.button("Use these settings for training", type="primary"):
    st.session_state.spec = dataclasses.replace(
        spec, model_name_or_path=model, method=method, max_length=seq, per_device_train_batch_size=batch,
        gradient_checkpointing=ckpt, lora_r=lora_r, optim=optimizer)
    st.success("Saved to your plan: the Train page will use them.")
