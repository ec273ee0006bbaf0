"""Speed: padding-free batches for SFT and DPO (no compute on padding tokens), and TRL's LM head on the CPU.

A batch of 8 chat examples of 60..900 tokens padded to its longest row spends much of every matrix product on
pad tokens. TRL's collator can instead concatenate the batch into one row and mark where each example starts
(`position_ids` restart at 0, plus `cu_seq_lens_q/k`, the cumulative lengths the varlen kernels read). The
attention must then keep every example to itself. TRL documents this for the flash-attn package only; that package
is a separate CUDA build. PyTorch (>= 2.9) ships the same FlashAttention kernel as `torch.nn.attention.varlen`, so
this module registers it with transformers under the name "varlen_sdpa" and uses it on CUDA. On the CPU (tests,
laptops) the same function loops over the examples with SDPA, which is exact and keeps the path testable.

DPO: TRL 1.16 switched its own padding-free mode off ("temporarily unavailable after a refactor"). Its collator pads
chosen and rejected answers of the whole batch to the longest of them, 2 x batch rows; `pack_padded_calls` runs
each such call as one packed row (PackingPlan, worked out by the collator) and hands back the per-token results in
the padded layout TRL expects.

Everything outside a padding-free training batch (generation, padded evaluation) falls through to transformers'
own SDPA path, so a model loaded this way behaves like an "sdpa" model. The saved model does not record the name.
"""

import inspect
from functools import lru_cache

ATTENTION = "varlen_sdpa"


@lru_cache(maxsize=1)  # looked up by every attention layer of every step: import and inspect once
def _varlen_kernel():
    """torch's varlen FlashAttention and how to ask it for a causal mask (its signature changed in 2.10), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params


_KERNEL: list = []  # _varlen_kernel(), filled by register(): a plain global, which torch.compile reads as a constant


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention interface: query/key/value are (batch, heads, tokens, head_dim)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:  # not a padding-free batch: the stock SDPA path
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows, longest = cu.shape[0] - 1, kwargs.get("max_length_q")
    prefix = int(kwargs.get(SHARED_PREFIX) or 0)  # SharedPrefix: examples 2.. also see the row's first `prefix` tokens
    if longest is not None and rows * longest == query.shape[2] and not prefix:
        # Every example has the same length (rows that fill max_length, or a batch of one): a plain batch. SDPA's
        # own causal kernel (cuDNN's on Hopper) is faster than varlen FlashAttention-2 on it (the 1B shape at 2048:
        # 0.95x plain TRL's tokens/s through varlen, 0.98x through this, bench/results/throughput.md).
        batch = [t[0].unflatten(1, (rows, longest)).transpose(0, 1) for t in (query, key, value)]
        out, _ = sdpa_attention_forward(module, *batch, None, dropout=dropout, scaling=scaling)
        return out.reshape(1, rows * longest, *out.shape[2:]), None  # (rows, longest, heads, d) -> one row
    groups = query.shape[1] // key.shape[1]
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, head_dim)
    kernel = (_KERNEL[0] if _KERNEL else _varlen_kernel()) if q.is_cuda and not prefix else None
    if kernel is not None:
        varlen_attn, causal, gqa, has_scale = kernel
        if groups > 1 and not gqa:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        extra = {"enable_gqa": True} if groups > 1 and gqa else {}
        if has_scale:
            extra["scale"] = scaling
        elif scaling is not None:  # older torch: fold a non-default scale (e.g. Gemma's) into the query
            q = q * (scaling * q.shape[-1] ** 0.5)
        if longest is None:  # the collator gives it; int() of a traced length would recompile for each value
            longest = int((cu[1:] - cu[:-1]).max())
        cu = cu.to(device=q.device, dtype=torch.int32)
        out = varlen_attn(q, k, v, cu, cu, longest, longest, **causal, **extra)
    else:  # CPU, or a torch without varlen: one causal SDPA call per example (exact, slower)
        bounds = cu.tolist()
        parts = []
        for n, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            shared = n and prefix  # a later example of a SharedPrefix row sees the prefix, then itself
            ks, vs = (torch.cat([t[:prefix], t[start:end]]) if shared else t[start:end] for t in (k, v))
            qs, ks, vs = q[start:end].transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)
            if groups > 1:
                ks, vs = ks.repeat_interleave(groups, dim=0), vs.repeat_interleave(groups, dim=0)
            if shared:  # the whole prefix, then causal within the example
                mask = torch.ones(end - start, prefix + end - start, dtype=torch.bool, device=q.device).tril(prefix)
                out = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scaling)
            else:
                out = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling)
            parts.append(out.transpose(0, 1))
        out = torch.cat(parts)
    return out.unsqueeze(0), None  # (1, tokens, heads, head_dim), as the interface expects


def _mask(*args, **kwargs):
    """No mask for a padding-free batch (the lengths say it all) or an unpadded one (plain causal); a padded batch
    (e.g. evaluation without the padding-free collator) gets SDPA's mask."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make `attn_implementation="varlen_sdpa"` known to transformers; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    _KERNEL[:] = [_varlen_kernel()]
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, _mask)
    return ATTENTION


