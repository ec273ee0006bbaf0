"""Train: review the plan, launch the real trainer in its own process, watch it live."""

import dataclasses
from pathlib import Path

import streamlit as st

from engine import access, data, models, paths, runs, users
from engine.estimate import EstimateError, gpu_from_hardware, mean_tokens, request_for
from engine.estimate import hours as estimate_hours
from engine.hardware import this_computer
from engine.recommend import METHOD_NAMES
from engine.runs import queue
from engine.spec import (
    DISTRIBUTED,
    DISTRIBUTED_NAMES,
    METHODS,
    REPORT_TO,
    STAGE_NAMES,
    STAGES,
    RunSpec,
    SpecError,
    default_learning_rate,
)
from ui.datastats import count_rows, passes_over, plan_stats
from ui.monitor import live_run
from ui.session import acting_name, actor, model_label, warn_if_planned_elsewhere

CHECK_PRESETS = {"task_api": "Task API answers (valid JSON, the right keys, priority, status, title)"}
TRACKERS = {
    "none": "Off",
    "tensorboard": "TensorBoard (files in the run)",
    "mlflow": "MLflow",
    "wandb": "Weights & Biases (offline)",
}


OTHER_MODEL = "other"  # the Model picker's last option: the name typed in the box under it


def model_choices(model: str) -> dict[str, str]:
    """Models a person can pick without typing: the bundled one, the class's shared models, the plan's model."""
    found = {"": "SmolLM2-135M-Instruct (bundled with the app, works offline)"}
    shared = paths.shared_dir() / "models"
    for d in sorted(shared.iterdir()) if shared.is_dir() else []:
        if (d / "config.json").is_file():
            found[str(d)] = f"{d.name} (shared with the class)"
    if model and not models.is_embedded(model) and model not in found:
        found[model] = f"{model_label(model)} (your plan's model)"
    return found | {OTHER_MODEL: "Another model: type its name or folder below"}


def pick(where, label: str, options: dict[str, str], current: str, help: str) -> str:
    """A list to choose from (options: value -> what the page shows), on `current` when it is one of them."""
    values = list(options)
    index = values.index(current) if current in options else 0
    return where.selectbox(label, values, format_func=options.get, index=index, help=help)


def run_label(run: dict) -> str:
    return f"run {run['id']} · {STAGE_NAMES[run['stage']]} · {METHOD_NAMES.get(run['method'], run['method'])}"


def data_files(user) -> dict[str, str]:
    """Data a person can pick: their uploads, the class's shared data, and what the plan already names."""
    folders = [
        (paths.user_area(user.name) if user.role != "owner" else paths.home()) / "uploads",
        paths.shared_dir() / "data",
    ]
    found = {}
    for folder in folders:
        for f in sorted(folder.glob("*")) if folder.is_dir() else []:
            if f.is_file():
                where = "shared with the class" if folder.parent == paths.shared_dir() else "uploaded"
                found[str(f)] = f"{f.name} ({where})"
    return found


def quota_problems(user, steps: int, gpus: int) -> list[str]:
    """The class's limits this plan breaks, said before Start (Start is refused by engine/runs/queue.py admit)."""
    if user.role != "student":  # instructors and personal mode have no quotas
        return []
    quota = queue.quota_for(user.name)
    found = []
    if quota.max_steps and not 0 < steps <= quota.max_steps:
        asks = f"this plan asks for {steps:,}" if steps > 0 else "this plan trains whole epochs (Max steps -1)"
        found.append(
            f"Your instructor allows at most {quota.max_steps:,} steps per run; {asks}: set Max steps between 1 "
            f"and {quota.max_steps:,}."
        )
    if quota.max_gpus and gpus > quota.max_gpus:
        found.append(
            f"Your instructor allows {quota.max_gpus} GPU(s) per run; this plan asks for {gpus}: lower the GPUs "
            "under More settings."
        )
    return found


