"""GPU-only speed levers on top of fast.py's padding-free batches (issue 19), each measured against a plain TRL
script by bench/throughput.py (bench/results/throughput.md). Nothing here runs on the CPU: every entry returns at
once unless the run trains on CUDA, and liger-kernel (the optional `gpu` extra, with Triton) is imported only
there, so a laptop without it trains exactly as before.

- Liger's fused Triton kernels (linkedin/Liger-Kernel) for RMSNorm, RoPE and SwiGLU/GeGLU, where Liger supports
  the architecture (Llama, Qwen2/3, Mistral, Gemma, Phi-3, ...). HF's RMSNorm is ~7 kernels forward (fp32 cast,
  pow, mean, rsqrt, mul, cast, mul), its RoPE ~10, SwiGLU 2; Liger's are one each way. On small models the step
  is bound by the host queueing kernels (GPU busy 14-20 % for 1B LoRA with checkpointing,
  bench/results/profiles-20261130.txt), so fewer kernels is time; on large ones it is fewer passes over memory.
  Not Liger's cross-entropy: TRL's fused LM head already never materialises the logits.
  On by default for full fine-tuning and LoRA (LIGER_BY_DEFAULT below says what was measured); `extra: {liger:
  false}` turns it off for one run, `extra: {liger: true}` on (QLoRA).
- torch.compile of each decoder layer, with dynamic shapes so that each padding-free batch's new length does not
  recompile (none over 8 steps of a chat-like length mix). It halves the host's share of a step: 2.09x the TRL
  script on Qwen3-0.6B LoRA SFT (bench/results/throughput-20261208-h100.md). By default for long LoRA SFT runs
  (compile_default below: the compile makes the first step wait about a minute); `extra: {compile: true|false}`
  decides for one run. A compiled run leaves Liger's kernels out: inductor fuses the same ops, and Liger's autograd
  functions stop dynamo's trace.
"""

import inspect

# On by default on CUDA (where liger-kernel is installed: `make install` adds it where nvidia-smi is) for full
# fine-tuning and LoRA, whose loss curves matched HF's kernels to 0.0 % (SFT) and 1.2 % (DPO) over 8 steps, and which
# it made 1.22-1.33x faster where the GPU bounds the step; not for QLoRA, where bitsandbytes' 4-bit path leaves the
# step bound by the host and Liger measured 0.90x (median of 4 against 3 runs on Qwen3-8B, within that host's noise,
# but no gain). bench/results/throughput-20261207b-h100.md. `extra: {liger: true|false}` decides for one run.
LIGER_BY_DEFAULT = True
LIGER_DEFAULT_METHODS = ("full", "lora")
# torch.compile of the decoder layers, by default on CUDA for LoRA SFT on one GPU when the run is long enough to
# pay back the compile (DPO, full fine-tuning and QLoRA wait for a measurement, bench/compile_call.sh): the first
# step waits ~1 min (64-74 s for Qwen3-0.6B and -8B on an H100, a cold cache) and every later step is faster
# (bench/results/throughput-20261208-h100.md). COMPILE_MIN_MINUTES is the estimated time without it above which it
# is chosen: at the ~2x measured where the host bounds the step, it pays after ~2 min.
COMPILE_BY_DEFAULT = True
COMPILE_STAGES = ("sft",)  # of the stages that call apply() below, the measured ones
COMPILE_METHODS = ("lora",)  # measured; QLoRA compiled took 1.8x the memory (compile_layers), full was not measured
COMPILE_MIN_MINUTES = 10.0
COMPILE_FIRST_STEP_S = 75.0  # the compile, for the estimate


def compile_default(stage: str, method: str, eager_minutes: float, processes: int = 1) -> bool:
    """torch.compile for a CUDA run of this stage that would take eager_minutes without it, unless its `extra:
    {compile: ...}` says otherwise. Not under several processes (DDP/FSDP: not measured)."""
    return (
        COMPILE_BY_DEFAULT
        and stage in COMPILE_STAGES
        and method in COMPILE_METHODS
        and processes <= 1
        and eager_minutes >= COMPILE_MIN_MINUTES
    )


# Model types Liger 0.8.5 patches (liger_kernel/transformers/monkey_patch.py, MODEL_TYPE_TO_APPLY_LIGER_FN), for
# the estimate, which reads it without importing torch or Liger
LIGER_FAMILIES = frozenset(
    "deepseek_v2 deepseek_v3 exaone4 falcon_h1 gemma gemma2 gemma3 gemma3_text glm4 gpt_oss granite "
    "hunyuan_v1_dense hunyuan_v1_moe llama ministral mistral mixtral nemotron olmo2 olmo3 phi3 qwen2 qwen3 "
    "qwen3_moe qwen3_next smollm3".split()
)
# config.yaml `extra:` keys read here, not passed to TRL (engine/train/defaults.py)
EXTRA_KEYS = ("liger", "compile", "compile_4bit")