def wanted(device: str) -> bool:
    """Padding-free batches where they pay: on CUDA with torch's varlen kernel, which is FlashAttention and so needs
    compute capability 8.0 or newer (A100, RTX 30xx and later; not T4/V100). On the CPU the per-example loop is
    exact but saves little on the short rows a CPU trains on, so padded batches stay the default there."""
    if device != "cuda" or _varlen_kernel() is None:
        return False
    import torch

    return torch.cuda.get_device_capability()[0] >= 8


def unsupported(model_path: str, max_length: int) -> str:
    """Why this model cannot take padding-free batches ("" if it can): the varlen kernel and the per-example loop
    are plain causal attention, so a model whose attention does more (logit softcapping, a sliding window shorter
    than the rows) or that transformers cannot run through SDPA at all (Gemma-2) keeps padded batches."""
    from transformers import AutoConfig

    from engine.distributed import causal_lm_class

    config = AutoConfig.from_pretrained(model_path)
    text = config.get_text_config()
    cls = causal_lm_class(config)
    if cls is not None and not getattr(cls, "_supports_sdpa", False):
        return f"{cls.__name__} has no SDPA attention in transformers"
    if getattr(text, "attn_logit_softcapping", None):
        return "the model caps its attention scores (softcapping), which the varlen kernel does not"
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True) is not False and window < max_length:
        return f"the model attends within a {window}-token window, shorter than the {max_length}-token rows"
    return ""


def choose(spec, device: str, model_path: str, on_cpu: bool = False) -> bool:
    """Padding-free batches for this run: `extra: {padding_free: ...}` if set, else where they pay (wanted; on the
    CPU too with on_cpu, for SFT, whose CPU batches share their common prefix: SharedPrefix), and never for a model
    whose attention they cannot compute (unsupported; the log says why)."""
    padding_free = spec.extra.get("padding_free", wanted(device) or (on_cpu and device == "cpu"))
    why_not = unsupported(model_path, spec.max_length) if padding_free else ""
    if why_not:
        print(f"batches: padded, as {why_not}", flush=True)
    return padding_free and not why_not