st.title("5 · Train")
spec: RunSpec = st.session_state.spec
user = actor()
finished = [r for r in runs.list_runs(user) if r["state"] == "completed"]
st.caption(
    "Settings come from the earlier steps; change anything here. Start puts the run in the queue, and it "
    "trains in its own process: closing this tab or restarting the app does not stop it."
)

here = this_computer()
warn_if_planned_elsewhere("the estimates on the Estimate page are for the planned machine, not this one.")
try:
    rows = count_rows(spec.dataset_name, spec.stage)
except (OSError, ValueError):
    rows = 0
per_step = spec.per_device_train_batch_size * spec.gradient_accumulation_steps * spec.num_processes


def time_here(examples: int) -> str:
    """' About N min on this computer.' for the plan's run (the Estimate page's arithmetic, with the data's
    tokens per example), or '' for a model the estimator does not know."""
    stats = plan_stats(spec, spec.stage, acting_name(actor()))
    try:
        req = dataclasses.replace(
            request_for(spec),
            examples=examples,
            epochs=1.0,
            tokens_per_example=mean_tokens(stats["lengths"], spec.max_length) if stats else 0,
        )
        hours = estimate_hours(req, gpu_from_hardware(here))[1]
    except EstimateError:
        return ""
    minutes = hours * 60
    where = "this computer" if here.kind == "cpu" else here.name
    if minutes < 1:
        return f" **Under a minute** on {where}."
    return f" About **{f'{minutes:.0f} min' if minutes < 90 else f'{hours:.1f} h'}** on {where}."


summary = st.container()  # filled once Max steps and Epochs are read below, so it follows them as they change

launched = "current_run" in st.session_state
if launched:  # the run you started comes first; the form folds away below it
    live_run(st.session_state.current_run)
    form_area = st.expander("Start another run")
else:
    form_area = st.container()

with form_area:  # the model first, outside the form: its "Another model" box shows only when that is chosen
    # Picked, not typed: a typo in a path used to be found only when Start was pressed
    model_left, length_right = st.columns(2)
    current_model = "" if models.is_embedded(spec.model_name_or_path) else spec.model_name_or_path
    choices = model_choices(current_model)
    picked_model = pick(
        model_left,
        "Model",
        choices,
        current_model,
        help="The model this run starts from. The bundled one trains in minutes on a laptop; the instructor can "
        "share more in the class's folder; 'Another model' takes a Hugging Face name (e.g. Qwen/Qwen3-0.6B, "
        "when this computer is online or has it downloaded) or a model folder on this server.",
    )
    typed_model = ""
    if picked_model == OTHER_MODEL:
        typed_model = model_left.text_input(
            "Another model: its Hugging Face name or folder",
            placeholder="e.g. Qwen/Qwen3-0.6B or a folder with config.json",
        )
    # Outside the form too, so the summary above (steps, time, the class's limits) follows them before Start
    max_steps = length_right.number_input(
        "Max steps (optimizer steps; -1 = use Epochs)",
        value=spec.max_steps,
        step=10,
        min_value=-1,
        help="Above 0, training stops after this many steps whatever the "
        "epochs say. -1 trains for the number of epochs below.",
    )
    epochs = length_right.number_input(
        "Epochs (passes over the data; used when Max steps is -1)",
        value=float(spec.num_train_epochs),
        min_value=0.01,
        step=0.5,
    )
with summary:
    if rows and max_steps > 0:
        seen = max_steps * per_step
        st.caption(
            f"Your plan trains **{max_steps} steps × {per_step} examples = {seen:,} examples**, "
            f"{passes_over(seen, rows)} over the data's {rows:,} rows (Max steps wins over Epochs)."
            + time_here(seen)
            + " The settings in the form below count once you press Start."
        )
    elif rows:
        st.caption(
            f"Your plan trains **{epochs:g} "
            f"{'pass' if epochs == 1 else 'passes'} over {rows:,} rows = about "
            f"{max(1, round(rows * epochs / per_step)):,} steps** of {per_step} examples."
            + time_here(round(rows * epochs))
            + " The settings in the form below count once you press Start."
        )
    for problem in quota_problems(user, int(max_steps), spec.num_processes):
        st.warning(problem)
