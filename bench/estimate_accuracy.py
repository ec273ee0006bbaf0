"""How close engine.estimate's peak_gib is to what NVML shows in use during real training runs.

    # on the GPU machine (one configuration per process, NVML sampled in a thread, results as JSON lines):
    python bench/estimate_accuracy.py run --grid final --out $OUT
    # here, afterwards: re-score the stored measurements with the current estimator and write the summary
    python bench/estimate_accuracy.py score bench/results/estimate_accuracy.jsonl
    # the GPU runs users trained (each records its predicted and NVML-measured peak in status.json):
    python bench/estimate_accuracy.py score-runs ~/.tunewise/runs

Models are random-weight copies of public configs from the catalog (memory does not depend on weight values),
saved once to /tmp so QLoRA can quantize them on load. Every row of the synthetic data set is longer than `seq`
tokens, so truncation makes every sequence exactly `seq` long. `--trainer mini` runs TRL in this process instead
of `python -m engine.train` (used to calibrate before engine.train existed); its rows are marked as such.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

S, Q, L, F = "sft", "qlora", "lora", "full"
M135, Q05, L1, L3, L8 = (
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "Qwen/Qwen2.5-0.5B",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.1-8B",
)
# (model, stage, method, seq, batch, gradient checkpointing)
GRIDS = {
    "final": [
        (M135, S, L, 512, 8, False),
        (M135, S, F, 2048, 4, False),
        (M135, S, Q, 1024, 4, True),
        (M135, S, L, 2048, 2, True),
        (Q05, S, L, 2048, 8, False),
        (Q05, S, F, 2048, 8, False),
        (Q05, S, Q, 1024, 2, False),
        (Q05, S, F, 1024, 4, True),
        (Q05, S, L, 512, 1, True),
        (L1, S, L, 1024, 4, True),
        (L1, S, F, 512, 8, True),
        (L1, S, Q, 2048, 2, False),
        (L3, S, Q, 2048, 4, True),
        (L3, S, L, 512, 2, False),
        (L3, S, F, 1024, 2, True),
        (L3, S, L, 2048, 8, True),
        (L8, S, Q, 512, 1, True),
        (L8, S, L, 2048, 2, True),
        (L8, S, F, 512, 1, True),
        (L8, S, Q, 2048, 8, True),
        (L8, S, L, 1024, 1, False),
    ],
    "final_dpo": [
        (M135, "dpo", L, 1024, 2, True),
        (Q05, "dpo", F, 512, 4, True),
        (Q05, "dpo", L, 2048, 2, False),
        (L1, "dpo", L, 2048, 2, False),
        (L3, "dpo", Q, 1024, 1, False),
        (L8, "dpo", L, 1024, 2, True),
        (L8, "dpo", Q, 2048, 4, True),
    ],
    "calib": [
        (M135, S, L, 1024, 4, False),
        (M135, S, L, 2048, 8, True),
        (M135, S, F, 512, 2, False),
        (M135, S, F, 2048, 4, True),
        (M135, S, Q, 1024, 2, False),
        (M135, "dpo", F, 1024, 2, False),
        (Q05, S, L, 1024, 4, False),
        (Q05, S, L, 2048, 8, True),
        (Q05, S, F, 512, 2, False),
        (Q05, S, F, 2048, 4, True),
        (Q05, S, Q, 1024, 2, False),
        (Q05, S, Q, 2048, 4, True),
        (Q05, "dpo", L, 1024, 2, True),
        (Q05, "dpo", F, 512, 2, False),
        (L1, S, L, 1024, 4, False),
        (L1, S, F, 2048, 4, True),
        (L1, S, Q, 512, 8, False),
        (L3, S, L, 2048, 8, True),
        (L3, S, F, 512, 2, False),
        (L3, S, Q, 2048, 4, True),
        (L3, "dpo", L, 512, 2, False),
        (L8, S, L, 1024, 4, False),
        (L8, S, F, 2048, 2, True),
        (L8, S, Q, 1024, 2, False),
        (L8, "dpo", Q, 512, 2, True),
        (L8, S, F, 512, 1, False),
    ],
}


# Families this project was never calibrated on (2026-12-01). fam_calib is what the estimator's family rules (eager
# softcapped attention, sliding-window masks, the 8-bit optimizer, pt and rm stages) were checked on; fam_heldout
# is only scored afterwards, to report. A 7th field is the optimizer.
G2, G3, QW06, QW17, QW4, QW8 = (
    "google/gemma-2-2b",
    "google/gemma-3-1b-pt",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B",
    "Qwen/Qwen3-4B",
    "Qwen/Qwen3-8B",
)
SM3, PHI4 = "HuggingFaceTB/SmolLM3-3B", "microsoft/Phi-4-mini-instruct"
GRIDS["fam_calib"] = [
    (G2, S, L, 1024, 4, False),  # the issue's -28.8 % case
    (G3, S, L, 2048, 4, False),
    (QW17, S, F, 1024, 4, False),
    (QW06, "dpo", L, 1024, 2, False),
    (PHI4, S, Q, 1024, 4, True),
    (L1, "pt", L, 2048, 4, False),
    (QW06, "rm", L, 1024, 4, False),
    (QW17, S, F, 512, 4, True, "adamw_8bit"),
]
GRIDS["fam_heldout"] = [
    (SM3, S, L, 2048, 4, False),
    (G3, "dpo", Q, 2048, 2, True),
    (QW4, S, Q, 2048, 8, True),
    (QW8, S, L, 1024, 2, False),
    (PHI4, "dpo", L, 512, 4, False),
    (QW17, "pt", F, 2048, 2, True),
    (G2, S, F, 512, 4, True),
    (QW06, S, L, 8192, 1, False),
    (QW4, "rm", L, 2048, 2, True),
    (L3, S, F, 1024, 2, True, "adamw_8bit"),
]


# A second held-out grid, defined after fam_heldout was scored and folded into the fit (2026-12-01): scored only
M7, SM17, Q15 = "mistralai/Mistral-7B-v0.3", "HuggingFaceTB/SmolLM2-1.7B", "Qwen/Qwen2.5-1.5B"
GRIDS["fam_heldout2"] = [
    (QW17, S, Q, 4096, 4, False),
    (SM17, S, F, 2048, 2, True),
    (QW06, S, F, 4096, 2, False),
    (Q15, "dpo", F, 512, 2, False),
    (PHI4, S, L, 2048, 2, True),
    (G2, "dpo", L, 1024, 2, False),
    (L3, S, F, 1024, 2, True, "adamw_8bit"),
    (M7, "dpo", Q, 1024, 2, True),
]

# After the memory snapshots (bench/memory_snapshot.py, 2026-12-01 evening): the rows whose engine path changed
# (pt and reward LoRA keep adapter inputs in bf16 as SFT/DPO do; a batch of one takes SDPA's plain path), and a
# third held-out grid of families, stages and settings none of the earlier grids had together: scored only.
G34, Q7, PHI3, SM360 = (
    "google/gemma-3-4b-pt",
    "Qwen/Qwen2.5-7B",
    "microsoft/Phi-3-mini-4k-instruct",
    "HuggingFaceTB/SmolLM2-360M",
)
GRIDS["remeasure"] = [(L1, "pt", L, 2048, 4, False), (QW06, "rm", L, 1024, 4, False), (QW06, S, L, 8192, 1, False)]
GRIDS["fam_heldout3"] = [
    (QW4, S, L, 1024, 4, False),
    (L3, "dpo", L, 1024, 2, True),
    (G34, S, Q, 2048, 2, True),
    (M7, S, L, 2048, 2, True),
    (Q7, S, Q, 1024, 4, False),
    (SM3, S, Q, 4096, 2, True),
    (PHI3, S, L, 1024, 2, False),
    (QW17, "dpo", L, 2048, 2, False),
    (G2, S, Q, 2048, 2, False),
    (QW06, S, F, 2048, 8, True),
    (SM360, S, F, 1024, 8, False),
    (L8, "dpo", Q, 2048, 2, True),
]
# What no grid measured yet (issue 18, item 1): long context, RL (GRPO rewarded by checks: no reward model, no
# reference), and a mixture-of-experts family. "@layers=N" keeps N decoder layers of a published config, so a
# 30B-parameter shape fits the GPU machine's disk; the estimator reads the same trimmed config.
MOE = "Qwen/Qwen3-30B-A3B@layers=6"
GRIDS["coverage"] = [
    (QW17, S, L, 16384, 1, True),
    (L1, S, L, 32768, 1, True),
    (QW06, "rl", L, 256, 8, False),
    (MOE, S, L, 1024, 2, True),
    (MOE, S, L, 2048, 4, False),
]

# The same rows again once engine.train runs torch's allocator with expandable segments (2026-12-02): the reserve
# above allocated memory was the least predictable part (0.2-2.3 GiB); these are for refitting it, not held out.
GRIDS["expandable"] = [
    (Q15, "dpo", F, 512, 2, False),
    (QW06, S, F, 2048, 8, True),
    (G3, "dpo", Q, 2048, 2, True),
    (QW4, S, Q, 2048, 8, True),
    (M135, S, L, 512, 8, False),
    (Q05, S, L, 2048, 8, False),
    (L3, S, Q, 2048, 4, True),
    (QW17, "pt", F, 2048, 2, True),
    (G2, S, L, 1024, 4, False),
    (L1, S, L, 1024, 4, True),
    (QW17, S, F, 1024, 4, False),
    (Q05, "dpo", F, 512, 4, True),
    (SM3, S, L, 2048, 4, False),
]

# A fourth held-out grid, defined after the expandable refit and scored only (2026-12-02): stages, methods and
# lengths in combinations no grid had, and two older rows that were under the refit estimate, measured again.
GRIDS["fam_heldout4"] = [
    (L1, "dpo", F, 1024, 2, False),
    (QW06, "dpo", F, 1024, 2, True),
    (M135, "pt", F, 1024, 8, False),
    (SM17, "dpo", L, 1024, 4, True),
    (QW17, S, L, 512, 16, False),
    (G34, S, L, 1024, 2, False),
    (Q15, S, F, 2048, 4, True),
    (PHI4, S, L, 4096, 2, True),
    (L3, "pt", Q, 2048, 4, True),
    (G2, S, L, 2048, 2, True),
    (QW8, S, Q, 2048, 4, True),
]
GRIDS["expandable_old"] = [(L1, S, L, 32768, 1, True), (G2, S, F, 512, 4, True), (G34, S, Q, 1024, 2, False)]


class NvmlPeak(threading.Thread):
    """Highest `used` memory NVML reports for one GPU while running (what nvidia-smi shows and what runs out):
    `index`, or the first GPU this process is given."""

    def __init__(self, index: int | None = None):
        super().__init__(daemon=True)
        import pynvml

        pynvml.nvmlInit()
        # NVML numbers GPUs physically, ignoring CUDA_VISIBLE_DEVICES: sample the one the run was given
        if index is None:
            index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        self.peak, self.stop_flag = 0, threading.Event()

    def used(self):
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used

    def run(self):
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, self.used())
            time.sleep(0.005)

    def stop(self):
        self.stop_flag.set()
        self.join()
        return self.peak


def model_config(name: str) -> dict:
    """The catalog's config.json for a grid row's model; "<id>@layers=N" keeps the first N decoder layers."""
    from engine import catalog

    base, _, layers = name.partition("@layers=")
    values = {k: v for k, v in catalog.load_config(base).items() if k != "_name_or_path"}
    if layers:
        values["num_hidden_layers"] = int(layers)
        if isinstance(values.get("layer_types"), list):  # one entry a layer
            values["layer_types"] = values["layer_types"][: int(layers)]
    return values


def estimator_model(name: str) -> str:
    """What the estimator is given for a grid row's model: the catalog id, or a directory holding the trimmed
    config.json of an "@layers=N" row."""
    if "@layers=" not in name:
        return name
    target = Path("/tmp/tw_configs") / name.replace("/", "--").replace("@", "_")
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(model_config(name)))
    return str(target)


def make_model_dir(name: str, root: Path) -> Path:
    """A random-weight bf16 copy of a catalog model, with a word-level tokenizer (no network on the GPU machine)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    target = root / name.replace("/", "--")
    if (target / "config.json").is_file():
        return target
    values = model_config(name)
    cfg = AutoConfig.for_model(**values)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(target)
    del model
    torch.cuda.empty_cache()
    # Byte-level BPE with no merges: one token per byte, and AutoTokenizer's per-family classes (Qwen2Tokenizer...)
    # rebuild it the same way, so every family tokenizes our text identically.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<unk>": 0, "<eos>": 1, "<pad>": 2, **{ch: i + 3 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(target)
    return target