# What Liger may replace; everything else stays HF's. Keys a family's apply function lacks are dropped.
LIGER = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "geglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}


def liger_default(method: str) -> bool:
    """Liger's kernels for a CUDA run of this method unless its `extra: {liger: ...}` says otherwise."""
    return LIGER_BY_DEFAULT and method in LIGER_DEFAULT_METHODS


def liger_wanted(extra: dict, method: str) -> bool:
    return bool(extra.get("liger", liger_default(method)))


def apply(model, spec, device: str) -> None:
    """Every stage's one call, after loading the model and before the trainer wraps it (PEFT, TRL's LM head)."""
    if device != "cuda":
        return
    compiling = bool(spec.extra.get("compile", False))
    if liger_wanted(spec.extra, spec.method) and not compiling:
        print(f"kernels: {liger(model)}", flush=True)
    if compiling:  # inductor fuses RMSNorm, RoPE and SwiGLU itself; Liger's autograd functions stop dynamo's trace
        how = spec.extra.get("compile_4bit") if spec.method == "qlora" else None
        print(f"kernels: {compile_layers(model, how)}", flush=True)


def liger(model) -> str:
    """Patch this model instance (and its family's classes, so a DPO reference copy gets them too) with Liger's
    kernels; returns a sentence for the log saying what was done or why not."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return "HF's own (liger-kernel is not installed: pip install 'tunewise[gpu]' for Liger's fused kernels)"
    except Exception as e:  # noqa: BLE001  (a Liger that does not match this transformers: train without it)
        return f"HF's own (liger-kernel failed to import: {str(e)[:200]})"
    model_type = getattr(model.config, "model_type", None)
    patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if patch is None:
        return f"HF's own (Liger has no kernels for {model_type})"
    params = inspect.signature(patch).parameters
    chosen = {k: v for k, v in LIGER.items() if k in params}
    patch(model=model, **chosen)
    return "Liger's fused " + ", ".join(k for k, v in chosen.items() if v)


def decoder_layers(model) -> list:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def compile_layers(model, how_4bit: str | None = None, backend: str = "inductor") -> str:
    """torch.compile each decoder layer, HF's checkpointing of it included (it wraps the layer's forward). dynamic=True
    from the first call: a padding-free batch has a new token count every step, and a static first compile would
    recompile on the second batch. Compiled in training mode only: an evaluation (model.eval(), no gradients) runs
    the layers eagerly, where it would otherwise recompile each time the run first evaluates (grad mode and the
    inputs' requires_grad are guards: two recompiles on the CPU, each a compile's wait on a GPU) for a few forward
    passes. DPO's reference pass (training mode, no gradients) stays compiled: it runs at every step.

    4-bit layers (QLoRA): compiled, Qwen3-8B QLoRA SFT ran 2x faster but at 17.9 GiB against 9.3 eager (H100), for a
    reason not found yet: on the CPU, AOTAutograd's graphs of the same layers (bitsandbytes 0.50, PEFT, checkpointing)
    save only parameters and scalars, and dequantize in the backward, so it is not the dequantized weights being kept.
    how_4bit="eager" (`extra: {compile_4bit: eager}`) leaves bitsandbytes' matmul out of the compiled graph (a graph
    break at each 4-bit linear), the next thing to measure; QLoRA is not compiled by default."""
    import torch

    layers = decoder_layers(model)
    if how_4bit == "eager":
        from bitsandbytes.nn import Linear4bit

        Linear4bit.forward = torch.compiler.disable(Linear4bit.forward)
    for layer in layers:
        layer.compile(dynamic=True, backend=backend)
        _only_when_training(layer)
    return f"torch.compile on {len(layers)} decoder layers (dynamic shapes" + (
        f"; 4-bit weights: {how_4bit})" if how_4bit else ")"
    )


def _only_when_training(layer) -> None:
    """The layer's compiled call (nn.Module.compile's) while it trains, its eager call in eval mode."""
    compiled, eager = layer._compiled_call_impl, layer._call_impl

    def call(*args, **kwargs):
        return (compiled if layer.training else eager)(*args, **kwargs)

    layer._compiled_call_impl = call
