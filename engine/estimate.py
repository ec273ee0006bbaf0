"""VRAM, time and cost of a training run before it is launched: pure arithmetic from config.json, no torch.

    python -m engine.estimate --model Qwen/Qwen2.5-0.5B --stage sft --method lora --seq 2048 --batch 8 --gpu h200
    python -m engine.estimate --model meta-llama/Llama-3.1-8B --method qlora --grad-ckpt --gpu rtx-4090 --json

Defaults are RunSpec's, so the estimate describes the run `python -m engine.train` launches with the same flags.
Memory: engine/vram.py. Time: model FLOPs per token (PaLM paper, Chowdhery et al. 2022, appendix B: 6N for full
training; 4N with frozen weights since no weight gradients are computed; +2N for the forward recomputed under
gradient checkpointing) over the GPU's peak dense bf16 rate times a measured utilisation, combined with the time the
host takes to queue a step's kernels, which dominates small models (assets/mfu.yaml, fitted to H200 runs).
"""

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import yaml

from engine import catalog, paths, vram
from engine.models import ModelError
from engine.spec import DISTRIBUTED, METHODS, STAGES, RunSpec
from engine.train import kernels

_DEFAULT = RunSpec()
# Checkpointed layers' inputs copied to pinned host memory and back (transformers' offload: torch's save_on_cpu,
# synchronous copies on the compute stream); a PCIe 4/5 host link, not yet measured here
OFFLOAD_BYTES_PER_S = 20e9
# The checkpointing engine.train tries, fastest first, when a run does not fit without (checkpointing_choice):
# every n-th layer (fewer recomputed), every layer, every layer with the inputs in CPU memory
CHECKPOINT_LADDER = ((8, False), (4, False), (3, False), (2, False), (1, False), (1, True))


class EstimateError(ValueError):
    """An input that cannot be estimated; the message says what and what to do."""


@dataclass(frozen=True)
class Gpu:
    name: str
    vram_gib: float
    tflops_bf16: float
    usd_per_hour: float | None = None
    count: int = 1
    mfu_class: str = "other"
    cuda: bool = True  # an NVIDIA GPU, where engine.train uses its GPU-only kernels (engine/train/kernels.py)


@dataclass(frozen=True)
class EstimateRequest:
    model: str = _DEFAULT.model_name_or_path
    stage: str = _DEFAULT.stage
    method: str = _DEFAULT.method
    seq: int = _DEFAULT.max_length
    batch: int = _DEFAULT.per_device_train_batch_size
    grad_ckpt: bool = _DEFAULT.gradient_checkpointing
    ckpt_every: int = _DEFAULT.checkpoint_every  # with grad_ckpt: every n-th layer only
    ckpt_offload: bool = _DEFAULT.checkpoint_offload  # with grad_ckpt: the layers' inputs in CPU memory
    lora_r: int = _DEFAULT.lora_r
    lora_targets: str = _DEFAULT.lora_target_modules
    lora_dropout: float = _DEFAULT.lora_dropout
    optimizer: str = _DEFAULT.optim
    attn: str = "auto"  # the family's choice in transformers (eager for softcapped Gemma-2); sdpa | eager
    gpu: str = "h200"  # a key of assets/gpus.yaml (engine.hardware presets)
    examples: int = 1000
    epochs: float = _DEFAULT.num_train_epochs
    tokens_per_example: int = 0  # mean tokens of an example; 0 = every example fills seq
    gpus: int = 1  # processes training together, one per GPU (RunSpec.num_processes)
    distributed: str = _DEFAULT.distributed  # ddp | fsdp (engine/distributed.py)
    offload: bool = _DEFAULT.fsdp_offload  # fsdp: shards wait in CPU memory
    # On CUDA, Liger's fused kernels where the family has them (engine/train/kernels.py). None: not known to run on
    # CUDA: the time takes the method's default (a processor's class has no Liger factor), the memory HF's kernels
    # (the larger figure). request_for() says True or False: what engine.train will do on a GPU.
    liger: bool | None = None
    # On CUDA, torch.compile of the decoder layers (engine/train/kernels.py compile_default). None: engine.train's
    # choice for a CUDA run (long LoRA SFT runs), no compile elsewhere; True/False: as `extra: {compile: ...}`.
    compile: bool | None = None

    def __post_init__(self):
        if self.stage not in STAGES:
            raise EstimateError(f"Unknown stage '{self.stage}'. Choose one of: {', '.join(STAGES)}.")
        if self.method not in METHODS:
            raise EstimateError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")
        for name, low, high in (
            ("seq", 16, 1 << 20),
            ("batch", 1, 65536),
            ("lora_r", 1, 1024),
            ("examples", 1, 10**10),
        ):
            if not low <= getattr(self, name) <= high:
                raise EstimateError(f"{name} is {getattr(self, name)}; give a whole number from {low} to {high}.")
        if not 0 < self.epochs <= 1000:
            raise EstimateError(f"epochs is {self.epochs}; give a number above 0 and at most 1000.")
        if not 1 <= self.gpus <= 1024:
            raise EstimateError(f"gpus is {self.gpus}; give a whole number from 1 to 1024.")
        if self.distributed not in DISTRIBUTED:
            raise EstimateError(f"Unknown distributed mode '{self.distributed}'. Choose ddp or fsdp.")
        if self.optimizer not in vram.OPTIMIZERS:
            raise EstimateError(f"Unknown optimizer '{self.optimizer}'. Choose one of: {', '.join(vram.OPTIMIZERS)}.")
        if self.attn not in ("auto", "sdpa", "flash_attention_2", "eager"):
            raise EstimateError(
                f"Unknown attention implementation '{self.attn}'; use auto, sdpa, flash_attention_2 or eager."
            )