def collator(tokenizer, shared_prefix: bool = False):
    """TRL's own collator in padding-free mode, wrapped in SharedPrefix with shared_prefix. Passed explicitly (with
    SFTConfig.padding_free left False) because TRL refuses padding_free + max_length without packing, although it
    truncates to max_length while preparing the dataset either way (trl/trainer/sft_trainer.py, _prepare_dataset)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    inner = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    return SharedPrefix(inner) if shared_prefix else inner


SHARED_PREFIX = "shared_prefix_len"  # the batch key SharedPrefix adds and `attention` reads
MIN_SHARED = 4  # tokens: below this, sharing saves less than the extra attention calls cost


class SharedPrefix:
    """Wraps the padding-free SFT collator on a CPU. The examples of a chat batch begin with the same tokens: the
    template's system prompt and the user-turn header, 25 of the 71 tokens of a bundled Task API example. The
    packed row carries them once, as the start of the first example, and every later example attends to them
    there instead of computing them again: on a batch of 8 that is 30 % fewer tokens through every layer, and
    the logits and gradients are the same (the prefix's hidden states depend on the prefix alone). Only a prefix
    that carries no label in any example is shared, and each example keeps at least one token of its own."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        return share_prefix(self.inner(examples))


def share_prefix(batch: dict) -> dict:
    import torch

    ids, labels, cu = batch["input_ids"][0], batch["labels"][0], batch["cu_seq_lens_q"].tolist()
    starts, lengths = cu[:-1], [b - a for a, b in zip(cu[:-1], cu[1:])]
    if len(starts) < 2:
        return batch
    shared = min(lengths) - 1
    for start in starts[1:]:
        differ = (ids[start : start + shared] != ids[:shared]).nonzero()
        shared = int(differ[0]) if len(differ) else shared
    for start in starts:  # the prefix and the first token after it (where the example resumes) carry no label
        labelled = (labels[start : start + shared + 1] != -100).nonzero()
        shared = min(shared, int(labelled[0]) - 1) if len(labelled) else shared
    if shared < MIN_SHARED:
        return batch
    keep = torch.ones_like(ids, dtype=torch.bool)
    for start in starts[1:]:
        keep[start : start + shared] = False
    new_lengths = [lengths[0]] + [n - shared for n in lengths[1:]]
    new_cu = torch.tensor([0, *torch.tensor(new_lengths).cumsum(0).tolist()], dtype=torch.int32)
    out = {k: v for k, v in batch.items() if k != "seq_idx"}
    out.update(
        input_ids=ids[keep][None],
        labels=labels[keep][None],
        position_ids=batch["position_ids"][0][keep][None],  # every example keeps its own positions
        cu_seq_lens_q=new_cu,
        cu_seq_lens_k=new_cu,
        max_length_q=max(new_lengths),
        max_length_k=max(new_lengths),
        **{SHARED_PREFIX: shared},
    )
    return out


PER_TOKEN = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")  # TRL's FusedCausalLMOutput


PLAN = (
    "packed_index",
    "packed_position_ids",
    "packed_starts",
    "packed_cu",
    "packed_longest",
    "unpack_to",
    "unpack_from",
)  # what PackingPlan adds to a padded batch; pack_padded_calls consumes it


class PackingPlan:
    """Wraps a collator of right-padded batches (TRL's DataCollatorForPreference): on the CPU, while the batch is
    built, it adds where each real token goes in one packed row and where each packed result goes back. Worked out
    here rather than on the GPU because boolean indexing there waits for the GPU (a sync) each time, and the steps
    of a small model are bound by how fast the host can queue kernels."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner(examples)
        batch.update(packing_plan(batch["attention_mask"]))
        return batch


def packing_plan(attention_mask) -> dict:
    import torch

    mask = attention_mask.bool()
    lengths = mask.sum(1)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    real = mask.flatten().nonzero().squeeze(1)  # flat positions of the real tokens, row by row
    packed_position = (mask.flatten().long().cumsum(0) - 1).view_as(mask)
    scored = mask[:, 1:].flatten().nonzero().squeeze(1)  # padded position c holds the score of token c + 1
    return {
        "packed_index": real,
        "packed_position_ids": ((mask.long().cumsum(1) - 1).flatten()[real])[None],
        "packed_starts": cu[:-1].long(),
        "packed_cu": cu,
        "packed_longest": int(lengths.max()),
        "unpack_to": scored,
        "unpack_from": packed_position[:, :-1].flatten()[scored],
    }


def pack_padded_calls(model) -> None:
    """Wrap `model.forward` (TRL's fused LM head, `add_fused_lm_head`) so that a call on a right-padded batch that
    carries a PackingPlan, as DPOTrainer makes for the policy and the reference, runs as one row of only the real
    tokens with the sequence bounds the varlen attention reads. TRL gets back its usual (rows, length - 1) per-token
    fields, zero where there is no label, so its loss code is untouched. Only for a model loaded with
    attn_implementation=ATTENTION: plain SDPA would let the packed sequences attend to each other."""
    inner = model.forward
    if getattr(inner, "_tunewise_packed", False):
        return

    def forward(*args, **kwargs):
        plan = {k: kwargs.pop(k) for k in PLAN if k in kwargs}
        if not plan or args or not kwargs.get("fused_lm_head"):
            return inner(*args, **kwargs)
        input_ids, labels = kwargs.pop("input_ids"), kwargs.pop("labels")
        kwargs.pop("attention_mask", None)
        rows, width = input_ids.shape
        index = plan["packed_index"]
        # A row's first token is never a target (nothing precedes it); in the packed row it would be scored as the
        # continuation of the previous example, so it gets no label.
        packed_labels = labels.flatten()[index].index_fill(0, plan["packed_starts"], -100)
        cu, longest = plan["packed_cu"], plan["packed_longest"]
        out = inner(
            input_ids=input_ids.flatten()[index][None],
            labels=packed_labels[None],
            position_ids=plan["packed_position_ids"],
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=longest,
            max_length_k=longest,
            **kwargs,
        )
        for name in PER_TOKEN:
            values = getattr(out, name, None)
            if values is not None:
                full = values.new_zeros(rows * (width - 1))
                full[plan["unpack_to"]] = values[0, plan["unpack_from"]]
                out[name] = full.view(rows, width - 1)
        return out

    forward._tunewise_packed = True
    model.forward = forward


def adapter_inputs_in_compute_dtype(trainer, spec, precision: dict) -> None:
    """Every stage's one call: lora_inputs_in_compute_dtype for LoRA/QLoRA runs under bf16 autocast."""
    if spec.uses_peft and precision.get("bf16"):
        lora_inputs_in_compute_dtype(trainer.model)


def lora_inputs_in_compute_dtype(model) -> int:
    """PEFT keeps LoRA adapters in fp32 (autocast_adapter_dtype) and casts each adapted layer's input to fp32 before
    the adapter; under bf16 autocast the adapter's matrix products then cast it straight back to bf16. That is two
    activation-sized copies (and an fp32 dropout) in each of the 7 adapted layers of every block, forward and again
    in the recomputation: on the H200, copies were 20 % of a 1B LoRA DPO step's GPU time. The adapter's products
    run in bf16 either way, so skipping the round trip changes no number; the fp32 adapter weights (what AdamW
    updates) stay fp32. Only for bf16 autocast training, which the Trainer applies to every forward it makes;
    returns how many layers were switched."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def score_only_labelled_positions() -> None:
    """TRL's fused LM head (SFT, DPO) projects only the positions that have a label on CUDA/XPU, but every position
    elsewhere, because on Neuron a changing number of positions recompiles the graph (trl/trainer/utils.py,
    add_fused_lm_head: `compact = _use_triton(device)`). A CPU compiles nothing, so scoring the prompt there is
    pure waste: on the embedded model with the Task API set (answers ~30 of ~77 tokens) the LM head was 31 % of a
    CPU step (py-spy). This makes the same choice as on CUDA for the CPU too; the loss is unchanged."""
    try:
        from trl.trainer import utils
    except ImportError:
        return
    original = getattr(utils, "_use_triton", None)
    if original is None or getattr(original, "_tunewise", False):
        return  # a TRL without this switch, or already patched

    def compact(device):
        return device.type == "cpu" or original(device)

    compact._tunewise = True
    utils._use_triton = compact
    plain = getattr(utils, "_ChunkedLogProbFunction", None)
    if plain is not None and not isinstance(plain, _CpuLogProbs):
        utils._ChunkedLogProbFunction = _CpuLogProbs(plain)


# Logits of at most this many elements (tokens x vocabulary) are projected whole on the CPU: 64 M fp32 elements,
# 256 MiB for the logits and as much again for autograd's copy. Larger ones keep TRL's tiles.
CPU_WHOLE_LOGITS = 64 * 2**20


class _CpuLogProbs:
    """TRL's fused LM head (`ChunkedLogProbFunction`) on the CPU, for heads small enough to project whole: one
    matrix product, log_softmax and a gather, with autograd's backward. TRL's CPU path (torch ops standing in for
    its Triton kernels) runs ten-odd passes over each tile forward and again backward; on the embedded model's head
    (~210 answer tokens x 49,152) it took 0.7-1.9 s of a 3.6-4.9 s step, this 0.4. Same outputs, same order, same
    arguments (trl/kernels/chunked_logprob.py ChunkedLogProbFunction.forward); anything else goes to TRL's."""

    def __init__(self, chunked):
        self.chunked = chunked

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, scale=1.0, outputs=()):
        import torch

        if hidden.device.type != "cpu" or hidden.shape[0] * weight.shape[0] > CPU_WHOLE_LOGITS:
            return self.chunked.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, scale, outputs)
        z = (hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())).float()
        if softcap is not None:
            z = softcap * torch.tanh(z * (scale / softcap))
        elif scale != 1.0:
            z = z * scale
        if temperature != 1.0:
            z = z / temperature  # each pass over tokens x vocabulary costs: none for the usual 1.0
        logp = torch.log_softmax(z, dim=-1)
        log_probs = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean = z.mean(-1) if "mean_logits" in outputs else None
            top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
        return log_probs, entropy, sq, mean, top1