with form_area, st.form("train"):
    left, right = st.columns(2)
    stage = left.selectbox("Stage", STAGES, index=STAGES.index(spec.stage), format_func=lambda s: STAGE_NAMES[s])
    # QLoRA's 4-bit base saves memory only on an NVIDIA GPU (the Hardware page says so): not offered without one
    offered = [m for m in METHODS if m != "qlora" or here.kind == "cuda"]
    method = right.selectbox(
        "Method",
        offered,
        index=offered.index(spec.method if spec.method in offered else "lora"),
        format_func=METHOD_NAMES.get,
        help="Full fine-tuning: every weight; LoRA: small adapters"
        + ("; QLoRA: adapters on a 4-bit base" if "qlora" in offered else " (QLoRA needs an NVIDIA GPU)"),
    )
    files = {"": "The bundled example set for this stage"} | data_files(user)
    if spec.dataset_name and spec.dataset_name not in files:
        files[spec.dataset_name] = f"{Path(spec.dataset_name).name} (chosen on the Data page)"
    dataset = pick(
        right,
        "Data",
        files,
        spec.dataset_name,
        help="Upload and check a file on the Data page; it then appears here",
    )
    # Earlier results are picked from the person's own finished runs, never typed: a path here would be a way out
    # of their folder in a workshop, and a typo only failed once the run started.
    earlier = {"": "(none: start from the model above)"} | {
        r["run_dir"]: run_label(r) for r in finished if r["stage"] != "rm"
    }
    init_from = pick(
        left,
        "Start from an earlier run (optional)",
        earlier,
        spec.init_from,
        help="A finished run's result is this stage's starting model: supervised fine-tuning, then preference "
        "tuning (DPO); or supervised fine-tuning, then RL. (Reward models score answers and are picked on the "
        "right, for RL.)",
    )
    rewards = (
        {"": "(none)"}
        | {f"checks:{k}": f"Checks: {v}" for k, v in CHECK_PRESETS.items()}
        | {f"model:{r['run_dir']}": f"Reward model: {run_label(r)}" for r in finished if r["stage"] == "rm"}
    )
    chosen_reward = (
        f"checks:{spec.extra['reward_checks']}"
        if spec.extra.get("reward_checks")
        else f"model:{spec.extra['reward_model']}"
        if spec.extra.get("reward_model")
        else ""
    )
    reward = pick(
        right,
        "Reward (RL only)",
        rewards,
        chosen_reward,
        help="What scores RL's answers: checks that can be verified, or a "
        "reward model you trained (a finished reward-model run)",
    )
    # The settings a first run rarely changes fold away (the plan filled them in); a newcomer sees what to train,
    # on what, for how long
    with st.expander("More settings: learning rate, length, batch size, LoRA rank, memory, GPUs, tracking"):
        more_left, more_right = st.columns(2)
        usual = default_learning_rate(spec.stage, spec.method, spec.model_name_or_path)
        lr = more_left.number_input(
            f"Learning rate (0 = the usual rate: {usual:g} for this plan)",
            value=st.session_state.get("lr_choice", 0.0),
            format="%g",
            min_value=0.0,
            help="0 picks the usual rate for the stage and method chosen here (with another stage or method, its own)",
        )
        seq = more_right.number_input(
            "Max length (tokens)",
            value=spec.max_length,
            min_value=16,
            step=64,
            help="Longer examples are cut to this many tokens; the Data page shows how long yours are",
        )
        batch = more_left.number_input(
            "Batch size per device",
            value=spec.per_device_train_batch_size,
            min_value=1,
            help="Examples in each step's forward pass: more is faster per example and needs more memory",
        )
        accum = more_right.number_input(
            "Gradient accumulation",
            value=spec.gradient_accumulation_steps,
            min_value=1,
            help="Batches added up before each update: a larger effective batch without more memory",
        )
        lora_r = more_left.number_input(
            "LoRA rank r (LoRA and QLoRA)",
            value=spec.lora_r,
            min_value=1,
            help="Width of the small trained matrices: 8-32 is usual; higher learns more and saves a bigger adapter",
        )
        ckpt = more_right.checkbox(
            "Gradient checkpointing",
            value=spec.gradient_checkpointing,
            help="Less GPU memory for about a third more compute (activations are recomputed); the trainer turns "
            "it on by itself, and says so, when the run would not fit without it",
        )
        gpus_here = runs.gpu_count()
        procs, sharing, offload = spec.num_processes, spec.distributed, spec.fsdp_offload
        if gpus_here > 1 or spec.num_processes > 1:  # several GPUs: how many, and how they share the model
            procs = more_left.number_input(
                "GPUs for this run (one training process each)",
                min_value=1,
                max_value=max(gpus_here, spec.num_processes),
                value=spec.num_processes,
                help="More GPUs train the same steps faster; the batch size above is per GPU",
            )
            sharing = more_right.selectbox(
                "How the GPUs share the model",
                list(DISTRIBUTED),
                index=DISTRIBUTED.index(spec.distributed),
                format_func=DISTRIBUTED_NAMES.get,
                help="DDP when the model fits one GPU (fastest); FSDP splits weights, gradients and optimizer state "
                "across the GPUs, for models too big for one. The Estimate page says which fits.",
            )
            offload = more_right.checkbox(
                "FSDP: keep the shards in CPU memory (slower; the largest models)", value=spec.fsdp_offload
            )
        tracking = more_left.selectbox(
            "Experiment tracking",
            REPORT_TO,
            index=REPORT_TO.index(spec.report_to),
            format_func=TRACKERS.get,
            help="Also log the curves to a tracker you use; the Runs page always shows them",
        )
    start = st.form_submit_button("Start training", type="primary")

