"""GPU memory of one training run, from a model's config.json: pure arithmetic, no torch.

The peak the GPU shows is the larger of two moments of a step (both seen in torch's memory snapshots):
  A. the start of backward: weights + optimizer state + every saved activation + the LM head's backward buffers;
  B. the optimizer step:    weights + optimizer state + all gradients + the optimizer's temporaries.
Between them activations are freed layer by layer while gradients appear, so the sum is linear in between and its
maximum sits at one of the two ends. On top come the caching allocator's fragmentation and the CUDA context,
which NVML counts and torch does not. Coefficients marked "fit" were fitted to torch's peak counters over the
26 calibration runs in bench/results/estimate_calibration.jsonl (H200, torch 2.11, TRL 1.16).
"""

from dataclasses import dataclass

GIB = 2**30
NF4_BYTES = 4.127 / 8  # QLoRA paper (Dettmers et al. 2023, sec. 3): 4-bit NF4 + double-quantised constants,
# 8/64 + 32/(64*256) = 0.127 bits/param, on every linear layer but the LM head
LSE_BYTES = 4  # flash/efficient SDPA keep one fp32 log-sum-exp per head and token (Dao 2022)
# The TRL >= 1.15 fused LM head (trl/trainer/utils.py add_fused_lm_head, kernels/chunked_logprob.py) scores the
# vocabulary in [4096 tokens x 32768 vocab] tiles instead of materialising batch x seq x vocab logits.
LOGPROB_TILE_BYTES = 32768 * 2  # per token of a tile (bf16), at most 4096 tokens
CONTEXT_GIB = 1.35  # measured on H200: NVML used - torch.cuda.max_memory_reserved(), 26 runs, spread 0.01 GiB
# (bench/results/estimate_calibration.jsonl); GPU.md saw "about 1.3 GiB"
# fit: saved activations beyond the tensors counted below (autograd bookkeeping, the layer being back-propagated,
# RoPE tables), as a fraction of the counted bytes
ACT_OVERHEAD = {"full": 0.12, "lora": 0.0, "qlora": 0.0}
# fit: torch's reserved-over-allocated peak, with the expandable segments engine.train sets
# (train/__main__.py unfragmented_gpu_memory): a small base and share of the dynamic memory (0.03-0.24 GiB on 7
# rows without checkpointing), and with checkpointing a share of the rebuilt layer, whose cycle of allocations
# leaves pages mapped but free (0.2-0.6 GiB: 0.28x the layer on Qwen3-4B QLoRA 2048 x 8, 0.5x on Llama-3.2-1B LoRA
# 1024 x 4; bench/results/estimate_expandable.jsonl). Fixed segments left holes of 0.4-0.9x the rebuilt layer and
# most of the LM head's fp32 gradient (up to 2.3 GiB); those runs are in the older grids.
FRAG_DYNAMIC = 0.02
FRAG_BASE_GIB = 0.2
FRAG_REBUILD = 0.25
# fit: with full fine-tuning, a rebuilt layer's backward also holds its weights' gradients before they are added to
# .grad (autograd's thread, 0.3x the layer on the Qwen3-0.6B full 2048 x 8 snapshot); -1.9 .. -2.7 % allocated
# without it on three full rows with checkpointing (estimate_expandable.jsonl)
REBUILD_FULL = 1.2
OPTIMIZERS = {  # bytes of state per trainable parameter, as a multiple of the parameter's own bytes,
    "adamw_torch": 2.0,  # torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype
    "adamw_torch_fused": 2.0,
    "adamw_8bit": None,  # bitsandbytes: 1 byte each for m and v (Dettmers et al. 2022, 8-bit optimizers)
    "paged_adamw_8bit": None,  # the same, in pages the driver can evict to CPU under pressure
    "sgd": 0.0,
}
# fit: padded batches (pt, softcapped or windowed attention: Shape.padded) ran 5 % above the padding-free figure on
# rows that fill max_length (Gemma-3-1B LoRA 2048 x 4, Llama-3.2-1B pt LoRA 2048 x 4; estimate_fam_calib.jsonl)
PADDED_MARGIN = 1.05
FOREACH_OPTIMIZERS = ("adamw_torch",)  # the multi-tensor path allocates sqrt(exp_avg_sq) for all parameters at once


