"""Pieces every stage's trainer shares: the command line, the run directory, model loading by method, the LoRA
config, the callback that writes metrics/status, and turning failures into sentences. Plain functions, no base
class: each stage file (sft.py, dpo.py, ...) reads top to bottom on its own.
"""

import argparse
import collections
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from engine import paths, rundir, tracking
from engine.spec import CPU_RUN, DISTRIBUTED, METHODS, REPORT_TO, STAGES, RunSpec, SpecError

# flag -> RunSpec field. Flags override the config file; the YAML keeps TRL's field names.
FLAGS = {
    "--stage": "stage",
    "--method": "method",
    "--model": "model_name_or_path",
    "--dataset": "dataset_name",
    "--max-steps": "max_steps",
    "--epochs": "num_train_epochs",
    "--lr": "learning_rate",
    "--seq": "max_length",
    "--batch": "per_device_train_batch_size",
    "--grad-accum": "gradient_accumulation_steps",
    "--lora-r": "lora_r",
    "--output-dir": "output_dir",
    "--init-from": "init_from",
    "--optim": "optim",
    "--seed": "seed",
    "--save-steps": "save_steps",
    "--eval-steps": "eval_steps",
    "--num-processes": "num_processes",
    "--lora-dropout": "lora_dropout",
    "--report-to": "report_to",
    "--distributed": "distributed",
    "--checkpoint-every": "checkpoint_every",
}
# what --help says of the flags whose name and the lesson do not say it already
FLAG_HELP = {
    "--checkpoint-every": "with --grad-ckpt: checkpoint every N-th decoder layer only (1: every layer); the others "
    "keep their activations, so N=2 recomputes half as much and needs more memory. On a GPU, engine.train picks N by "
    "itself when the run does not fit without checkpointing",
    "--grad-accum": "micro-batches summed into one optimizer step (the effective batch is batch x this)",
    "--num-processes": "GPUs to train on (one process each)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.train",
        description="Train a model with one stage of the lesson's spectrum, writing a run directory.",
        epilog="Example: python -m engine.train --stage sft --method lora --max-steps 20 --output-dir runs/demo",
    )
    p.add_argument("--config", help="config.yaml to start from (flags override it)")
    types = {f.name: f.type for f in fields(RunSpec)}
    for flag, name in FLAGS.items():
        kind = types[name] if types[name] in (int, float) else str
        p.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            choices={"stage": STAGES, "method": METHODS, "report_to": REPORT_TO, "distributed": DISTRIBUTED}.get(name),
            help=FLAG_HELP.get(flag),
        )
    p.add_argument(
        "--grad-ckpt",
        dest="gradient_checkpointing",
        action="store_true",
        default=None,
        help="gradient checkpointing: less activation memory, ~30%% more compute",
    )
    p.add_argument(
        "--checkpoint-offload",
        dest="checkpoint_offload",
        action="store_true",
        default=None,
        help="with --grad-ckpt: keep the checkpointed layers' inputs in CPU memory (slower, less GPU memory)",
    )
    p.add_argument(
        "--fsdp-offload",
        dest="fsdp_offload",
        action="store_true",
        default=None,
        help="with --distributed fsdp: keep parameters and optimizer state in CPU memory between uses",
    )
    p.add_argument(
        "--reward-model",
        dest="reward_model",
        default=None,
        help="rl only: the reward-model run (--stage rm) that scores answers; stored as extra.reward_model",
    )
    p.add_argument(
        "--reward",
        dest="reward_checks",
        default=None,
        metavar="CHECKS",
        help="rl only: reward answers by checks (a YAML check file, or the preset task_api; "
        "engine/checks.py) instead of a reward model; stored as extra.reward_checks",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    return p


def parse(argv=None) -> tuple[RunSpec, bool]:
    """Flags + optional config file -> (RunSpec, resume). argparse exits 2 itself on malformed flags."""
    args = build_parser().parse_args(argv)
    values = {}
    config = args.config
    if args.resume and not config and args.output_dir:
        config = str(Path(args.output_dir) / "config.yaml")
    if config:
        values = RunSpec.read_settings(Path(config))
    values.update(
        {
            k: v
            for k, v in vars(args).items()
            if v is not None and k not in ("config", "resume", "reward_model", "reward_checks")
        }
    )
    for key in ("reward_model", "reward_checks"):
        if getattr(args, key) is not None:
            values["extra"] = {**values.get("extra", {}), key: getattr(args, key)}
    if not args.resume and not {"max_steps", "num_train_epochs"} & set(values) and not _has_gpu():
        # The app's plan for a computer without a GPU (the Hardware page's), unless the person chose a length
        values = {**CPU_RUN, **values}
        print(
            f"No GPU on this computer: training with the app's CPU plan ({CPU_RUN['max_steps']} steps, one "
            "held-out pass at the end; a few minutes for the embedded model). Give --max-steps or --epochs to "
            "choose the length yourself.",
            flush=True,
        )
    return RunSpec.from_dict(values), args.resume


def gpu_count() -> int:
    """NVIDIA GPUs seen through NVML, without importing torch (the flags are read before the slow imports)."""
    from engine.runs.queue import gpu_count as count

    return count()


def _has_gpu() -> bool:
    return gpu_count() > 0


def new_run_dir(spec: RunSpec) -> Path:
    """Where a run started without --output-dir writes: TUNEWISE_HOME/runs/DATE-TIME-STAGE-METHOD."""
    return paths.runs_dir() / time.strftime(f"%Y%m%d-%H%M%S-{spec.stage}-{spec.method}")


def prepare_run_dir(spec: RunSpec, resume: bool) -> Path:
    """Create (or reopen, for --resume) the run directory and record what was asked."""
    if not spec.output_dir:
        spec.output_dir = str(new_run_dir(spec))
    run_dir = Path(spec.output_dir).expanduser().resolve()
    if resume and rundir.last_checkpoint(run_dir) is None:
        raise SpecError(f"Cannot resume {run_dir}: it has no checkpoint-* directory yet. Start a new run instead.")
    if not resume and (run_dir / "final").exists():
        raise SpecError(f"{run_dir} already holds a finished run. Choose another --output-dir, or --resume.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test.{os.getpid()}"  # per process: several GPUs probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SpecError(
            f"Cannot write to the output directory {run_dir} ({e.strerror}). Choose a directory you can write to."
        ) from None
    spec.output_dir = str(run_dir)
    if is_main_process():
        spec.save(run_dir / "config.yaml")
    return run_dir


def record_versions(run_dir: Path, device: str) -> None:
    if not is_main_process():
        return
    import peft  # noqa: E401  (already imported by the stage; cheap here)
    import torch
    import transformers
    import trl

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    (run_dir / "versions.json").write_text(json.dumps(info, indent=1))


def device_and_dtype():
    """(device, torch dtype for weights, TrainingArguments precision flags). bf16 needs compute capability >= 8."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # the process group first: under FSDP, rank 0 alone then reads the weights (CPU-RAM-efficient loading)
        from accelerate.state import PartialState

        from engine import distributed

        distributed.allow_on_cpu()
        PartialState()
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():  # Ampere or newer: TF32 for the few fp32 matrix products left
            return "cuda", torch.bfloat16, {"bf16": True, "fp16": False, "tf32": True}
        return "cuda", torch.float32, {"bf16": False, "fp16": True}  # T4/V100: fp32 master weights, fp16 autocast
    from engine.train import fast

    fast.score_only_labelled_positions()
    return "cpu", torch.float32, {"bf16": False, "fp16": False, "use_cpu": True}  # bf16 autocast is slow on most CPUs


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_kwargs(spec: RunSpec, dtype) -> dict:
    """from_pretrained kwargs for the method: QLoRA = NF4 with double quantisation (Dettmers et al. 2023)."""
    import torch

    kwargs = {"dtype": dtype}
    if spec.method == "qlora":
        from transformers import BitsAndBytesConfig

        if torch.cuda.is_available() and not sharded():  # bitsandbytes places 4-bit weights at load time
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
        compute = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
            # FSDP shards tensors of one dtype: the packed 4-bit bytes are stored as the weights' dtype (the
            # recipe of Answer.AI's FSDP + QLoRA, in PEFT's and accelerate's docs)
            **({"bnb_4bit_quant_storage": dtype} if sharded() else {}),
        )
    return kwargs


def lora_config(spec: RunSpec, task_type: str = "CAUSAL_LM"):
    if not spec.uses_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=spec.lora_target_modules,
        task_type=task_type,
    )


def base_model_path(spec: RunSpec, run_dir: Path) -> str:
    """The weights this stage starts from: the chosen model, or an earlier run's final/ (adapters merged in)."""
    from engine.train.loading import base_model_path as resolve_start

    return resolve_start(spec, run_dir)


# What the pre-flight saw on this GPU (decide_grad_ckpt), for the out-of-memory sentence and status.json
MEMORY: dict = {}


def decide_grad_ckpt(spec: RunSpec, model_path: str, device: str, run_dir: Path | None = None) -> None:
    """The pre-flight on a GPU, before any weights load. A run that cannot fit this GPU's free memory even with
    gradient checkpointing is refused with the changes that would fit (engine.estimate.preflight). Otherwise, when
    the person did not ask for checkpointing, it is turned on only if the run would not fit without it, on as few
    layers as fit (engine.estimate.checkpointing_choice: every n-th layer, every layer, then every layer with the
    inputs in CPU memory), and said so; checkpointing asked for is kept as asked, with the inputs moved to CPU
    memory when only that fits. The prediction and the free memory are recorded in status.json (`memory`), next to
    the peak NVML measures while training."""
    if device != "cuda":
        return
    import torch

    from engine import estimate

    # free besides this process's CUDA context, which torch has just created (the estimate counts it)
    free = torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", "0")))[0] / 2**30
    try:
        req = estimate.request_for(spec, model_path)
        refusal = estimate.preflight(req, free + estimate.vram.CONTEXT_GIB)
        chosen, without = estimate.checkpointing_choice(req, free)
        if sharded():  # FSDP checkpoints every wrapped layer itself, on the GPU (engine/distributed.py)
            chosen = replace(chosen, ckpt_every=1, ckpt_offload=False)
    except (estimate.EstimateError, ValueError, OSError):
        return  # a model the estimator cannot read trains as asked
    MEMORY.update(free_at_start_gib=round(free, 2), checkpointing_was_on=spec.gradient_checkpointing)
    if refusal:
        raise SpecError(refusal + " Nothing was loaded; change the settings and start again.")
    if (chosen.grad_ckpt, chosen.ckpt_every, chosen.ckpt_offload) != (
        spec.gradient_checkpointing,
        spec.checkpoint_every,
        spec.checkpoint_offload,
    ):
        spec.gradient_checkpointing = chosen.grad_ckpt
        spec.checkpoint_every, spec.checkpoint_offload = chosen.ckpt_every, chosen.ckpt_offload
        why = f"without it this run needs ~{without:.1f} GiB" if without else "as asked, it needs more"
        print(
            f"gradient checkpointing: {estimate.checkpointing_words(chosen)} ({why}; this GPU has {free:.1f} GiB free)",
            flush=True,
        )
        if is_main_process():
            spec.save(Path(spec.output_dir) / "config.yaml")  # a resume continues with the same setting
    MEMORY["request"] = estimate.request_for(spec, model_path)  # with checkpointing as decided
    MEMORY["predicted_peak_gib"] = round(estimate.peak_gib(MEMORY["request"]), 2)
    MEMORY["checkpointing"] = estimate.checkpointing_words(MEMORY["request"])
    if is_main_process():
        rundir.write_status(
            Path(spec.output_dir), "running", memory={k: v for k, v in MEMORY.items() if k != "request"}
        )


HOST_SHARE = 0.9  # of the memory free at the start a processor run may be planned to take
LONGEST_ROWS = 256  # rows with the most characters, tokenized besides the even sample for the longest example


def check_host_memory(spec: RunSpec, model_path: str, device: str, train_rows: list, tokenizer) -> None:
    """The pre-flight on a processor, before any weights load: a run the estimator puts above HOST_SHARE of the
    computer's free memory at its data's longest example (cut at max_length; the longest batch decides the memory)
    is refused with the changes that fit, instead of waking the out-of-memory killer, which may take the app, or
    another person's run, down with it. The run as set: on a processor engine.train does not turn checkpointing on
    by itself, and QLoRA needs a GPU."""
    if device != "cpu":
        return
    import psutil  # accelerate's dependency

    from engine import estimate

    free = psutil.virtual_memory().available / 2**30
    room = HOST_SHARE * free
    # the longest rows by characters, wherever they are in the file, besides the even sample
    widest = sorted(train_rows, key=lambda r: len(json.dumps(r, ensure_ascii=False)))[-LONGEST_ROWS:]
    lengths = data_lengths(spec, train_rows, tokenizer) + data_lengths(spec, widest, tokenizer)
    longest = min(max(lengths), spec.max_length) if lengths else spec.max_length
    try:
        req = replace(estimate.request_for(spec, model_path), seq=longest)
        need = estimate.peak_gib(req)
        if need <= room:
            return
        options = [
            o
            for o in estimate.alternatives(req, room)
            if "QLoRA" not in o["change"] and "CPU memory" not in o["change"]
        ]
    except (estimate.EstimateError, ValueError, OSError):
        return  # a model the estimator cannot read trains as asked
    raise SpecError(
        f"This run needs about {need:,.1f} GiB of memory at its longest examples ({longest} tokens), and this computer "
        f"(no GPU: it trains in its own memory) has {free:.1f} GiB free, of which a run may take {room:.1f}. "
        + (
            f"Changes that fit: {estimate.changes_words(options)}."
            if options
            else "Lower the maximum length or the batch size, or choose a smaller model."
        )
        + " Nothing was loaded; change the settings and start again."
    )


def decide_compile(spec: RunSpec, model_path: str, device: str, train_rows: list, tokenizer) -> None:
    """torch.compile of the decoder layers on a GPU when the run is long enough to pay back the minute the compile
    takes (engine/train/kernels.py compile_default), and said so; `extra: {compile: true|false}` decides instead.
    The length is the estimate's (engine.estimate.hours) for this GPU with the data's mean tokens per example, as the
    Estimate page times it; where they cannot be counted, every example at the full length (an upper bound)."""
    if device != "cuda":
        return
    if "compile" in spec.extra:
        MEMORY["compiled"] = bool(spec.extra["compile"])
        return
    from engine import estimate, hardware

    processes = max(spec.num_processes, 1)
    steps = spec.max_steps
    per_step = spec.per_device_train_batch_size * spec.gradient_accumulation_steps * processes
    if steps <= 0:
        steps = math.ceil(len(train_rows) * spec.num_train_epochs / per_step)
    try:
        req = replace(estimate.request_for(spec, model_path), examples=steps * per_step, epochs=1.0)
        # this run's GPUs, not every GPU the machine has (the time divides by them)
        gpu = replace(estimate.gpu_from_hardware(hardware.detected_hardware(hardware.detect_gpus())), count=processes)
        if not estimate.compiled(req, gpu):  # the rule the Estimate page shows, on this GPU; at the full length
            return  # the longest the run can take: shorter data does not change the answer
        req = replace(req, tokens_per_example=data_tokens(spec, train_rows, tokenizer))
        if not estimate.compiled(req, gpu):
            return
        minutes = estimate.hours(replace(req, compile=False), gpu)[1] * 60
    except (estimate.EstimateError, ValueError, OSError, AttributeError):
        return  # a model or GPU the estimator cannot read trains as asked
    spec.extra["compile"] = MEMORY["compiled"] = True
    print(
        f"kernels: torch.compile chosen (about {minutes:.0f} min without it): the first step waits about a "
        "minute for the compile, every later step is faster",
        flush=True,
    )


def data_tokens(spec: RunSpec, rows: list, tokenizer) -> int:
    """Mean tokens of an example of these rows once cut at max_length; 0 (every example fills max_length) where
    they cannot be counted."""
    from engine.estimate import mean_tokens

    return mean_tokens(data_lengths(spec, rows, tokenizer), spec.max_length)


def data_lengths(spec: RunSpec, rows: list, tokenizer) -> list[int]:
    """Tokens of each of up to 5000 evenly spaced rows before truncation, counted with the run's own tokenizer the
    way the Data page counts them (engine.datastats); [] where they cannot be counted."""
    from engine import datastats

    try:
        tok = datastats.ChatTokenizer.from_transformers(tokenizer)
        return datastats.lengths_of(datastats.evenly(rows), spec.stage, tok)
    except Exception:  # noqa: BLE001  (no chat template, a slow tokenizer, a template error: the upper bound holds)
        return []


def measured_peak_gib() -> float | None:
    """What NVML shows this process using on its GPU, in GiB (the CUDA context included, as nvidia-smi shows it);
    None without NVML or when this process is not listed."""
    try:
        import pynvml

        pynvml.nvmlInit()
        gpu = int(os.environ.get("LOCAL_RANK", "0"))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible and visible.split(",")[gpu].strip().isdigit():
            gpu = int(visible.split(",")[gpu])
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return proc.usedGpuMemory / 2**30
    except Exception:  # noqa: BLE001  (no NVML, no permission, a GPU named by UUID: no measurement)
        return None
    return None


def checkpointed_layers(model, args) -> str:
    """What the trainer actually set on the model's decoder layers, for train.log: "on for 14 of 28 layers"."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    on = sum(bool(getattr(m, "gradient_checkpointing", False)) for m in layers)
    offload = (args.activation_checkpointing_kwargs or {}).get("offload")
    return f"on for {on} of {len(layers)} decoder layers" + (", their inputs kept in CPU memory" if offload else "")


def checkpointing_kwargs(spec: RunSpec) -> dict | None:
    if not spec.gradient_checkpointing or sharded():
        return None
    import torch

    kwargs = {"every_n_layers": spec.checkpoint_every} if spec.checkpoint_every > 1 else {}
    if spec.checkpoint_offload and torch.cuda.is_available():
        kwargs["offload"] = True
    elif spec.checkpoint_offload:  # (transformers would ask for pinned memory, which a CPU-only torch cannot give)
        print("checkpoint offload: off, the run is on the processor (no GPU memory to save)", flush=True)
    return kwargs or None


def training_args(spec: RunSpec, run_dir: Path, precision: dict, has_eval: bool) -> dict:
    """TrainingArguments fields every stage shares; the stage adds its own and builds its TRL config."""
    return dict(
        output_dir=str(run_dir),
        max_steps=spec.max_steps,
        num_train_epochs=spec.num_train_epochs,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type,
        per_device_train_batch_size=spec.per_device_train_batch_size,
        per_device_eval_batch_size=spec.per_device_train_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        # under FSDP each wrapped layer checkpoints itself (fsdp_activation_checkpointing, engine/distributed.py)
        activation_checkpointing=spec.gradient_checkpointing and not sharded(),  # transformers 5.24: the new name
        # every n-th layer / inputs in CPU memory: transformers' Trainer takes both out of these kwargs
        # (activation_checkpointing_enable); None keeps its default (non-reentrant, every layer, on the GPU)
        activation_checkpointing_kwargs=checkpointing_kwargs(spec),
        optim=spec.optim,
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=spec.logging_steps,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=spec.eval_steps,
        # With held-out data, checkpoint rotation never deletes the one with the lowest held-out loss, so a
        # stop after overfitting began still has the best model on disk (status.json names it).
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        # Off unless asked; a tracker that cannot work is turned off with a sentence, never fails the run.
        report_to=tracking.setup(spec.report_to, run_dir, is_main_process()),
        run_name=Path(run_dir).name,
        disable_tqdm=False,
        dataloader_num_workers=0,
        **precision,
        # the CPU test path of FSDP keeps the state distributed.allow_on_cpu set (TrainingArguments resets it)
        **({"accelerator_config": {"use_configured_state": True}} if sharded() and precision.get("use_cpu") else {}),
    )


class StopRequested:
    """SIGTERM/SIGINT ask for a graceful stop: finish the step under way, save it as a checkpoint, exit. Before this
    process has finished a step there is nothing new to save, so it ends at once (the stopper would otherwise wait
    out the model's loading and a whole first step, only to kill it). How long a stop may take is measured and kept
    in status.json (`stop_s`, see run_dir_callback), so the stopper (engine/runs/local.py) waits that long."""

    requested = False
    step_finished = False  # a step finished in this process: from then on a stop saves a checkpoint

    @classmethod
    def install(cls, run_dir: Path | None = None):
        cls.requested = cls.step_finished = False  # a caller may train more than once in its process

        def handler(signum, frame):
            cls.requested = True
            if cls.step_finished:
                print(f"stop requested (signal {signum}): finishing this step, then saving a checkpoint", flush=True)
                return
            print("stop requested before a training step finished: nothing to save, ending now", flush=True)
            if run_dir is not None and is_main_process():
                rundir.write_status(run_dir, "stopped", finished_at=time.time())
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # not SystemExit: a library's `except BaseException` or a finally could carry on loading

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def mfu_basis(spec: RunSpec, model_path: str) -> tuple[float, float] | None:
    """(model FLOPs per token, peak FLOP/s of all devices training) for the live MFU figure
    (engine.estimate.model_flops_per_token, attention left out as in the usual 6N figure). None when the model or
    the device's peak is unknown."""
    try:
        import torch

        from engine import estimate, hardware

        per_token = estimate.model_flops_per_token(estimate._shape(model_path), spec.stage, spec.method)
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            peak = hardware.peak_tflops(props.name, props.total_memory / 2**30) * spec.num_processes
        else:
            peak = hardware.peak_tflops("cpu", 0)
    except Exception:  # noqa: BLE001  (a model the estimator cannot read trains without the figure)
        return None
    return (per_token, peak * 1e12) if peak else None


def run_dir_callback(run_dir: Path, mfu: tuple[float, float] | None = None):
    """A TrainerCallback that appends every log to metrics.jsonl and keeps status.json's progress current.
    mfu: mfu_basis(...), to log model FLOP utilisation next to tokens per second."""
    from transformers import TrainerCallback

    class RunDirCallback(TrainerCallback):
        def __init__(self):
            self.last_status = 0.0
            self.step_started = None  # time.time() at on_step_begin
            self.recent_steps_s = collections.deque(maxlen=5)  # the first (slow) steps count until 5 newer ones
            self.saving_since = self.evaluating_since = None
            self.save_s = self.eval_s = 0.0  # the last checkpoint save and evaluation took
            self.last_log = None  # (time, tokens) for tokens/s
            self.peak = 0.0  # GiB NVML showed this process using, the highest so far

        def on_train_begin(self, args, state, control, model=None, **kw):
            if not state.is_world_process_zero:
                return
            if args.activation_checkpointing and model is not None:
                print(f"gradient checkpointing: {checkpointed_layers(model, args)}", flush=True)
            rundir.write_status(
                run_dir,
                "running",
                step=state.global_step,
                max_steps=state.max_steps,
                started_at=time.time(),
                pid=os.getpid(),
                finished_at=None,
            )

        def on_step_begin(self, args, state, control, **kw):
            self.step_started = time.time()

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            StopRequested.step_finished = True
            if self.step_started is not None:
                self.recent_steps_s.append(now - self.step_started)
            if StopRequested.requested:  # save this step now; its evaluation would only make the stop wait
                control.should_save = True
                control.should_training_stop = True
                control.should_evaluate = False
            if control.should_save:
                self.saving_since = now
            if control.should_evaluate:
                self.evaluating_since = now
            if (
                state.is_world_process_zero and now - self.last_status > 1.0
            ):  # throttled: a fast GPU step should not wait on a file write
                rundir.write_status(
                    run_dir,
                    "running",
                    step=state.global_step,
                    max_steps=state.max_steps,
                    epoch=state.epoch,
                    stop_s=round(self.stop_s(), 2),
                )
                self.last_status = now

        def stop_s(self) -> float:
            """Seconds a stop may need at worst: a stop that comes as an evaluation begins waits for it, the next
            step and the checkpoint's save."""
            return max(self.recent_steps_s, default=0.0) + self.eval_s + self.save_s

        def on_evaluate(self, args, state, control, **kw):
            if self.evaluating_since is not None:
                self.eval_s, self.evaluating_since = time.time() - self.evaluating_since, None
            if StopRequested.requested:  # a stop during the evaluation: save the step it evaluated, no more steps
                control.should_save = True
                control.should_training_stop = True

        def on_save(self, args, state, control, **kw):
            if self.saving_since is not None:
                self.save_s, self.saving_since = time.time() - self.saving_since, None
                if state.is_world_process_zero:
                    rundir.write_status(run_dir, "running", stop_s=round(self.stop_s(), 2))
            if StopRequested.requested:  # a stop during a periodic save: that checkpoint is the last finished step
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero:
                return
            record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **(logs or {})}
            tokens = record.get("num_tokens")
            if tokens is not None and self.last_log and tokens > self.last_log[1]:
                record["tokens_per_second"] = (tokens - self.last_log[1]) / (record["time"] - self.last_log[0])
                if mfu:
                    record["mfu_percent"] = 100 * record["tokens_per_second"] * mfu[0] / mfu[1]
            if tokens is not None:
                self.last_log = (record["time"], tokens)
            record["memory_gib"] = _memory_gib()
            if allocated := _allocated_gib():
                record["memory_allocated_gib"] = allocated
            rundir.append_metrics(run_dir, record)
            if "predicted_peak_gib" in MEMORY and (used := measured_peak_gib()) and used > self.peak + 0.01:
                self.peak = used  # NVML's figure for this process: the allocator's reserve + the CUDA context
                memory = {k: v for k, v in MEMORY.items() if k != "request"}
                rundir.write_status(run_dir, "running", memory={**memory, "measured_peak_gib": round(used, 2)})

    return RunDirCallback()


def _memory_gib() -> float:
    """Peak memory of this process: CUDA reserved on a GPU, max resident set size on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_reserved() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _allocated_gib() -> float | None:
    """The most torch's tensors have held at once on the GPU (the reserve above it is the allocator's)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def load_splits(spec: RunSpec) -> tuple[list[dict], list[dict]]:
    """Train and held-out rows in TRL's layout for the stage. The bundled sets ship a test split; a user's file
    gives up 5 % (at most 200 rows) for evaluation when it has at least 100 rows."""
    from engine import data

    if not spec.dataset_name:
        train = data.load_for_stage(data.bundled(spec.stage, "train"), spec.stage)
        held_out = data.load_for_stage(data.bundled(spec.stage, "test"), spec.stage)
        return train, held_out[:32]  # enough for a held-out curve; each CPU eval pass costs ~1 s a row
    rows = data.load_for_stage(Path(spec.dataset_name).expanduser(), spec.stage)
    if len(rows) < 100:
        return rows, []
    n_eval = min(200, len(rows) // 20)
    return rows[:-n_eval], rows[-n_eval:]


def train(trainer, run_dir: Path, resume: bool) -> None:
    checkpoint = rundir.last_checkpoint(run_dir) if resume else None
    if checkpoint is not None and is_main_process():
        trim_metrics_after(run_dir, int(checkpoint.name.split("-")[-1]))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def sharded() -> bool:
    """This process is one of an FSDP run's (engine/distributed.py sets accelerate's environment for it)."""
    return os.environ.get("ACCELERATE_USE_FSDP") == "true" and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def trim_metrics_after(run_dir: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the continued curve does not double back."""
    kept = [r for r in rundir.read_metrics(run_dir) if r.get("step", 0) <= step]
    tmp = run_dir / ".metrics.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, run_dir / "metrics.jsonl")


def explain_failure(exc: BaseException) -> str:
    """A sentence for status.json: what happened and the cheapest change that would help."""
    import re

    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        asked = re.search(r"Tried to allocate ([\d.]+ \w+)", text)
        total = re.search(r"total capacity of ([\d.]+ \w+)", text)
        return (
            f"Out of GPU memory: the step tried to allocate {asked[1] if asked else '?'} more on a GPU with "
            f"{total[1] if total else '?'} in all"
            + (
                f", {MEMORY['free_at_start_gib']:.1f} GiB of it free when this run started. "
                if "free_at_start_gib" in MEMORY
                else ". "
            )
            + oom_advice()
        )
    if "can't allocate memory" in text:  # the CPU allocator's words
        asked = re.search(r"allocate (\d+) bytes", text)
        return (
            f"Out of memory (RAM): the step asked for {int(asked[1]) / 2**30:.1f} GiB more. "
            if asked
            else "Out of memory (RAM). "
        ) + CHEAPER
    if "bitsandbytes" in text.lower() or type(exc).__module__.startswith("bitsandbytes"):
        return (
            f"QLoRA failed in bitsandbytes, which does the 4-bit part ({text.strip()[:300]}). bitsandbytes needs "
            "a backend for this device (CUDA, or its CPU backend); choose LoRA here, or run QLoRA on a GPU."
        )
    return f"{type(exc).__name__}: {text}".strip()


def oom_advice() -> str:
    """The changes that would fit the memory that was free, from the estimator, never one already on; the generic
    list when the pre-flight did not run (a model the estimator cannot read)."""
    req, free = MEMORY.get("request"), MEMORY.get("free_at_start_gib")
    if req is None or free is None:
        return CHEAPER
    from engine import estimate

    # the run did not fit, so ask for changes that fit below what the estimate said this run needs
    budget = min(free + estimate.vram.CONTEXT_GIB, MEMORY.get("predicted_peak_gib", free) * 0.9)
    options = estimate.alternatives(req, budget)
    if not options:
        return "Choose a smaller model or a GPU with more free memory."
    return (
        "Changes that would need less: " + "; ".join(f"{o['change']} (~{o['peak_gib']:.1f} GiB)" for o in options) + "."
    )


CHEAPER = (
    "Cheapest changes, in order: halve the batch size (raise gradient accumulation to keep the effective "
    "batch), turn on gradient checkpointing, shorten the maximum length, or switch to QLoRA."
)


def finish_ok(trainer, tokenizer, run_dir: Path) -> int:
    """Save final/ (adapter or full model) unless the run was stopped; write the closing status. Every process
    calls save_model (FSDP gathers the weights from all of them); only rank 0 writes."""
    if StopRequested.requested:
        if not is_main_process():
            return 0
        rundir.write_status(
            run_dir,
            "stopped",
            step=trainer.state.global_step,
            finished_at=time.time(),
            best_checkpoint=trainer.state.best_model_checkpoint,
        )
        return 0
    final = run_dir / "final"
    tmp = run_dir / "final.tmp"
    if is_main_process():
        shutil.rmtree(tmp, ignore_errors=True)
    if sharded():  # checkpoints stay sharded for resume; final/ is one ordinary model (or adapter)
        save_gathered(trainer, tmp)
    else:
        trainer.save_model(str(tmp))
    if not is_main_process():
        return 0
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(final, ignore_errors=True)  # a resumed, extended run replaces its old result
    os.replace(tmp, final)  # a half-written final/ never looks finished
    summary = {
        k: v
        for k, v in (trainer.state.log_history[-1] if trainer.state.log_history else {}).items()
        if isinstance(v, (int, float))
    }
    rundir.write_status(
        run_dir, "completed", step=trainer.state.global_step, finished_at=time.time(), final_metrics=summary
    )
    return 0


def save_gathered(trainer, out: Path) -> None:
    """FSDP: gather the full weights from every rank (each calls this) and let rank 0 save one ordinary model or
    adapter. PEFT's own save finds adapter weights by walking the model's modules, whose names FSDP's activation
    checkpointing changes (`._checkpoint_wrapped_module`), so it would write an empty adapter: the adapter is taken
    from the gathered state by name here, in PEFT's file layout."""
    state = trainer.accelerator.get_state_dict(trainer.model)  # a collective: every rank takes part
    if not is_main_process():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(model, "peft_config"):
        model.save_pretrained(str(out), state_dict=state)
        return
    from safetensors.torch import save_file

    name = "default"
    adapter = {
        k.replace("_checkpoint_wrapped_module.", "").replace(f".{name}.", "."): v.contiguous()
        for k, v in state.items()
        if ".lora_" in k and f".{name}." in k
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    model.peft_config[name].save_pretrained(str(out))
    save_file(adapter, str(Path(out) / "adapter_model.safetensors"), metadata={"format": "pt"})


def fail(run_dir: Path | None, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    if run_dir is not None and run_dir.is_dir() and is_main_process():
        rundir.write_status(run_dir, "failed", error=message, finished_at=time.time())
    return code
