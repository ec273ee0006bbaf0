"""Per-GPU peak memory the estimator gives for DDP and FSDP2 on 2, 4 and 8 GPUs (arithmetic, no GPU needed).

    .venv/bin/python bench/fsdp_per_gpu.py > bench/results/fsdp_per_gpu.md

Settings: micro-batch 1, gradient checkpointing, 2048 tokens, AdamW (fused), LoRA r 16 on every linear layer.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import vram  # noqa: E402
from engine.estimate import EstimateRequest, peak_gib  # noqa: E402

# Published shapes (config.json of meta-llama/Llama-2-7b-hf, Llama-2-70b-hf, 01-ai/Yi-34B)
KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
SHAPES = {  # the five KEYS, then vocab_size
    "Llama-2-7B": (4096, 11008, 32, 32, 32, 32000),
    "Yi-34B": (7168, 20480, 60, 56, 8, 64000),
    "Llama-2-70B": (8192, 28672, 80, 64, 8, 32000),
}
# AnswerDotAI/fsdp_qlora benchmarks_03_2024.md, 2 GPUs, gradient checkpointing, LoRA r 64 (their default), torch's
# peak reserved memory (NVML shows ~0.5-1.3 GiB more: the CUDA context); (shape, method, fsdp?, offload, batch, seq,
# GiB)
PUBLISHED = [
    ("Llama-2-7B", "qlora", True, False, 1, 512, 4.98),
    ("Llama-2-7B", "qlora", True, False, 1, 2048, 5.21),
    ("Llama-2-7B", "lora", True, False, 1, 512, 10.24),
    ("Llama-2-7B", "lora", True, False, 1, 2048, 10.22),
    ("Llama-2-7B", "qlora", True, False, 4, 2048, 11.22),
    ("Llama-2-7B", "qlora", True, False, 10, 2048, 20.97),
    ("Llama-2-7B", "lora", True, False, 4, 2048, 16.14),
    ("Llama-2-7B", "lora", True, False, 6, 2048, 21.35),
    ("Llama-2-7B", "qlora", False, False, 8, 2048, 20.94),
    ("Llama-2-7B", "lora", False, False, 4, 2048, 22.04),
    ("Yi-34B", "qlora", True, False, 2, 2048, 23.05),
    ("Yi-34B", "qlora", True, True, 4, 2048, 22.98),
    ("Llama-2-70B", "qlora", True, True, 2, 2048, 14.92),
]

MODELS = ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B")


def main() -> None:
    print("| model | method | GPUs | DDP GiB/GPU | FSDP GiB/GPU | FSDP + CPU offload GiB/GPU |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        for method in ("full", "lora", "qlora"):
            base = EstimateRequest(model=model, method=method, seq=2048, batch=1, grad_ckpt=True)
            print(f"| {model} | {method} | 1 | {peak_gib(base):.1f} | - | - |")
            for gpus in (2, 4, 8):
                req = replace(base, gpus=gpus)
                fsdp = replace(req, distributed="fsdp")
                print(
                    f"| {model} | {method} | {gpus} | {peak_gib(req):.1f} | {peak_gib(fsdp):.1f} | "
                    f"{peak_gib(replace(fsdp, offload=True)):.1f} |"
                )
    print()
    print("Against AnswerDotAI/fsdp_qlora's published peaks (2 GPUs, checkpointing, r 64; theirs is torch's reserved")
    print("memory, ours what NVML shows, so ours minus the CUDA context is the comparable figure):")
    print()
    print("Their train.py takes the loss of Hugging Face's forward, which materialises batch x seq x vocab logits")
    print("(bf16 out, fp32 upcast for the loss, fp32 gradient: ~10 bytes each); TRL's fused head (what engine.train")
    print("runs) scores tiles of 4096 tokens. The last two columns add those logits to ours for the comparison.")
    print()
    print(
        "| shape | method | mode | batch x seq | published GiB | ours GiB | ours - context | ratio | "
        "+ their logits | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, method, fsdp, offload, batch, seq, gib in PUBLISHED:
        *sizes, vocab = SHAPES[name]
        cfg = {**dict(zip(KEYS, sizes)), "vocab_size": vocab, "model_type": "llama", "tie_word_embeddings": False}
        shape = vram.Shape.from_config(cfg)
        plan = vram.MemoryPlan(
            method=method,
            seq=seq,
            batch=batch,
            grad_ckpt=True,
            lora_r=64,
            gpus=2,
            distributed="fsdp" if fsdp else "ddp",
            offload=offload,
        )
        ours = sum(vram.breakdown_bytes(shape, plan).values()) / vram.GIB
        mode = ("FSDP" + (" + offload" if offload else "")) if fsdp else "DDP-like"
        comparable = ours - vram.CONTEXT_GIB
        logits = comparable + batch * seq * shape.vocab * 10 / vram.GIB
        print(
            f"| {name} | {method} | {mode} | {batch} x {seq} | {gib:.2f} | {ours:.2f} | {comparable:.2f} | "
            f"{comparable / gib:.2f} | {logits:.2f} | {logits / gib:.2f} |"
        )
    print()
    print("Answer.AI's fsdp_qlora setting (Llama-2-70B shape ~ Llama-3.1-70B here, QLoRA, 2 GPUs, batch 1, 512 tokens,")
    print("checkpointing, CPU offload):")
    req = EstimateRequest(
        model="meta-llama/Llama-3.1-70B", method="qlora", seq=512, batch=1, grad_ckpt=True, gpus=2, distributed="fsdp"
    )
    print(
        f"- without offload {peak_gib(req):.1f} GiB/GPU, "
        f"with offload {peak_gib(replace(req, offload=True)):.1f} GiB/GPU"
    )


if __name__ == "__main__":
    main()