def make_dataset(stage: str, seq: int, rows: int, path: Path) -> Path:
    import random

    rnd = random.Random(seq)
    words = lambda n: " ".join(f"w{rnd.randrange(3, 4000)}" for _ in range(n))  # noqa: E731
    with path.open("w") as f:
        for _ in range(rows):  # every row longer than seq: truncation makes each sequence exactly seq tokens
            # ~5 tokens a word; prompts short, answers long: truncation leaves exactly seq tokens, most of them scored
            if stage == "rm":  # TRL's reward trainer drops pairs longer than max_length instead of cutting them
                side = max(1, (seq - seq // 40 * 6) // 7)  # ~6 byte-tokens a word: prompt + answer fill ~seq
                row = {"prompt": words(seq // 40 + 1), "chosen": words(side), "rejected": words(side)}
            elif stage == "dpo":
                row = {"prompt": words(seq // 40 + 1), "chosen": words(seq // 3), "rejected": words(seq // 3)}
            elif stage == "pt":
                row = {"text": words(seq // 2)}
            elif stage == "rl":  # a prompt of about seq - 64 tokens; GRPO samples up to 64 more (its default)
                task = {"title": words(3), "priority": "high", "status": "pending"}
                row = {"prompt": words(max(1, (seq - 64) // 6)), "expected": json.dumps(task)}
            else:
                row = {"prompt": words(seq // 40 + 1), "completion": words(seq // 3)}
            f.write(json.dumps(row) + "\n")
    return path


def engine_flags(row, model_dir, data, out, steps) -> list[str]:
    """`python -m engine.train` flags for a grid row (bench/memory_snapshot.py runs the same ones in-process)."""
    model, stage, method, seq, batch, ckpt = row[:6]
    flags = ["--stage", stage, "--method", method, "--model", str(model_dir), "--dataset", str(data)]
    flags += ["--max-steps", str(steps), "--seq", str(seq), "--batch", str(batch), "--output-dir", str(out)]
    flags += (["--grad-ckpt"] if ckpt else []) + (["--optim", row[6]] if len(row) > 6 else [])
    return flags + (["--reward", "task_api"] if stage == "rl" else [])


def train_engine(row, model_dir, data, work, steps):
    """One `python -m engine.train` run in its own process; step time and torch's reserved peak from metrics.jsonl."""
    import shutil

    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "engine.train", *engine_flags(row, model_dir, data, out, steps)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in logs if "loss" in r]
    gaps = [b["time"] - a["time"] for a, b in zip(logs, logs[1:])]
    return {
        "step_s": statistics.median(gaps[1:]) if len(gaps) > 1 else None,
        "torch_reserved_gib": max((r.get("memory_gib") or 0) for r in logs) if logs else None,
        "torch_allocated_gib": max((r.get("memory_allocated_gib") or 0) for r in logs) if logs else None,
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True (engine.train)"),
        # what the trainer itself recorded: its pre-flight prediction and NVML's figure for its process
        "trainer_memory": json.loads((out / "status.json").read_text()).get("memory"),
        "padded": "batches: padded" in (out / "train.log").read_text(),
        "checkpointing_turned_on": "gradient checkpointing: on" in (out / "train.log").read_text(),
    }


def train_mini(row, model_dir, data, work, steps):
    """TRL in this process, as engine.train is expected to run it; returns torch's peak counters and step time."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    model_name, stage, method, seq, batch, ckpt = row
    quant = (
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        if method == Q
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.bfloat16,
        quantization_config=quant,
        device_map={"": 0} if torch.cuda.is_available() else None,
    )
    tok = AutoTokenizer.from_pretrained(model_dir)
    peft = (
        None
        if method == F
        else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    Config, Trainer = (DPOConfig, DPOTrainer) if stage == "dpo" else (SFTConfig, SFTTrainer)
    args = Config(
        output_dir=str(work / "run"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        max_length=seq,
        gradient_checkpointing=ckpt,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    ds = Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()])
    trainer = Trainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft, callbacks=[Clock()]
    )
    stamps.append(time.perf_counter())
    trainer.train()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    result = {"step_s": statistics.median(gaps[2:]) if len(gaps) > 2 else None}
    if torch.cuda.is_available():
        result["torch_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        result["torch_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del trainer, model
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def versions():
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def predict(row, optimizer="adamw_torch", lora_dropout=0.05):
    """The estimator's peak_gib for a grid row, with the optimizer and LoRA dropout the run used. `mini` rows ran
    TrainingArguments' default optimizer (fused AdamW); engine.train runs RunSpec's (adamw_torch before the default
    changed to the fused one; LoRA dropout 0.05 before it changed to 0: rows that do not record it ran 0.05)."""
    try:
        from engine import estimate

        # every row of this benchmark fills max_length, so engine.train takes SDPA's plain path, never varlen's
        # k/v repeat (which the estimator adds for torch < 2.13 where lengths differ)
        estimate.varlen_repeats_kv = lambda: False
        model, stage, method, seq, batch, ckpt = row[:6]
        return estimate.peak_gib(
            estimate.EstimateRequest(
                model=estimator_model(model),
                stage=stage,
                method=method,
                seq=seq,
                batch=batch,
                grad_ckpt=ckpt,
                optimizer=optimizer,
                lora_dropout=lora_dropout,
            )
        )
    except Exception as e:  # the estimator may not exist yet when calibrating
        return f"error: {e}"


def run(args):
    import pynvml

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work, models_root = Path("/tmp/tw_bench"), Path("/tmp/tw_models")
    work.mkdir(exist_ok=True)
    sampler = NvmlPeak()
    name = pynvml.nvmlDeviceGetName(sampler.handle)
    meta = {
        "date": datetime.date.today().isoformat(),
        "gpu": name if isinstance(name, str) else name.decode(),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "versions": versions(),
        "trainer": args.trainer,
    }
    train = train_mini if args.trainer == "mini" else train_engine
    from engine.spec import RunSpec

    optim = "adamw_torch_fused" if args.trainer == "mini" else RunSpec().optim  # what each trainer runs
    dropout = 0.05 if args.trainer == "mini" else RunSpec().lora_dropout
    start, results = time.time(), out / f"estimate_{args.grid}.jsonl"
    rows = GRIDS[args.grid]
    if args.only:
        rows = [rows[int(i)] for i in args.only.split(",")]
    for i, row in enumerate(rows):
        if args.trainer != "mini" and i and rows[i - 1][0] not in [r[0] for r in rows[i:]]:
            import shutil  # the GPU machine's disk holds a few random-weight copies, not a whole grid's

            shutil.rmtree(models_root / rows[i - 1][0].replace("/", "--"), ignore_errors=True)
        if time.time() - start > args.budget_s:
            print("budget spent; skipping", row, flush=True)
            continue
        if args.trainer == "mini":
            model_dir = make_model_dir(row[0], models_root)
        else:  # in a child process, so this one never holds a CUDA context that NVML would count
            subprocess.run([sys.executable, __file__, "make-model", row[0], str(models_root)], check=True)
            model_dir = models_root / row[0].replace("/", "--")
        data = make_dataset(row[1], row[3], row[4] * (args.steps + 1), work / "data.jsonl")
        baseline = NvmlPeak().used()
        sampler = NvmlPeak()
        sampler.start()
        t0 = time.time()
        try:
            extra = train(row, model_dir, data, work, args.steps)
            error = None
        except Exception as e:  # an OOM or a trainer failure is a result too
            extra, error = {}, str(e)[-600:]
        peak = sampler.stop()
        record = {
            **meta,
            "model": row[0],
            "stage": row[1],
            "method": row[2],
            "seq": row[3],
            "batch": row[4],
            "grad_ckpt": row[5],
            "optim": row[6] if len(row) > 6 else optim,
            "measured_gib": peak / 2**30,
            "idle_used_gib": baseline / 2**30,
            "wall_s": time.time() - t0,
            "lora_dropout": dropout,
            "predicted_gib": predict(row, row[6] if len(row) > 6 else optim, dropout),
            "error": error,
            **extra,
        }
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            json.dumps(
                {
                    k: record[k]
                    for k in (
                        "model",
                        "stage",
                        "method",
                        "seq",
                        "batch",
                        "grad_ckpt",
                        "measured_gib",
                        "predicted_gib",
                        "wall_s",
                        "error",
                    )
                }
            ),
            flush=True,
        )


def score(args):
    """Re-predict each stored measurement with the current estimator; print and write the summary."""
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("error")]
    lines, errors = [], []
    for r in rows:
        optimizer = r.get("optim") or ("adamw_torch_fused" if r["trainer"] == "mini" else "adamw_torch")
        pred = predict(
            (r["model"], r["stage"], r["method"], r["seq"], r["batch"], r["grad_ckpt"]),
            optimizer,
            r.get("lora_dropout", 0.05),
        )
        err = (pred - r["measured_gib"]) / r["measured_gib"]
        errors.append(abs(err))
        lines.append(
            f"| {r['model'].split('/')[-1]} | {r['stage']} | {r['method']} | {r['seq']} | {r['batch']} | "
            f"{'on' if r['grad_ckpt'] else 'off'} | {r['measured_gib']:.2f} | {pred:.2f} | {err:+.1%} |"
        )
    summary = (
        f"median |error| {statistics.median(errors):.1%}, worst {max(errors):.1%} over {len(errors)} runs "
        f"({rows[0]['gpu']}, {rows[0]['date']}, trainer {rows[0]['trainer']}, {rows[0]['versions']})"
    )
    print(summary)
    print("\n".join(lines))
    if args.markdown:
        head = (
            "| model | stage | method | seq | batch | grad ckpt | NVML used GiB | predicted GiB | error |\n"
            "|---|---|---|---|---|---|---|---|---|"
        )
        Path(args.markdown).write_text(
            f"# Estimator accuracy\n\n{summary}\n\nReproduce: "
            f"`python bench/estimate_accuracy.py score {args.results}`\n\n{head}\n" + "\n".join(lines) + "\n"
        )


def score_runs(args):
    """Every run directory under args.runs whose trainer recorded a prediction and an NVML peak (status.json
    `memory`, engine/train/common.py): users' own GPU runs keep the estimator honest. Re-predicts each with the
    current estimator from its config.yaml, next to the prediction made at the time."""
    from engine import estimate
    from engine.spec import RunSpec

    lines, errors = [], []
    for status_file in sorted(Path(args.runs).glob("*/status.json")):
        memory = json.loads(status_file.read_text()).get("memory") or {}
        measured = memory.get("measured_peak_gib")
        if not measured or "predicted_peak_gib" not in memory:
            continue
        spec = RunSpec.load(status_file.parent / "config.yaml")
        try:
            log = status_file.parent / "train.log"
            liger = log.is_file() and "kernels: Liger's fused" in log.read_text(errors="replace")  # as it ran
            now = estimate.peak_gib(replace(estimate.request_for(spec), liger=liger))
        except (estimate.EstimateError, ValueError, OSError):
            now = float("nan")
        err = (now - measured) / measured
        errors.append(err)
        lines.append(
            f"| {status_file.parent.name} | {spec.model_name_or_path} | {spec.stage} | {spec.method} | "
            f"{spec.max_length} | {spec.per_device_train_batch_size} | {measured:.2f} | "
            f"{memory['predicted_peak_gib']:.2f} | {now:.2f} | {err:+.1%} |"
        )
    if not errors:
        print(f"No run under {args.runs} recorded a predicted and a measured GPU peak (GPU runs record both).")
        return
    print(
        f"{len(errors)} runs: median |error| {statistics.median(abs(e) for e in errors):.1%}, "
        f"lowest {min(errors):+.1%} (under-predicted), highest {max(errors):+.1%}"
    )
    print("| run | model | stage | method | seq | batch | NVML GiB | predicted then | predicted now | error now |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--grid", choices=sorted(GRIDS), default="final")
    r.add_argument("--trainer", choices=["engine", "mini"], default="engine")
    r.add_argument("--steps", type=int, default=4)
    r.add_argument("--only", default="", help="comma-separated row indexes of the grid to run")
    r.add_argument("--budget-s", type=float, default=480, help="start no new configuration after this many seconds")
    r.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    s = sub.add_parser("score")
    s.add_argument("results")
    s.add_argument("--markdown", default="")
    sr = sub.add_parser("score-runs", help="score the runs users trained (their status.json memory records)")
    sr.add_argument("runs", help="a runs folder, e.g. ~/.tunewise/runs")
    m = sub.add_parser("make-model")
    m.add_argument("name")
    m.add_argument("root")
    a = parser.parse_args()
    if a.cmd == "make-model":
        make_model_dir(a.name, Path(a.root))
    elif a.cmd == "score-runs":
        score_runs(a)
    else:
        run(a) if a.cmd == "run" else score(a)
