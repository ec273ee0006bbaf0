"""Train: review the plan, launch the real trainer in its own process, watch it live."""
import dataclasses

import streamlit as st

from engine import access, models, runs
from engine.spec import METHODS, STAGE_NAMES, STAGES, RunSpec, SpecError
from ui.monitor import live_run
from ui.session import actor


def run_label(run: dict) -> str:
    return f"run {run['id']} · {STAGE_NAMES[run['stage']]} · {run['method']}"

st.title("Train")
spec: RunSpec = st.session_state.spec
user = actor()
finished = [r for r in runs.list_runs(user) if r["state"] == "completed"]
st.caption("Settings come from the earlier steps; change anything here. Start puts the run in the queue, and it "
           "trains in its own process: closing this tab or restarting the app does not stop it.")

launched = "current_run" in st.session_state
if launched:  # the run you started comes first; the form folds away below it
    live_run(st.session_state.current_run)
    form_area = st.expander("Start another run")
else:
    form_area = st.container()

with form_area, st.form("train"):
    left, right = st.columns(2)
    stage = left.selectbox("Stage", STAGES, index=STAGES.index(spec.stage), format_func=lambda s: STAGE_NAMES[s])
    method = right.selectbox("Method", METHODS, index=METHODS.index(spec.method),
                             help="full: every weight; lora: small adapters; qlora: adapters on a 4-bit base")
    model = left.text_input("Model", spec.model_name_or_path,
                            help="'embedded' = SmolLM2-135M-Instruct, shipped with the app; or a local model "
                                 "directory; or a Hub id (only when this machine is online)")
    dataset = right.text_input("Dataset file", spec.dataset_name,
                               placeholder="empty = the bundled example set for this stage",
                               help="Choose and check a file on the Data page")
    max_steps = left.number_input("Max steps (-1 = whole epochs)", value=spec.max_steps, step=10, min_value=-1)
    epochs = right.number_input("Epochs", value=float(spec.num_train_epochs), min_value=0.01, step=0.5)
    lr = left.number_input("Learning rate (0 = default for stage and method)",
                           value=st.session_state.get("lr_choice", 0.0), format="%g", min_value=0.0,
                           help="0 picks the usual rate for the stage and method (engine/spec.py)")
    seq = right.number_input("Max length (tokens)", value=spec.max_length, min_value=16, step=64)
    batch = left.number_input("Batch size per device", value=spec.per_device_train_batch_size, min_value=1)
    accum = right.number_input("Gradient accumulation", value=spec.gradient_accumulation_steps, min_value=1)
    lora_r = left.number_input("LoRA rank r (LoRA and QLoRA)", value=spec.lora_r, min_value=1)
    ckpt = right.checkbox("Gradient checkpointing", value=spec.gradient_checkpointing)
    # Earlier results are picked from the person's own finished runs, never typed: a path here would be a way out
    # of their folder in a workshop, and a typo only failed once the run started.
    earlier = {"": "(none: start from the model above)"} | {r["run_dir"]: run_label(r) for r in finished}
    init_from = left.selectbox("Start from an earlier run (optional)", list(earlier), format_func=earlier.get,
                               index=list(earlier).index(spec.init_from) if spec.init_from in earlier else 0,
                               help="A finished run's result is this stage's starting model. This is how "
                                    "pipelines chain: SFT, then DPO; or SFT, reward model, then RL.")
    rewards = {"": "(none)"} | {r["run_dir"]: run_label(r) for r in finished if r["stage"] == "rm"}
    chosen_reward = spec.extra.get("reward_model", "")
    reward = right.selectbox("Reward model run (RL only)", list(rewards), format_func=rewards.get,
                             index=list(rewards).index(chosen_reward) if chosen_reward in rewards else 0,
                             help="A finished reward-model (rm) run; RL scores answers with it")
    start = st.form_submit_button("Start training", type="primary")

if start:
    try:
        chosen_model = access.check_model(model.strip(), user) or "embedded"  # before anything looks at the path
        models.check(chosen_model)
        new = RunSpec.from_dict({
            **{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
            "stage": stage, "method": method, "model_name_or_path": chosen_model,
            "dataset_name": dataset.strip(), "max_steps": int(max_steps), "num_train_epochs": epochs,
            "learning_rate": lr, "max_length": int(seq), "per_device_train_batch_size": int(batch),
            "gradient_accumulation_steps": int(accum), "lora_r": int(lora_r), "gradient_checkpointing": ckpt,
            "init_from": init_from, "output_dir": "",
            "extra": {**spec.extra, "reward_model": reward} if reward else
                     {k: v for k, v in spec.extra.items() if k != "reward_model"}})
        st.session_state.lr_choice = lr
        st.session_state.current_run = runs.submit(new, user)
        st.session_state.spec = dataclasses.replace(new, output_dir="", learning_rate=lr)
        st.rerun()
    except (SpecError, models.ModelError, runs.RunError, access.AccessError) as e:
        st.error(str(e))

if not launched:
    st.info("Nothing launched from this tab yet. Earlier runs, and runs of other people, are on the Runs page.")