if start:
    try:
        model = typed_model.strip() if picked_model == OTHER_MODEL else picked_model
        if picked_model == OTHER_MODEL and not model:
            raise SpecError(
                "You chose 'Another model' but typed no name: type a Hugging Face model name or a model folder "
                "in the box under Model, or pick the bundled model."
            )
        chosen_model = access.check_model(model, user) or "embedded"  # before anything looks at the path
        models.check(chosen_model)
        if dataset:
            report = data.check(access.confine(dataset, user, "dataset file"), stage)
            if not report.ok:
                raise SpecError(
                    f"{Path(dataset).name} cannot be used for {STAGE_NAMES[stage]}: "
                    f"{report.summary()} Pick another file, or check it on the Data page."
                )
        extra = {k: v for k, v in spec.extra.items() if k not in ("reward_model", "reward_checks")}
        kind, _, value = reward.partition(":")
        if kind:
            extra[{"checks": "reward_checks", "model": "reward_model"}[kind]] = value
        new = RunSpec.from_dict(
            {
                **{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
                "stage": stage,
                "method": method,
                "model_name_or_path": chosen_model,
                "dataset_name": dataset,
                "num_processes": int(procs),
                "distributed": sharing,
                "fsdp_offload": bool(offload) and sharing == "fsdp",
                "max_steps": int(max_steps),
                "num_train_epochs": epochs,
                "learning_rate": lr,
                "max_length": int(seq),
                "per_device_train_batch_size": int(batch),
                "gradient_accumulation_steps": int(accum),
                "lora_r": int(lora_r),
                "gradient_checkpointing": ckpt,
                "init_from": init_from,
                "output_dir": "",
                "report_to": tracking,
                "extra": extra,
            }
        )
        st.session_state.lr_choice = lr
        st.session_state.current_run = runs.submit(new, user)
        st.session_state.spec = dataclasses.replace(new, output_dir="", learning_rate=lr)
        st.rerun()
    except (SpecError, models.ModelError, runs.RunError, access.AccessError, data.DataError) as e:
        st.error(str(e))

if not launched:
    elsewhere = (
        "Earlier runs are on the Runs page."
        if users.mode() == "personal"
        else "Everyone's runs, yours and your students', are on the Runs page."
        if user.sees_all
        else "Your earlier runs are on the Runs page."
    )
    st.info(f"Nothing launched from this tab yet. {elsewhere}")