@dataclass
class Estimate:
    model: str
    gpu: str
    params: int
    trainable_params: int
    peak_gib: float  # what NVML / nvidia-smi will show in use, CUDA context included
    capacity_gib: float
    fits: bool
    headroom_gib: float  # capacity - peak; negative = short by that much
    breakdown_gib: dict = field(default_factory=dict)
    max_batch: int = 0  # largest micro-batch that fits with the other settings (0 = none)
    max_seq: int = 0  # largest sequence length (multiple of 128) that fits (0 = none)
    tokens: float = 0.0
    hours: float = 0.0
    usd: float | None = None
    fix: str = ""  # the cheapest change that makes a run that does not fit, fit
    gpus: int = 1  # the figures are per GPU, each of this many
    distributed: str = "ddp"
    sharding: str = ""  # engine.estimate.sharding_advice: FSDP would fit where DDP does not
    alternatives: list = field(default_factory=list)  # [{change, peak_gib}] that fit, cheapest first
    caveat: str = ""  # where the figure is less certain than usual, and which way it errs
    compiled: bool = False  # engine.train compiles this run's layers first (a long run on CUDA): in the time


def load_gpu(key: str) -> Gpu:
    """A preset from assets/gpus.yaml (read through engine.hardware), with its utilisation class."""
    from engine import hardware

    try:
        preset = hardware.load_presets()[key]
    except KeyError:
        raise EstimateError(
            f"Unknown GPU preset '{key}'. Choose one of: {', '.join(hardware.load_presets())}."
        ) from None
    return Gpu(
        name=preset.name,
        vram_gib=preset.vram_gib,
        tflops_bf16=preset.tflops_bf16,
        usd_per_hour=preset.usd_per_hour,
        mfu_class=_mfu()["presets"].get(key, "other"),
        cuda=preset.kind == "cuda",
    )


def gpu_from_hardware(hw) -> Gpu:
    """The page's st.session_state.hardware (engine.hardware.Hardware or alike) as a Gpu."""
    key = getattr(hw, "preset", "") or ""
    return Gpu(
        name=hw.name,
        vram_gib=float(hw.vram_gib),
        tflops_bf16=float(getattr(hw, "tflops_bf16", 0) or 0),
        usd_per_hour=getattr(hw, "usd_per_hour", None),
        count=int(getattr(hw, "count", 1) or 1),
        mfu_class=_mfu()["presets"].get(key, "other"),
        cuda=getattr(hw, "kind", "cuda") == "cuda",
    )


@lru_cache(maxsize=1)
def _mfu() -> dict:
    return yaml.safe_load((paths.ASSETS / "mfu.yaml").read_text())


@lru_cache(maxsize=64)
def _shape(model: str) -> vram.Shape:
    try:
        return vram.Shape.from_config(catalog.load_config(model))
    except ModelError as e:
        raise EstimateError(str(e)) from None
    except ValueError as e:
        raise EstimateError(f"{model}: {e}") from None