@dataclass(frozen=True)
class Shape:
    """What the memory depends on, read from config.json.

    Mixture-of-experts models (Qwen3-MoE: num_experts; gpt-oss, Mixtral: num_local_experts) have `experts` MLPs of
    width `intermediate` in each layer (moe_intermediate_size for Qwen3-MoE, intermediate_size for gpt-oss), of which
    each token uses `active_experts` (num_experts_per_tok); dense models have one of each."""

    model_type: str
    hidden: int
    intermediate: int  # the MLP width; of one expert in a mixture-of-experts model
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    experts: int = 1  # expert MLPs per layer (all of them are weights in memory)
    active_experts: int = 1  # experts each token is routed to
    o_bias: bool = False  # attention_bias also gives o_proj a bias (llama, mistral, qwen3, gpt-oss; not qwen2)
    qk_norm: bool = False  # an RMSNorm over head_dim on the queries and another on the keys, per layer
    norms_per_layer: int = 2  # RMSNorms of `hidden` per decoder layer
    expert_bias: bool = False  # gpt-oss: the experts' projections and the router have biases
    sinks: bool = False  # gpt-oss: one learned attention-sink logit per head and layer
    softcap: bool = False  # attention scores capped by tanh (Gemma-2): transformers runs eager attention for it
    window: int = 0  # a sliding attention window in some or all layers (tokens); 0 = none
    vision_params: int = 0  # a multimodal checkpoint's image encoder and projector: loaded, frozen, never run on text

    # transformers' config classes fill in what a config.json leaves out; these are their defaults for the fields
    # read here (transformers 5.24 configuration_*.py). Gemma-3 4B's published config gives only hidden_size,
    # intermediate_size and num_hidden_layers in text_config.
    _DEFAULTS = {
        "gemma3_text": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256},
    }
    _TIED_BY_DEFAULT = ("gemma", "gemma2", "gemma3", "gemma3_text", "smollm3")  # tie_word_embeddings defaults True
    _QK_NORM = ("qwen3", "qwen3_moe", "gemma3", "gemma3_text")  # q_norm/k_norm in every attention layer
    _FOUR_NORMS = ("gemma2", "gemma3", "gemma3_text")  # input, post-attention, pre- and post-feed-forward norms

    @staticmethod
    def vision_tower_params(cfg: dict) -> int:
        """Weights of a ViT image encoder (SigLIP's layout: Gemma-3, Mistral-Small-3.1) and its projector to the
        language model's width. transformers loads them with the language model even for text-only training:
        Gemma-3-4B LoRA 1024 x 2 held 0.91 GiB more than the language model's count (0.42 B parameters in bf16,
        bench/results/estimate_fam_heldout4.jsonl)."""
        v = cfg.get("vision_config")
        if not isinstance(v, dict):
            return 0
        h, i = int(v.get("hidden_size", 768)), int(v.get("intermediate_size", 3072))
        patch, image = int(v.get("patch_size", 16)), int(v.get("image_size", 224))
        per_layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h  # q, k, v, o with biases; fc1, fc2; two LayerNorms
        embed = int(v.get("num_channels", 3)) * patch * patch * h + h + (image // patch) ** 2 * h
        text_h = int((cfg.get("text_config") or {}).get("hidden_size", h))
        return int(v.get("num_hidden_layers", 12)) * per_layer + embed + 2 * h + h * text_h

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        vision = cls.vision_tower_params(cfg)
        cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model
        mtype = cfg.get("model_type", "llama")
        cfg = {**cls._DEFAULTS.get(mtype, {}), **{k: v for k, v in cfg.items() if v is not None}}
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in cfg]
        if missing:
            raise ValueError(
                f"config.json lacks {', '.join(missing)}, so this is not a decoder-only language "
                "model the estimator understands (llama, mistral, qwen2/3, gemma, phi3, gpt-oss families)."
            )
        h, a = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 1)
        if experts > 1:
            # Qwen-MoE names the expert width moe_intermediate_size (its intermediate_size is for dense layers);
            # gpt-oss and Mixtral give every expert intermediate_size
            intermediate = int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 4 * h)
            active = int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 1)
        else:
            intermediate, active = int(cfg.get("intermediate_size") or 4 * h), 1
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            model_type=mtype,
            hidden=h,
            intermediate=intermediate,
            layers=int(cfg["num_hidden_layers"]),
            heads=a,
            kv_heads=int(cfg.get("num_key_value_heads") or a),
            head_dim=int(cfg.get("head_dim") or h // a),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", mtype in cls._TIED_BY_DEFAULT)),
            qkv_bias=mtype == "qwen2" or attention_bias,
            experts=experts,
            active_experts=active,
            o_bias=attention_bias,
            qk_norm=mtype in cls._QK_NORM,
            norms_per_layer=4 if mtype in cls._FOUR_NORMS else 2,
            expert_bias=experts > 1 and mtype == "gpt_oss",
            sinks=mtype == "gpt_oss",
            softcap=bool(cfg.get("attn_logit_softcapping")),
            window=int(cfg.get("sliding_window") or 0) if cfg.get("use_sliding_window", True) is not False else 0,
            vision_params=vision,
        )

    def expert_params(self) -> int:
        """Weights of the expert MLPs of a mixture-of-experts model (gate, up and down of each); 0 for dense."""
        return 0 if self.experts <= 1 else self.layers * self.experts * 3 * self.hidden * self.intermediate

    def padded(self, stage: str, seq: int) -> bool:
        """engine.train keeps padded batches (not padding-free) for continued pretraining and for models whose
        attention the varlen kernel cannot compute: softcapping, or a window shorter than the rows
        (engine/train/fast.py unsupported)."""
        return stage == "pt" or self.softcap or 0 < self.window < seq

    def attention(self, attn: str) -> str:
        """The attention implementation engine.train gets: "auto" is transformers' choice for the family (eager for
        softcapped scores, which SDPA cannot cap), else what was asked."""
        if attn != "auto":
            return attn
        return "eager" if self.softcap else "sdpa"

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_params(self) -> int:
        """Weights of the attention and MLP projections (the ones QLoRA quantises and LoRA adapts); with experts,
        every expert's gate, up and down projection and the router (hidden x experts)."""
        h, i = self.hidden, self.intermediate
        per_layer = h * self.q_width * 2 + h * self.kv_width * 2 + 3 * h * i * self.experts
        if self.qkv_bias:
            per_layer += self.q_width + 2 * self.kv_width
        if self.o_bias:
            per_layer += h
        if self.experts > 1:
            per_layer += h * self.experts  # the router
            if self.expert_bias:  # gpt-oss: gate_up (2i) and down (h) biases per expert, one router bias each
                per_layer += self.experts * (2 * i + h + 1)
        return per_layer * self.layers

    def other_params(self) -> int:
        """Embeddings, the LM head when untied, and the norms: kept in 16 bit by QLoRA."""
        per_layer = self.norms_per_layer * self.hidden
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        if self.sinks:
            per_layer += self.heads
        return self.vocab * self.hidden * (1 if self.tied else 2) + per_layer * self.layers + self.hidden

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, r: int, targets: str = "all-linear") -> int:
        """LoRA adds r x (in + out) per adapted projection (Hu et al. 2021). Phi-3 fuses q/k/v and gate/up into
        one projection each, so it gets one adapter where llama gets three (or two).

        Mixture-of-experts layers keep their experts as fused 3-D parameters (transformers 5), which "all-linear"
        (nn.Linear only) does not reach by itself. For Qwen3-MoE PEFT 0.21 maps the per-expert gate_proj, up_proj,
        down_proj and the router (gate) onto those parameters with rank r per expert: measured with tiny random
        models under transformers 5.24 / PEFT 0.21.2, gate_up_proj gets A (2rE x h) and B (2i x 2rE), down_proj
        A (rE x i) and B (h x rE), the router A (r x h) and B (E x r). gpt-oss has no such mapping: its LoRA
        adapts the attention only."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_width, self.kv_width
        mods = {
            "q_proj": h + q,
            "k_proj": h + kv,
            "v_proj": h + kv,
            "o_proj": q + h,
            "gate_proj": h + i,
            "up_proj": h + i,
            "down_proj": i + h,
        }
        if self.model_type == "phi3":
            mods = {"qkv_proj": h + q + 2 * kv, "o_proj": q + h, "gate_up_proj": h + 2 * i, "down_proj": i + h}
        if self.experts > 1:
            e = self.experts
            attention = {k: mods[k] for k in ("q_proj", "k_proj", "v_proj", "o_proj")}
            if self.model_type in ("qwen3_moe", "qwen2_moe"):
                # gate_proj and up_proj each bring half of gate_up_proj's adapter: rE x (h + 2i)
                mods = {**attention, "gate_proj": e * (h + 2 * i), "up_proj": e * (h + 2 * i)}
                mods |= {"down_proj": e * (i + h), "gate": h + e}
            else:
                mods = attention
        wanted = list(mods) if targets in ("all-linear", "all_linear") else [t.strip() for t in targets.split(",")]
        return r * self.layers * sum(mods.get(t, 0) for t in wanted)

    def merged_expert_bytes(self, method: str, targets: str = "all-linear") -> float:
        """One layer's expert weights as PEFT's LoRA on fused expert parameters builds them each forward
        (peft/tuners/lora/layer.py _LoraFactorsProxy: baddbmm(W, lhs, rhs), the whole stack W + BA in bf16), which
        the grouped matmul keeps for its backward; 0 where the experts carry no adapter. Qwen3-30B-A3B trimmed to 6
        layers, LoRA 1024 x 2 with checkpointing: 1.125 GiB at that line, 0.75 for its gate_up gradient."""
        if self.experts <= 1 or method == "full" or self.model_type not in ("qwen3_moe", "qwen2_moe"):
            return 0.0
        experts = {"gate_proj", "up_proj", "down_proj"}
        if targets not in ("all-linear", "all_linear") and not experts & {t.strip() for t in targets.split(",")}:
            return 0.0
        return self.experts * 3 * self.hidden * self.intermediate * 2.0

    def activation_bytes_per_token_layer(
        self, method: str, attn: str, seq: int, dropout: bool = True, gqa_repeat: bool = False, liger: bool = False
    ) -> float:
        """Bytes autograd keeps per token and decoder layer in bf16 (Korthikanti et al. 2022, "Reducing Activation
        Recomputation in Large Transformer Models", sec. 4.1, redone for a llama block: RMSNorm, RoPE, SwiGLU, no
        dropout in the block). Full fine-tuning: each RMSNorm keeps its fp32 input and bf16 output (2 x 6h), the
        attention keeps rotated q, k, v and its output + the o_proj input copy (6 q + 4 kv), the MLP gate, up,
        SiLU(gate) and their product (8i). With frozen projections (LoRA/QLoRA) autograd skips the inputs of the
        frozen matmuls and the norm outputs, but each adapter's dropout keeps a mask and a copy of its input
        (3 bytes x in_features, for q,k,v,gate,up on h, o on q, down on i). A mixture-of-experts token goes through
        active_experts MLPs, each keeping its own, and its routed copies (measured on Qwen3-MoE; the router's buffers
        are not counted)."""
        h, q, kv = self.hidden, self.q_width, self.kv_width
        i = self.intermediate * self.active_experts
        trains = method == "full" or not dropout
        if trains:
            # Without adapter dropout (the default; TRL's DPO and reward trainers disable it) the adapters keep the
            # same inputs the trained projections would. Read off torch's allocator history at the peak
            # (bench/memory_snapshot.py, bench/results/memory_snapshot.jsonl; Qwen3, SmolLM3, Llama, Qwen2.5 rows
            # within 1 % of it): two norms of fp32 input + bf16 output (12h; 16h when their weights train, which
            # keeps the bf16 normalised input for the weight's gradient too), the MLP's gate, up, SiLU and product
            # (8i), the rotated q and k, v, and SDPA's output (2q + 2kv + 2kv + 2q: SDPA's output is laid out so
            # that o_proj reads it without a copy).
            per = (16 if method == "full" else 12) * h + 8 * i + 4 * q
            if liger and self.experts <= 1:
                # Liger's kernels (engine/train/kernels.py), from what their autograd functions save: RMSNorm keeps
                # its bf16 input and a per-row rstd (liger_kernel/ops/rms_norm.py), not the fp32 input (-4h a norm)
                # nor, when its weight trains, the normalised copy; SwiGLU keeps gate and up and recomputes SiLU
                # (ops/swiglu.py, -2i). 1B full SFT 2048 x 8 without checkpointing: 8h + 2i = 32 KB a token and
                # layer, 36.9 -> 28.8 GiB measured = 32.4 KB (bench/results/throughput-20261207-h100.md)
                per -= (8 if method == "full" else 4) * h + 2 * i
        else:
            per = 8 * h + 15 * h + 9 * i + 7 * q
        # k and v: 2 bytes each per kv element; torch's varlen kernel before 2.13 has no enable_gqa, so a
        # padding-free batch of examples of different lengths repeats k and v to the query's width
        # (engine/train/fast.py attention; the Qwen3 batch-of-one snapshot before it took the plain path)
        per += 4 * (q if gqa_repeat else kv)
        if self.experts > 1:
            # each token's copies routed to its experts: the gathered expert inputs and the expert outputs before
            # their weighted sum (2 x active x h, bf16). Qwen3-30B-A3B (6 layers) LoRA 2048 x 4 without
            # checkpointing held 61 KB a token and layer more than counted without them (4 x 8 x 2048 = 64 KB;
            # bench/results/estimate_coverage.jsonl, -9.5 %)
            per += 4 * self.active_experts * h
        if self.model_type == "phi3":
            # the fused qkv_proj's output stays alive as long as v (a view of it) is, and SDPA's output is copied
            # before o_proj (transformers' sdpa_attention.py `.transpose(1, 2).contiguous()` allocates here, where
            # for other families it is a no-op: the Phi-3-mini LoRA 1024 x 2 snapshot, 2q at that line)
            per += 4 * q + 2 * kv
        # Norms beyond llama's two, and the q/k norms (Qwen3, Gemma-3). A trained norm keeps its fp32 input and bf16
        # output (6 bytes an element); a frozen one its fp32 input only (4: the Qwen3 QLoRA snapshot's q/k norms;
        # Gemma's extra norms of the residual stream, whose outputs only meet an addition, likewise)
        per += (6 if method == "full" else 4) * (self.norms_per_layer - 2) * h
        if self.qk_norm:
            per += (6 if method == "full" else 4) * (q + kv)
        per += LSE_BYTES * self.heads
        attn = self.attention(attn)
        if attn == "eager":
            # eager attention keeps the fp32 softmax and its bf16 copy: 6 bytes x heads x seq per token
            # (Korthikanti's 5as/h term with fp32 softmax and no attention dropout); Gemma-2's softcapping adds the
            # tanh's output (8 bytes, fit: Gemma-2-2B LoRA 1024 x 4 measured 27.9 GiB, 20.3 predicted
            # with SDPA's figure, bench/results/estimate_fam_calib.jsonl)
            per += (8 if self.softcap else 6) * self.heads * seq
        return per * (1 + (0.0 if trains else ACT_OVERHEAD[method]))


def checkpointed_layers(layers: int, every: int) -> int:
    """Decoder layers checkpointed when every n-th is (transformers' every_n_layers: index % n == 0)."""
    return -(-layers // max(1, every))


@dataclass(frozen=True)
class MemoryPlan:
    """Inputs the memory depends on (what engine.train is told, with RunSpec's defaults)."""

    stage: str = "sft"
    method: str = "lora"
    seq: int = 512
    batch: int = 8
    grad_ckpt: bool = False
    ckpt_every: int = 1  # with grad_ckpt: every n-th decoder layer is checkpointed, the others keep everything
    ckpt_offload: bool = False  # with grad_ckpt: the checkpointed layers' inputs wait in pinned CPU memory
    liger: bool = False  # Liger's RMSNorm and SwiGLU replace HF's (CUDA, a family Liger has; engine/train/kernels.py)
    lora_r: int = 16
    lora_targets: str = "all-linear"
    lora_dropout: float = 0.0
    optimizer: str = "adamw_torch"
    attn: str = "auto"  # the family's (Shape.attention)
    gpus: int = 1  # processes training together, one per GPU
    distributed: str = "ddp"  # ddp: a whole copy per GPU | fsdp: FSDP2, sharded (engine/distributed.py)
    offload: bool = False  # fsdp only: parameters, gradients and optimizer state wait in CPU memory
    gqa_repeat: bool = False  # the trainer's torch repeats k/v in varlen attention (estimate.varlen_repeats_kv)


# Several GPUs. Not yet measured (the two-GPU issue measures them): arithmetic from how DDP and FSDP2 allocate.
# DDP (torch.nn.parallel.DistributedDataParallel, gradient_as_bucket_view=False as transformers leaves it) copies
# every gradient into flat all-reduce buckets that live as long as the model: a second copy of the gradients.
# NCCL's own buffers and streams per process: ~0.3-0.6 GiB on 2-8 GPUs of one host (NCCL_BUFFSIZE 4 MiB x channels
# x peers, plus its CUDA graphs' pools); the upper end, so the figure errs high.
NCCL_GIB = 0.6
# FSDP2 (torch.distributed.fsdp.fully_shard) keeps 1/N of every parameter, gradient and optimizer state; a wrapped
# decoder layer is all-gathered for its forward and again for its backward, with the next one prefetched (two
# layers unsharded at once), and its unsharded gradients wait for the reduce-scatter. The root unit (embeddings,
# final norm, LM head) stays unsharded from the forward to the end of the backward (FSDP2's root never reshards
# after forward).
FSDP_LAYERS_GATHERED = 2
# With CPU offload the shards are copied to the GPU before each all-gather and the gradients back after each
# reduce-scatter; the two published offload peaks (AnswerDotAI/fsdp_qlora, benchmarks_03_2024.md: Yi-34B and
# Llama-2-70B QLoRA on 2 GPUs) sit 21-27 % above the arithmetic without that staging
# (bench/results/fsdp_per_gpu.md). Until it is measured here, the offload figure takes the upper end.
OFFLOAD_MARGIN = 0.27


def breakdown_bytes(shape: Shape, plan: MemoryPlan) -> dict[str, float]:
    """Peak memory of one GPU by part, in bytes, at the worse of the two moments (see module docstring); with
    several GPUs, of each one (they all hold the same amount: every rank trains on its own micro-batch)."""
    if plan.gpus <= 1 or plan.distributed == "ddp":
        parts = _one_gpu_bytes(shape, plan)
        if plan.gpus > 1:
            trainable, t_bytes = _trainable(shape, plan)
            parts["DDP gradient buckets"] = trainable * t_bytes
            parts["NCCL buffers"] = NCCL_GIB * GIB
        return parts
    return _fsdp_bytes(shape, plan)


def _trainable(shape: Shape, plan: MemoryPlan) -> tuple[int, float]:
    """(trainable parameters, bytes each): full fine-tuning trains every bf16 weight; PEFT keeps LoRA adapters in
    fp32, TRL casts QLoRA's to bf16."""
    if plan.method == "full":
        return shape.params(), 2.0
    return shape.lora_params(plan.lora_r, plan.lora_targets), 4.0 if plan.method == "lora" else 2.0


def _fsdp_bytes(shape: Shape, plan: MemoryPlan) -> dict[str, float]:
    """Per GPU under FSDP2 over plan.gpus GPUs: weights, gradients and optimizer state divided by N (or in CPU memory
    with offload), activations as on one GPU (each rank trains on its own micro-batch), plus what FSDP holds
    unsharded at the worst moment (see FSDP_LAYERS_GATHERED)."""
    m = _quantities(shape, plan)
    share = 0.0 if plan.offload else 1.0 / plan.gpus
    root = _root_bytes(shape)
    layer = max(0.0, m["weights"] - root) / shape.layers  # one decoder layer's weights as stored (NF4 for QLoRA)
    layer_grads = (
        m["gradients"] / shape.layers if plan.method != "full" else (shape.params() * 2.0 - root) / shape.layers
    )
    parts = {
        "weights (this GPU's shard)": m["weights"] * share,
        "reference / reward model": m["reference / reward model"] * share,
        "optimizer state (shard)": m["optimizer state"] * share,
        "gathered layers and root": FSDP_LAYERS_GATHERED * layer + root,
    }
    moment_a = m["activations"] + m["logits and loss"] + layer_grads  # + one layer's grads before reduce-scatter
    moment_b = (m["gradients"] + m["optimizer temporaries"]) * share
    if moment_a >= moment_b:
        parts["activations"] = m["activations"]
        parts["logits and loss"] = m["logits and loss"]
        parts["unsharded gradients of one layer"] = layer_grads
    else:
        parts["gradients (shard)"] = moment_b
    parts["allocator reserve"] = _reserve(shape, plan, max(moment_a, moment_b), m["last layer"])
    parts["NCCL buffers"] = NCCL_GIB * GIB
    if plan.offload:
        parts["offload staging"] = OFFLOAD_MARGIN * sum(parts.values())
    parts["CUDA context"] = CONTEXT_GIB * GIB
    return parts


def _root_bytes(shape: Shape) -> float:
    """Embeddings, the LM head when untied and the final norm, in 16 bit (QLoRA keeps them unquantised too)."""
    return (shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.hidden) * 2.0


def _quantities(shape: Shape, plan: MemoryPlan) -> dict[str, float]:
    """Bytes of each thing a training step holds on one GPU (not all at once: see _one_gpu_bytes)."""
    P, T = shape.params(), 0
    if plan.method == "full":
        weights = P * 2.0  # bf16 (engine.train loads in bf16 on GPUs that have it)
        T, t_bytes = P, 2.0  # every weight trains; grads and AdamW state in bf16
    elif plan.method == "lora":
        weights = P * 2.0
        T, t_bytes = shape.lora_params(plan.lora_r, plan.lora_targets), 4.0  # PEFT upcasts adapters to fp32
        weights += T * t_bytes  # (peft/tuners/tuners_utils.py cast_adapter_dtype, autocast_adapter_dtype=True)
    else:  # qlora
        # bitsandbytes quantises nn.Linear layers; transformers 5 keeps a mixture's experts as fused 3-D tensors,
        # which stay in 16 bit (the never-low side: not measured yet)
        experts = shape.expert_params()
        weights = (shape.linear_params() - experts) * NF4_BYTES + (shape.other_params() + experts) * 2.0
        T, t_bytes = shape.lora_params(plan.lora_r, plan.lora_targets), 2.0  # TRL casts QLoRA adapters to bf16
        weights += T * t_bytes  # (trl/trainer/sft_trainer.py, following the QLoRA paper)
    # an image encoder is loaded in bf16 and never trained on text; QLoRA may quantise its linear layers, which
    # is not counted (the safe side)
    weights += shape.vision_params * 2.0
    # Full fine-tuning DPO/RL keeps a frozen copy of the starting weights as the reference (TRL loads it in the
    # policy's dtype); with LoRA/QLoRA the reference is the base with the adapter switched off, so no copy.
    ref_model = weights if (plan.stage in ("dpo", "rl") and plan.method == "full") else 0.0
    if plan.stage == "rl":  # GRPO-style: a reward model of the same size, frozen, 16 bit
        ref_model += P * 2.0
    if plan.stage == "rm":  # sequence-classification head replaces the LM head: 1 output
        weights -= 0 if shape.tied else shape.vocab * shape.hidden * 2.0
    grads = T * t_bytes
    state_factor = OPTIMIZERS.get(plan.optimizer, 2.0)
    optimizer = T * 2.0 if state_factor is None else T * t_bytes * state_factor
    if state_factor is None and plan.method == "full":
        # transformers keeps 32-bit state for embeddings under bitsandbytes' 8-bit optimizers (trainer.py,
        # register_module_override(..., {"optim_bits": 32})): 8 bytes a parameter there, not 2
        optimizer += shape.vocab * shape.hidden * (8.0 - 2.0)
    foreach_tmp = T * t_bytes if plan.optimizer in FOREACH_OPTIMIZERS else 0.0

    # Tokens in one forward: DPO and reward models see chosen and rejected together (TRL concatenates them).
    seqs = plan.batch * (2 if plan.stage in ("dpo", "rm") else 1)
    tokens = seqs * plan.seq
    dropout = plan.lora_dropout > 0 and plan.stage not in ("dpo", "rm")  # TRL: disable_dropout=True there
    varlen = plan.stage in ("sft", "dpo") and not shape.padded(plan.stage, plan.seq)
    repeat = plan.gqa_repeat and varlen and shape.kv_width < shape.q_width
    per_layer = shape.activation_bytes_per_token_layer(plan.method, plan.attn, plan.seq, dropout, repeat, plan.liger)
    # the first layer's activations (rebuilt, with checkpointing) are still alive while the last gradients appear
    # (SmolLM2-1.7B full with checkpointing: 0.55 GiB over the gradients, bench/results/memory_snapshot.jsonl)
    last_layer = tokens * per_layer * (REBUILD_FULL if plan.grad_ckpt and plan.method == "full" else 1.0)
    # LoRA on fused experts: each layer's merged expert stack, and in backward the gradient of its largest part
    # (gate_up, 2/3 of it)
    merged = shape.merged_expert_bytes(plan.method, plan.lora_targets)
    last_layer += merged * (1 + 2 / 3)
    if plan.grad_ckpt:
        # Full recomputation (Korthikanti et al. 2022, sec. 5): each layer keeps its bf16 input (2h per token);
        # backward rebuilds one layer's activations at a time. With every_n_layers (transformers: layers 0, n,
        # 2n, ... are checkpointed) the others keep all of theirs; offloaded inputs leave the GPU as they are made.
        checkpointed = checkpointed_layers(shape.layers, plan.ckpt_every)
        kept = shape.layers - checkpointed
        inputs = 0.0 if plan.ckpt_offload else checkpointed * 2 * shape.hidden
        activations = tokens * (inputs + kept * per_layer) + kept * merged + last_layer
    else:
        activations = tokens * shape.layers * per_layer + shape.layers * merged + merged * 2 / 3
    activations += tokens * shape.hidden * (2 + 6)  # embedding output, final norm (fp32 in + bf16 out)
    if shape.padded(plan.stage, plan.seq):
        activations *= PADDED_MARGIN
    # LM head + loss: the fused log-prob keeps the scored hidden states (bf16) and backward fills an fp32 gradient
    # for them, plus an fp32 gradient of the head's weight when it trains; tiles of logits, never all of them.
    head = tokens * shape.hidden * (2 + 4) + min(tokens, 4096) * LOGPROB_TILE_BYTES
    if plan.method == "full":
        head += shape.vocab * shape.hidden * 4.0
    if plan.grad_ckpt and plan.method == "full":
        # The head's backward ends (its logit tiles and saved hidden states freed, its fp32 weight gradient cast to
        # bf16) before the last layer is rebuilt, so the two never meet: the worse of the head's backward and the
        # rebuilt layer's, which has only the hidden states' gradient and the bf16 head gradient beside it.
        # Qwen3-0.6B full 2048 x 8: the snapshot's peak is the rebuilt layer next to a 0.29 GiB bf16 head gradient
        # (trl/kernels/chunked_logprob.py); +21 % with the whole head added to it, +13.5 % now.
        beside = tokens * shape.hidden * 4 + shape.vocab * shape.hidden * 2.0
        head = max(head, last_layer + beside) - last_layer
    if plan.stage == "rl":  # generation: KV cache of the rollouts, 2 (k, v) x layers x kv width x bf16
        head += tokens * shape.layers * 2 * shape.kv_width * 2.0
    return {
        "weights": weights,
        "reference / reward model": ref_model,
        "optimizer state": optimizer,
        "activations": activations,
        "logits and loss": head,
        "gradients": grads,
        "optimizer temporaries": foreach_tmp,
        "last layer": last_layer,
    }


def _reserve(shape: Shape, plan: MemoryPlan, dynamic: float, rebuilt: float) -> float:
    reserve = FRAG_BASE_GIB * GIB + FRAG_DYNAMIC * dynamic + (FRAG_REBUILD * rebuilt if plan.grad_ckpt else 0.0)
    if plan.method == "full" and shape.tied:
        # tied embeddings: the embedding's own bf16 gradient (V x h) exists next to the head's until they are summed
        # (Gemma-2-2B full 512 x 4: -4.8 % without it; Qwen2.5-0.5B full: -4.3 %; estimate_fam_heldout.jsonl)
        reserve += shape.vocab * shape.hidden * 2.0
    return reserve


def _one_gpu_bytes(shape: Shape, plan: MemoryPlan) -> dict[str, float]:
    """Peak memory by part, in bytes, at the worse of the two moments (see module docstring)."""
    m = _quantities(shape, plan)
    moment_a = m["activations"] + m["logits and loss"]
    moment_b = m["gradients"] + m["optimizer temporaries"] + m["last layer"]
    parts = {k: m[k] for k in ("weights", "reference / reward model", "optimizer state")}
    if moment_a >= moment_b:
        parts.update({k: m[k] for k in ("activations", "logits and loss")})
    else:
        parts.update({k: m[k] for k in ("gradients", "optimizer temporaries")})
        parts["activations"] = m["last layer"]
    parts["allocator reserve"] = _reserve(shape, plan, max(moment_a, moment_b), m["last layer"])
    parts["CUDA context"] = CONTEXT_GIB * GIB
    return parts