def _plan(req: EstimateRequest) -> vram.MemoryPlan:
    return vram.MemoryPlan(
        stage=req.stage,
        method=req.method,
        seq=req.seq,
        batch=req.batch,
        grad_ckpt=req.grad_ckpt,
        ckpt_every=req.ckpt_every,
        ckpt_offload=req.ckpt_offload,
        # None (where it runs is not known): HF's kernels, the larger figure; a compiled run leaves Liger's out
        liger=req.liger is True and not req.compile and _shape(req.model).model_type in kernels.LIGER_FAMILIES,
        lora_r=req.lora_r,
        lora_targets=req.lora_targets,
        lora_dropout=req.lora_dropout,
        optimizer=req.optimizer,
        attn=req.attn,
        gpus=req.gpus,
        distributed=req.distributed,
        offload=req.offload,
        gqa_repeat=varlen_repeats_kv(),
    )


@lru_cache(maxsize=1)
def varlen_repeats_kv() -> bool:
    """torch's varlen attention gained enable_gqa in 2.13; before, engine/train/fast.py repeats k and v for
    grouped-query models (read from the installed version: this process never imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("torch").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return True  # unknown: the larger figure
    return (major, minor) < (2, 13)


def peak_gib(req: EstimateRequest) -> float:
    return sum(vram.breakdown_bytes(_shape(req.model), _plan(req)).values()) / vram.GIB


def request_for(spec: RunSpec, model: str | None = None) -> EstimateRequest:
    """The estimate of the run `engine.train` launches for this spec (model: the resolved weights, if known)."""
    return EstimateRequest(
        model=model or spec.model_name_or_path,
        stage=spec.stage,
        method=spec.method,
        seq=spec.max_length,
        batch=spec.per_device_train_batch_size,
        grad_ckpt=spec.gradient_checkpointing,
        ckpt_every=spec.checkpoint_every,
        ckpt_offload=spec.checkpoint_offload,
        lora_r=spec.lora_r,
        lora_targets=spec.lora_target_modules,
        lora_dropout=spec.lora_dropout,
        optimizer=spec.optim,
        gpus=spec.num_processes,
        distributed=spec.distributed,
        offload=spec.fsdp_offload,
        liger=kernels.liger_wanted(spec.extra, spec.method),
        compile=spec.extra.get("compile"),
    )


def checkpointing_needed(req: EstimateRequest, free_gib: float) -> tuple[bool, float]:
    """(turn gradient checkpointing on?, peak GiB without it). Checkpointing recomputes the forward pass (~1/3
    more compute; bench/results/throughput.md: plain TRL, always on, ran 1.15-2.6x slower than without), so
    engine.train keeps it off whenever the run fits the GPU's free memory without it, with 10 % to spare (LoRA
    DPO without checkpointing measured up to 8 % above the estimate on 0.5B-8B, bench/results/estimate_accuracy.md),
    and turns it on only when it would not (free_gib: free memory besides this process's CUDA context)."""
    without = peak_gib(replace(req, grad_ckpt=False))
    return without - vram.CONTEXT_GIB > 0.90 * free_gib, without


def checkpointing_choice(req: EstimateRequest, free_gib: float) -> tuple[EstimateRequest, float]:
    """(the request with the checkpointing engine.train uses, peak GiB without any). No checkpointing when the run
    fits without it, with 10 % to spare (as checkpointing_needed); else the first rung of CHECKPOINT_LADDER that
    fits with the same margin: checkpointing every n-th layer recomputes 1/n of the forward instead of all of it
    (selective, instead of all-or-nothing), and offloading the inputs is the last resort before a smaller batch.
    When nothing fits, every layer on the GPU (the pre-flight has refused the run before). Checkpointing the person
    asked for (req.grad_ckpt) is kept as asked, with the inputs in CPU memory when only that fits (without: 0.0,
    not worked out)."""
    if req.grad_ckpt:
        offloaded = replace(req, ckpt_offload=True)
        too_big = peak_gib(req) - vram.CONTEXT_GIB > free_gib
        return (offloaded if too_big and peak_gib(offloaded) - vram.CONTEXT_GIB <= free_gib else req), 0.0
    needed, without = checkpointing_needed(req, free_gib)
    if not needed:
        return replace(req, grad_ckpt=False, ckpt_every=1, ckpt_offload=False), without
    for every, offload in CHECKPOINT_LADDER:
        rung = replace(req, grad_ckpt=True, ckpt_every=every, ckpt_offload=offload)
        if peak_gib(rung) - vram.CONTEXT_GIB <= 0.90 * free_gib:
            return rung, without
    return replace(req, grad_ckpt=True, ckpt_every=1, ckpt_offload=False), without


def trained_as(req: EstimateRequest, gpu: Gpu) -> EstimateRequest | None:
    """What engine.train's pre-flight (engine/train/common.py decide_grad_ckpt) makes of this run on this GPU, idle:
    the checkpointing it turns on by itself, also for a run that fits the whole GPU but not with the 10 % the
    trainer keeps spare. None when it trains as set, or does not fit even so (the pre-flight refuses it)."""
    chosen = checkpointing_choice(req, gpu.vram_gib - vram.CONTEXT_GIB)[0]  # an idle GPU: all free but the context
    return chosen if chosen != req and peak_gib(chosen) <= gpu.vram_gib else None


def checkpointing_words(req: EstimateRequest) -> str:
    """How a run checkpoints, in words: "off", "on, every layer", "on for 14 of 28 layers (every 2)", and whether
    the checkpointed inputs wait in CPU memory."""
    if not req.grad_ckpt:
        return "off"
    layers = _shape(req.model).layers
    n = vram.checkpointed_layers(layers, req.ckpt_every)
    words = "on, every layer" if n >= layers else f"on for {n} of {layers} layers (every {req.ckpt_every})"
    return words + (", their inputs kept in CPU memory" if req.ckpt_offload else "")


def model_flops_per_token(shape: vram.Shape, stage: str, method: str, attention_span: float = 0.0) -> float:
    """Model FLOPs a training step spends per token (PaLM, Chowdhery et al. 2022, appendix B): 6N for full
    fine-tuning, 4N with frozen weights (no weight gradients), + causal attention 6 L h s for sequences of
    attention_span tokens (12 L h s halved by the mask; 0 leaves attention out, as the usual 6N figure does), +2N for
    the reference model's forward in DPO and RL. Recomputation under checkpointing is not model work: not counted."""
    n = shape.params()
    flops = (6 if method == "full" else 4) * n + 6 * shape.layers * shape.hidden * attention_span
    if stage in ("dpo", "rl"):
        flops += 2 * n  # the reference model's forward (adapter disabled, or a copy)
    return flops


def compiled(req: EstimateRequest, gpu: Gpu) -> bool:
    """Whether engine.train compiles this run's layers on this GPU: as the request says, else its rule on the time
    the run takes without (engine/train/kernels.py compile_default; only on CUDA)."""
    if req.compile is not None or not gpu.cuda:
        return bool(req.compile)
    eager = hours(replace(req, compile=False), gpu)[1] * 60
    return eager == eager and kernels.compile_default(req.stage, req.method, eager, max(req.gpus, gpu.count))


def hours(req: EstimateRequest, gpu: Gpu) -> tuple[float, float]:
    """(training tokens, hours) for examples x epochs: steps x the step time of assets/mfu.yaml's model for this
    GPU class (the GPU's share and the host's share of a step, measured), + the compile where engine.train
    compiles (compiled())."""
    shape = _shape(req.model)
    n = shape.params()
    per_example = req.tokens_per_example or req.seq
    rows = 2 if req.stage in ("dpo", "rm") else 1  # chosen and rejected
    tokens = req.examples * req.epochs * per_example * rows
    flops_per_token = model_flops_per_token(shape, req.stage, req.method, per_example)
    recomputed = vram.checkpointed_layers(shape.layers, req.ckpt_every) / shape.layers if req.grad_ckpt else 0.0
    flops_per_token += 2 * n * recomputed  # one more forward of the checkpointed layers
    if req.stage == "rl":
        flops_per_token += 4 * n  # rough: generating the rollouts + scoring them
    if gpu.tflops_bf16 <= 0:
        return tokens, float("nan")
    cls = _mfu()["classes"].get(gpu.mfu_class, _mfu()["classes"]["other"])
    step_tokens = req.batch * per_example * rows
    mfu = cls["mfu"] * (cls.get("dpo_factor", 1.0) if req.stage == "dpo" else 1.0)
    gpu_s = step_tokens * flops_per_token / (gpu.tflops_bf16 * 1e12 * mfu)
    compiling = compiled(req, gpu)
    liger = kernels.liger_default(req.method) if req.liger is None else req.liger
    if compiling:  # inductor's fused kernels instead of Liger's, and far fewer kernels for the host to queue
        gpu_s /= cls.get("compile_speedup", 1.0)
    elif liger and shape.model_type in kernels.LIGER_FAMILIES:
        gpu_s /= cls.get("liger_speedup", 1.0)  # fewer passes over memory for norms, RoPE and the MLP's gate
    host_s = cls.get("host_ms_per_layer", {}).get(req.method, 0.0) / 1000 * shape.layers
    host_s *= (1 + 0.3 * recomputed) * (1.3 if req.stage == "dpo" else 1.0)
    if compiling:
        host_s *= cls.get("compile_host_factor", 1.0)
    if req.grad_ckpt and req.ckpt_offload:  # each checkpointed input to the host and back, on the compute stream
        gpu_s += 2 * step_tokens * 2 * shape.hidden * shape.layers * recomputed / OFFLOAD_BYTES_PER_S
    seconds = tokens / step_tokens * math.hypot(gpu_s, host_s) / max(req.gpus, gpu.count)
    seconds += kernels.COMPILE_FIRST_STEP_S if compiling else 0.0
    return tokens, seconds / 3600


def largest_fitting(req: EstimateRequest, capacity_gib: float, name: str, high: int, step: int = 1) -> int:
    """Largest value of `name` (batch or seq) in [step, high] that fits; memory grows with both, so bisect."""
    if peak_gib(replace(req, **{name: step})) > capacity_gib:
        return 0
    lo, hi = 1, high // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if peak_gib(replace(req, **{name: mid * step})) <= capacity_gib:
            lo = mid
        else:
            hi = mid - 1
    return lo * step


def _changes(req: EstimateRequest) -> list[tuple[EstimateRequest, str]]:
    """Single changes that lower the peak, cheapest first: what costs only time, then memory-saving tricks that
    keep quality, then sharding, then the method, and shorter sequences last (they change what the model learns
    from). Never one that is already on."""
    tries = []
    if not req.grad_ckpt:
        tries.append((replace(req, grad_ckpt=True), "turn on gradient checkpointing (about 30% slower)"))
    for b in (req.batch // 2, req.batch // 4, 1):
        if 1 <= b < req.batch and all(c.batch != b or c.grad_ckpt != req.grad_ckpt for c, _ in tries):
            tries.append(
                (
                    replace(req, batch=b),
                    f"lower the micro-batch to {b} and raise gradient accumulation "
                    f"x{req.batch // b} to keep the effective batch",
                )
            )
    if req.grad_ckpt is False and req.batch > 1:
        tries.append(
            (
                replace(req, grad_ckpt=True, batch=1),
                f"turn on gradient checkpointing and use micro-batch 1 with gradient accumulation x{req.batch}",
            )
        )
    if req.optimizer.startswith("adamw_torch") and req.method == "full":  # LoRA's optimizer state is tiny
        tries.append((replace(req, optimizer="adamw_8bit"), "use the 8-bit optimizer adamw_8bit"))
    if req.gpus > 1 and req.distributed == "ddp":
        tries.append(
            (
                replace(req, distributed="fsdp"),
                f"shard the model across the {req.gpus} GPUs with FSDP (distributed: fsdp)",
            )
        )
    if req.distributed == "fsdp" and not req.offload:
        tries.append((replace(req, offload=True), "keep the shards in CPU memory (fsdp_offload; slower)"))
    for m in ("lora", "qlora"):
        if METHODS.index(m) > METHODS.index(req.method):
            name = "QLoRA" if m == "qlora" else "LoRA"
            tries.append((replace(req, method=m), f"switch to {name}"))
            if not req.grad_ckpt or req.batch > 1:
                how = "micro-batch 1" if req.grad_ckpt else "gradient checkpointing and micro-batch 1"
                tries.append((replace(req, method=m, grad_ckpt=True, batch=1), f"switch to {name} with {how}"))
    for s in (req.seq // 2, req.seq // 4):
        if s >= 128:
            tries.append((replace(req, seq=s), f"shorten the maximum length to {s} tokens"))
    return tries


def alternatives(req: EstimateRequest, capacity_gib: float, most: int = 5) -> list[dict]:
    """The cheapest single changes that make the run fit capacity_gib, each with its peak: [{change, peak_gib}]."""
    out = []
    for candidate, sentence in _changes(req):
        peak = peak_gib(candidate)
        if peak <= capacity_gib:
            out.append({"change": sentence, "peak_gib": round(peak, 1)})
        if len(out) == most:
            break
    return out


def cheapest_fix(req: EstimateRequest, capacity_gib: float) -> str:
    """One change that makes the run fit, cheapest first (alternatives)."""
    found = alternatives(req, capacity_gib, most=1)
    if found:
        return f"{found[0]['change']}: {found[0]['peak_gib']:.1f} GiB"
    return "no single change fits this model on this GPU: choose a smaller model or a GPU with more memory"


def changes_words(options: list[dict]) -> str:
    """alternatives() as one sentence's list: 'change (N GiB); change (N GiB)'."""
    return "; ".join(f"{o['change']} ({o['peak_gib']:.1f} GiB)" for o in options)


def preflight(req: EstimateRequest, free_gib: float, where: str = "this GPU") -> str:
    """ "" when the run fits free_gib with checkpointing (engine.train turns it on by itself when needed); else a
    refusal that lists the cheapest changes that do fit, each with its estimate. free_gib: memory free for the run
    on the GPU, the CUDA context included (what NVML reports free before the process starts)."""
    ckpt = replace(req, grad_ckpt=True, ckpt_every=1)
    need = peak_gib(ckpt)
    if need <= free_gib or peak_gib(replace(ckpt, ckpt_every=1, ckpt_offload=True)) <= free_gib:
        return ""  # (offloading the checkpointed inputs to CPU memory is engine.train's last resort)
    options = alternatives(ckpt, free_gib)
    lines = changes_words(options)
    return (
        f"This run needs about {need:.1f} GiB even with gradient checkpointing, and {where} has {free_gib:.1f} "
        f"GiB free. "
        + (
            f"Changes that fit: {lines}."
            if options
            else "No single change fits: choose a smaller model, or a GPU with more free memory."
        )
    )


def largest_model(
    req: EstimateRequest, capacity_gib: float, method: str, gpu: Gpu | None = None, max_hours: float | None = None
) -> str | None:
    """The catalog model with the most parameters that trains with `method` and the other settings as asked; with
    max_hours, also within that time on `gpu` (on a processor, memory allows models far too slow to train)."""
    best, best_n = None, -1
    for entry in catalog.entries():
        candidate = replace(req, model=entry.name, method=method)
        n = _shape(entry.name).params()
        if (
            n > best_n
            and peak_gib(candidate) <= capacity_gib
            and (max_hours is None or hours(candidate, gpu)[1] <= max_hours)
        ):
            best, best_n = entry.name, n
    return best


# The showcase run (bench/showcase.py, the CPU path's plan engine.spec.CPU_RUN): LoRA SFT, 100 steps of 8 bundled
# Task API examples of 71 tokens on average (engine.datastats on the bundled set, as the Estimate page measures it).
SHOWCASE_RUN = EstimateRequest(examples=800, tokens_per_example=71)


def mean_tokens(lengths: list[int], seq: int) -> int:
    """Mean tokens per example once examples longer than seq are cut to seq (what a step computes on)."""
    return round(sum(min(n, seq) for n in lengths) / len(lengths)) if lengths else 0


def kernels_note(shape: vram.Shape, req: EstimateRequest, peak: float, gpu: Gpu) -> str:
    """Why QLoRA can take more memory than LoRA here: it trains with HF's kernels by default (Liger's measured no
    faster on 4-bit weights, engine/train/kernels.py), and at long sequences and large batches the activations
    Liger saves outweigh the 4-bit weights. Says what each would take instead; "" where that is not the case."""
    if req.method != "qlora" or req.liger or req.compile or shape.model_type not in kernels.LIGER_FAMILIES:
        return ""
    lora = replace(req, method="lora", liger=gpu.cuda and kernels.liger_default("lora"), compile=None)
    lora = peak_gib(replace(lora, compile=compiled(lora, gpu)))  # LoRA as engine.train would run it
    if lora >= peak:
        return ""
    with_liger = peak_gib(replace(req, liger=True))
    return (
        f"At this length and batch QLoRA takes more memory than LoRA would ({lora:.1f} GiB): QLoRA trains with HF's "
        "kernels by default (Liger's measured no faster with 4-bit weights), and the activations they keep outweigh "
        f"what 4-bit weights save. `extra: {{liger: true}}` in the plan brings QLoRA to {with_liger:.1f} GiB."
    )


def caveat(shape: vram.Shape, req: EstimateRequest) -> str:
    """A sentence where the estimate has not been measured for this kind of run, saying which side it errs on."""
    if shape.experts > 1 and shape.model_type == "qwen3_moe":
        return (
            "Qwen3-MoE was measured here on a 6-layer cut of Qwen3-30B-A3B with LoRA (within +2 % with and without "
            "checkpointing, bench/results/estimate_coverage.md); the router's own buffers are not counted, and "
            "full fine-tuning and QLoRA of it were not measured: leave 5 % spare."
        )
    if shape.experts > 1:
        return (
            f"{shape.model_type} is a mixture of experts ({shape.experts} experts, {shape.active_experts} per "
            "token) whose memory has not been measured here yet (only Qwen3-MoE was). The figure counts every "
            "expert's weights in 16 bit (gpt-oss's MXFP4 checkpoint is trained dequantised, and bitsandbytes "
            "leaves fused experts unquantised under QLoRA) and each token's routed copies, not the router's "
            "buffers; leave 10 % spare."
        )
    if req.distributed == "fsdp" and req.gpus > 1:
        return (
            "FSDP figures are arithmetic not yet measured on GPUs here; checked against published FSDP + QLoRA "
            "peaks within 0.93-1.08 (bench/results/fsdp_per_gpu.md)."
        )
    if req.stage == "rl":
        return (
            "RL (GRPO) was measured once here: Qwen3-0.6B LoRA rewarded by checks used 10 % less than this "
            "figure. The figure counts a reward model of the base's size even when checks score the answers, and the "
            "rollouts' KV cache roughly: leave 10 % spare."
        )
    if req.seq > 32768:
        return f"Sequences of {req.seq} tokens are longer than any run measured here (32768); leave 10 % spare."
    return ""


def sharding_advice(req: EstimateRequest, capacity_gib: float) -> str:
    """A sentence when a several-GPU run does not fit as DDP (a whole copy per GPU) but does with FSDP, saying why;
    "" otherwise."""
    if req.gpus < 2 or req.distributed != "ddp" or peak_gib(req) <= capacity_gib:
        return ""
    sharded = replace(req, distributed="fsdp")
    if peak_gib(sharded) > capacity_gib:
        sharded = replace(sharded, offload=True)
        if peak_gib(sharded) > capacity_gib:
            return ""
    how = "FSDP with its shards in CPU memory (distributed: fsdp, fsdp_offload)" if sharded.offload else "FSDP"
    return (
        f"With DDP every one of the {req.gpus} GPUs holds the whole model, its gradients and optimizer state: "
        f"{peak_gib(req):.1f} GiB each, more than {capacity_gib:.0f} GiB. {how} splits them {req.gpus} ways and "
        f"gathers one layer at a time: {peak_gib(sharded):.1f} GiB per GPU."
    )


def estimate_run(req: EstimateRequest, gpu: Gpu | None = None) -> Estimate:
    gpu = gpu or load_gpu(req.gpu)
    if gpu.count > 1 and req.gpus == 1:  # the hardware's GPUs train together (one process each)
        req = replace(req, gpus=gpu.count)
    if req.liger is None:  # the kernels engine.train uses on this GPU (the Estimate page passes the plan's)
        req = replace(req, liger=gpu.cuda and kernels.liger_default(req.method))
    if req.compile is None:  # what engine.train will do decides the memory too (a compiled run has HF's kernels')
        req = replace(req, compile=compiled(req, gpu))
    shape = _shape(req.model)
    parts = vram.breakdown_bytes(shape, _plan(req))
    peak = sum(parts.values()) / vram.GIB
    tokens, hrs = hours(req, gpu)
    trainable = shape.params() if req.method == "full" else shape.lora_params(req.lora_r, req.lora_targets)
    est = Estimate(
        model=req.model,
        gpu=gpu.name,
        params=shape.params(),
        trainable_params=trainable,
        peak_gib=round(peak, 3),
        capacity_gib=gpu.vram_gib,
        fits=peak <= gpu.vram_gib,
        headroom_gib=round(gpu.vram_gib - peak, 3),
        breakdown_gib={k: round(v / vram.GIB, 3) for k, v in parts.items() if v},
        max_batch=largest_fitting(req, gpu.vram_gib, "batch", 4096),
        max_seq=largest_fitting(req, gpu.vram_gib, "seq", 131072, step=128),
        tokens=tokens,
        hours=hrs,
        usd=None if gpu.usd_per_hour is None else round(hrs * gpu.usd_per_hour * max(gpu.count, req.gpus), 2),
        gpus=req.gpus,
        distributed=req.distributed,
        sharding=sharding_advice(req, gpu.vram_gib),
        compiled=bool(req.compile),
    )
    est.caveat = " ".join(filter(None, (caveat(shape, req), kernels_note(shape, req, peak, gpu))))
    if not est.fits:
        est.fix = cheapest_fix(req, gpu.vram_gib)
        est.alternatives = alternatives(req, gpu.vram_gib)
    return est


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.estimate", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=_DEFAULT.model_name_or_path,
        help="Hub id from the offline catalog, a local model directory, or 'embedded'",
    )
    p.add_argument("--stage", default=_DEFAULT.stage, choices=STAGES)
    p.add_argument("--method", default=_DEFAULT.method, choices=METHODS)
    p.add_argument("--seq", type=int, default=_DEFAULT.max_length)
    p.add_argument("--batch", type=int, default=_DEFAULT.per_device_train_batch_size)
    p.add_argument("--grad-ckpt", action="store_true", default=_DEFAULT.gradient_checkpointing)
    p.add_argument("--lora-r", type=int, default=_DEFAULT.lora_r)
    p.add_argument("--optimizer", default=_DEFAULT.optim)
    p.add_argument("--attn", default="auto", help="auto (the family's), sdpa, flash_attention_2 or eager")
    p.add_argument("--gpu", default="h200", help="preset key from engine/assets/gpus.yaml")
    p.add_argument("--gpus", type=int, default=1, help="GPUs training together; figures are per GPU")
    p.add_argument("--distributed", default=_DEFAULT.distributed, choices=DISTRIBUTED)
    p.add_argument("--offload", action="store_true", help="fsdp: keep the shards in CPU memory")
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument(
        "--tokens-each",
        type=int,
        default=0,
        help="mean tokens of an example (the Data page's figure; 0 = every example fills --seq): the time, and with "
        "it whether the run is compiled, which sets its kernels' memory",
    )
    p.add_argument("--epochs", type=float, default=_DEFAULT.num_train_epochs)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        req = EstimateRequest(
            model=a.model,
            stage=a.stage,
            method=a.method,
            seq=a.seq,
            batch=a.batch,
            grad_ckpt=a.grad_ckpt,
            lora_r=a.lora_r,
            optimizer=a.optimizer,
            attn=a.attn,
            gpu=a.gpu,
            gpus=a.gpus,
            distributed=a.distributed,
            offload=a.offload,
            examples=a.examples,
            epochs=a.epochs,
            tokens_per_example=min(a.tokens_each, a.seq),
        )
        est = estimate_run(req)
    except EstimateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(asdict(est), indent=1))
        return 0
    per = f" per GPU, each of {est.gpus} ({est.distributed.upper()})" if est.gpus > 1 else ""
    print(
        f"{est.model} on {est.gpu}: {est.peak_gib:.1f} GiB{per} of {est.capacity_gib:.0f} -> "
        + ("fits" if est.fits else f"does NOT fit (short by {-est.headroom_gib:.1f} GiB)")
    )
    for part, gib in est.breakdown_gib.items():
        print(f"  {part:26s} {gib:8.2f} GiB")
    print(
        f"largest micro-batch {est.max_batch}, largest sequence {est.max_seq}; "
        f"{est.tokens:,.0f} tokens ~ {est.hours:.2f} h"
        + (f", ${est.usd:.2f}" if est.usd is not None else "")
        + (" (compiled first: about a minute before the first step, faster steps after)" if est.compiled else "")
    )
    if est.fix:
        print(f"to fit: {est.fix}")
    if est.sharding:
        print(est.sharding)
    if est.caveat:
        print(f"note: {est.caveat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
