"""Tokens per second of `python -m engine.train` (the app's defaults) against a plain TRL script (TRL's defaults),
same model, stage, method, batch, length and data, one process per run, on the GPU machine.

    # on the GPU machine; one worker per visible GPU, each run alone on its GPU:
    python bench/throughput.py run --out $OUT [--models 135m,0.5b,1b] [--ways plain,app,app_ckpt] [--budget-s 540]
    # here, afterwards: the table (speed-up, memory, MFU) from the stored JSON lines
    python bench/throughput.py score bench/results/throughput.jsonl

Plain (a) is what a person writes from TRL's docs: the model loaded in bf16 (NF4 + double quantisation for QLoRA),
SFTTrainer / DPOTrainer with TRL's defaults (gradient checkpointing on, padded batches, no packing), the same LoRA
settings and learning rate as the app, logging every step. App (b) is `engine.train` with nothing but the shared
flags. app_ckpt is (b) with --grad-ckpt, for the comparison at equal memory.

Data: a chat-like length mix, not fixed-length rows: prompt and answer lengths are log-normal (median 90 and 250
tokens, long tail), so batches of 8 mix 60-token and 1,000-token examples as real instruction data does. Models are
random-weight copies of public configs (speed and memory do not depend on the values) with a byte-level tokenizer.
Tokens per second counts real tokens only (TRL's own `num_tokens`, which excludes padding), median over the logged
steps after the first two. MFU = real tokens/s x model FLOPs per token (6N full, 4N LoRA/QLoRA, +2N for DPO's
reference forward, + causal attention 6 L h s for each example's own length s; recomputation not counted) over the
H200's dense bf16 peak: 989 TFLOP/s datasheet, ~790 measured on large matrix products (both reported).
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.estimate_accuracy import NvmlPeak, versions  # noqa: E402

MODELS = {
    "135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "0.5b": "Qwen/Qwen2.5-0.5B",
    "1b": "meta-llama/Llama-3.2-1B",
    "8b": "meta-llama/Llama-3.1-8B",
    # issue 19's families, which the earlier work was not tuned on
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B",
    "llama3.2-3b": "meta-llama/Llama-3.2-3B",
    "gemma2-2b": "google/gemma-2-2b",
    "mistral-7b": "mistralai/Mistral-7B-v0.3",
    "phi4-mini": "microsoft/Phi-4-mini-instruct",
    "smollm3-3b": "HuggingFaceTB/SmolLM3-3B",
}
BATCH = {k: 4 if k.endswith(("8b", "7b")) else 8 for k in MODELS}  # 7-8B: full DPO holds a second weight copy
# The ways a configuration runs, after "plain" (the TRL script): --grad-ckpt or not, and config.yaml `extra:`.
WAYS = {
    "app": (False, {}),
    "app_ckpt": (True, {}),
    "app_padded": (False, {"padding_free": False}),
    "app_ckpt_padded": (True, {"padding_free": False}),
    "app_ckpt_liger": (True, {"liger": True}),
    "app_liger": (False, {"liger": True}),
    "app_ckpt_compile": (True, {"compile": True}),
    "app_compile": (False, {"compile": True}),
    "app_ckpt_compile_hf": (True, {"compile": True, "liger": False}),  # inductor's own fusions instead of Liger's
    "app_ckpt_compile_eager4": (True, {"compile": True, "compile_4bit": "eager"}),  # QLoRA: bnb's matmul not compiled
    "app_ckpt_every2": (True, {"checkpoint_every": 2}),  # --checkpoint-every 2
    "app_ckpt_sac": (True, {"activation_checkpointing_kwargs": {"selective": True}}),
    # HF's own kernels where Liger is the default (engine/train/kernels.py LIGER_BY_DEFAULT): the lever alone
    "app_hf": (False, {"liger": False}),
    "app_ckpt_hf": (True, {"liger": False}),
    # --checkpoint-offload: each checkpointed layer's input waits in pinned CPU memory (transformers' save_on_cpu)
    "app_ckpt_cpu": (True, {"checkpoint_offload": True}),
    # the memory-saving mode: checkpointed layer inputs wait in pinned CPU memory (TRL's activation offloading,
    # side streams); it sees them only under reentrant checkpointing (non-reentrant keeps them in a closure)
    "app_offload": (True, {"activation_offloading": True, "activation_checkpointing_kwargs": {"use_reentrant": True}}),
}
RUN_TIMEOUT_S = float(os.environ.get("THROUGHPUT_RUN_TIMEOUT_S", "300"))  # a run that hangs (a compile) is cut
PEAK_TFLOPS = {"datasheet": 989.0, "measured": 790.0}
STEPS = int(os.environ.get("THROUGHPUT_STEPS", "14"))
WORK, MODELS_ROOT = Path("/tmp/tw_tp"), Path("/tmp/tw_models")
PROFILE = False  # run --profile: each run under bench/profile_run.py; its kernel table goes to OUT/profiles/


def configs(models: list[str], grid: str = "issue") -> list[dict]:
    """grid "issue": SFT and DPO x full, LoRA, QLoRA at 1024 on the chat mix (+ the 1B MFU row); "mem": issue 19's
    memory-saving case, LoRA and QLoRA SFT with rows that fill 2048 tokens."""
    if grid == "mem":
        return [
            {"model": key, "stage": "sft", "method": m, "seq": 2048, "batch": BATCH[key], "mix": "full"}
            for key in models
            for m in ("lora", "qlora")
        ]
    out = []
    for key in models:
        for stage in ("sft", "dpo"):
            for method in ("full", "lora", "qlora"):
                out.append(
                    {"model": key, "stage": stage, "method": method, "seq": 1024, "batch": BATCH[key], "mix": "chat"}
                )
    if "1b" in models:  # the issue's MFU case: full SFT at 2048, rows that fill the length
        out.append({"model": "1b", "stage": "sft", "method": "full", "seq": 2048, "batch": 8, "mix": "full"})
    return out


def lognormal(rnd, median, sigma, low, high):
    return int(min(high, max(low, median * math.exp(rnd.gauss(0, sigma)))))


def make_dataset(cfg: dict, rows: int, path: Path) -> Path:
    """Byte-level tokenizer: one token per byte, so lengths are set in characters."""
    rnd = random.Random(0)
    text = lambda n: "".join(rnd.choice("abcdefghij klmnop qrstuv wxyz") for _ in range(n))  # noqa: E731
    with path.open("w") as f:
        for _ in range(rows):
            if cfg["mix"] == "full":
                row = {"prompt": text(16), "completion": text(cfg["seq"] * 2)}
            elif cfg["stage"] == "dpo":
                row = {
                    "prompt": text(lognormal(rnd, 90, 0.8, 16, 900)),
                    "chosen": text(lognormal(rnd, 250, 0.8, 8, 1500)),
                    "rejected": text(lognormal(rnd, 250, 0.8, 8, 1500)),
                }
            else:
                row = {
                    "prompt": text(lognormal(rnd, 90, 0.8, 16, 900)),
                    "completion": text(lognormal(rnd, 250, 0.8, 8, 1500)),
                }
            f.write(json.dumps(row) + "\n")
    return path


def lengths(path: Path, cfg: dict) -> list[int]:
    """Tokens of each sequence as trained (prompt + answer, truncated to seq; DPO: chosen and rejected)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for k in ("chosen", "rejected") if "chosen" in row else ("completion",):
            out.append(min(len((row["prompt"] + " " + row[k]).encode()) + 2, cfg["seq"]))
    return out


def attention_span(path: Path, cfg: dict) -> float:
    """sum(s^2)/sum(s) over the examples as trained (truncated to seq): the mean attention length per token."""
    seqs = lengths(path, cfg)
    return sum(s * s for s in seqs) / sum(seqs)


def model_flops_per_token(cfg: dict, span: float) -> float:
    from engine import estimate

    return estimate.model_flops_per_token(estimate._shape(MODELS[cfg["model"]]), cfg["stage"], cfg["method"], span)


def plain(args) -> int:
    """(a): the hand-written TRL script, run as its own process."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from engine.spec import default_learning_rate

    cfg = json.loads(args.cfg)
    quant = (
        BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        if cfg["method"] == "qlora"
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir,
        dtype=torch.bfloat16,
        quantization_config=quant,
        device_map={"": 0} if torch.cuda.is_available() else None,
    )
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    peft = (
        None
        if cfg["method"] == "full"
        else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
    # what engine.train keeps for training from a user's file (common.load_splits): until the evening of 2026-12-07
    # this cut under 100 rows too, so the script and the app trained on different batches
    if len(rows) >= 100:
        rows = rows[: -min(200, len(rows) // 20)]
    out = Path(args.out)

    class Log(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"step": state.global_step, "time": time.time(), **(logs or {})}) + "\n")

    Config, Trainer = (DPOConfig, DPOTrainer) if cfg["stage"] == "dpo" else (SFTConfig, SFTTrainer)
    config = Config(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=cfg["batch"],
        max_length=cfg["seq"],
        learning_rate=default_learning_rate(cfg["stage"], cfg["method"], "x"),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=42,
        **({} if torch.cuda.is_available() else {"use_cpu": True, "bf16": False}),
    )  # CPU: smoke tests
    trainer = Trainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft,
        callbacks=[Log()],
    )
    trainer.train()
    return 0


def check(args) -> None:
    """The varlen kernel on this GPU against padded SDPA, per example, in bf16 on a real model shape."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.train import fast

    print("varlen kernel:", fast._varlen_kernel(), flush=True)
    for key in args.models.split(","):
        path = model_dir(key)
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda().eval()
        lengths = [37, 300, 5, 1000, 120]
        seqs = [torch.randint(3, 200, (n,), device="cuda") for n in lengths]
        cu = torch.tensor([0] + list(__import__("itertools").accumulate(lengths)), dtype=torch.int32, device="cuda")
        pos = torch.cat([torch.arange(n, device="cuda") for n in lengths])[None]
        with torch.inference_mode():
            alone = [ref(input_ids=s[None]).logits[0].float() for s in seqs]
            ref.set_attn_implementation(fast.register())
            packed = (
                ref(
                    input_ids=torch.cat(seqs)[None],
                    position_ids=pos,
                    cu_seq_lens_q=cu,
                    cu_seq_lens_k=cu,
                    max_length_q=max(lengths),
                    max_length_k=max(lengths),
                )
                .logits[0]
                .float()
            )
        worst = max((packed[int(cu[i]) : int(cu[i + 1])] - a).abs().max().item() for i, a in enumerate(alone))
        scale = max(a.abs().max().item() for a in alone)
        print(json.dumps({"check": key, "max_abs_diff": worst, "max_abs_logit": scale}), flush=True)
        # DPO: a right-padded batch through TRL's fused LM head, padded vs packed (fast.pack_padded_calls)
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(ref)
        width = max(lengths)
        ids = torch.stack([torch.nn.functional.pad(s, (0, width - len(s))) for s in seqs])
        mask = torch.stack([torch.arange(width, device="cuda") < n for n in lengths]).long()
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :3] = -100
        with torch.inference_mode():
            padded = ref(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs.float()
            fast.pack_padded_calls(ref)
            plan = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in fast.packing_plan(mask.cpu()).items()}
            packed = ref(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True, **plan)
            packed = packed.log_probs.float()
        print(
            json.dumps(
                {
                    "check": key + " dpo packed log-probs",
                    "max_abs_diff": (packed - padded).abs().max().item(),
                    "max_abs_logp": padded.abs().max().item(),
                    "sum_diff": (packed.sum(1) - padded.sum(1)).abs().max().item(),
                }
            ),
            flush=True,
        )
        del ref
        torch.cuda.empty_cache()


def command(way: str, cfg: dict, model_dir: Path, data: Path, out: Path) -> list[str]:
    """One run's command line. Ways: plain (a), app (b), app_ckpt (b with --grad-ckpt), and the variants of WAYS,
    each an `extra:` of config.yaml (e.g. app_ckpt_padded turns padding-free batches off, to tell that gain from
    the others)."""
    profile = [str(REPO / "bench/profile_run.py"), "--label", way] if PROFILE else []
    if way == "plain":
        return [
            sys.executable,
            *(profile or [__file__, "plain"]),
            "--plain" if profile else "--cfg",
            json.dumps(cfg),
            "--model-dir",
            str(model_dir),
            "--data",
            str(data),
            "--out",
            str(out),
        ]
    ckpt, settings = WAYS[way]
    extra = []
    if settings:
        config = out.parent / f"{way}.yaml"
        from engine.spec import RunSpec

        fields = {f.name for f in dataclasses.fields(RunSpec)}  # the app's own settings; the rest goes to `extra:`
        own = {k: v for k, v in settings.items() if k in fields}
        config.write_text(json.dumps({**own, "extra": {k: v for k, v in settings.items() if k not in own}}))  # YAML
        extra = ["--config", str(config)]
    return [
        sys.executable,
        *(profile + ["--"] if profile else ["-m", "engine.train"]),
        *extra,
        "--stage",
        cfg["stage"],
        "--method",
        cfg["method"],
        "--model",
        str(model_dir),
        "--dataset",
        str(data),
        "--seq",
        str(cfg["seq"]),
        "--batch",
        str(cfg["batch"]),
        "--max-steps",
        str(STEPS),
        "--save-steps",
        "1000000",
        "--eval-steps",
        "1000000",
        "--output-dir",
        str(out),
    ] + (["--grad-ckpt"] if ckpt else [])


def tokens_per_second(metrics: Path) -> tuple[float | None, list[float], list[float]]:
    """(median, the losses, the real tokens a second of each logged step after the first two: the first steps warm
    up, or compile)."""
    logs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    logs = [r for r in logs if "loss" in r and r.get("num_tokens") is not None]
    rates = [
        (b["num_tokens"] - a["num_tokens"]) / (b["time"] - a["time"])
        for a, b in zip(logs, logs[1:])
        if b["step"] > 2 and b["time"] > a["time"]
    ]
    return (statistics.median(rates) if rates else None), [r["loss"] for r in logs], rates


_model_locks: dict[str, threading.Lock] = {}


def model_dir(key: str) -> Path:
    with _model_locks.setdefault(key, threading.Lock()):
        target = MODELS_ROOT / MODELS[key].replace("/", "--")
        if not (target / "config.json").is_file():
            subprocess.run(
                [sys.executable, str(REPO / "bench/estimate_accuracy.py"), "make-model", MODELS[key], str(MODELS_ROOT)],
                check=True,
                cwd=REPO,
                env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"},
            )
        return target


def last_logged_step(metrics: Path) -> int:
    steps = [0]
    for line in metrics.read_text().splitlines()[-3:] if metrics.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if "loss" in record:
            steps.append(record.get("step", 0))
    return max(steps)


def finish_after_last_step(cmd: list[str], gpu: int, metrics: Path, kill: bool) -> subprocess.CompletedProcess:
    """Run one configuration. engine.train saves the model after its last step (the plain script does not): that
    save is not part of the speed, takes minutes and ~16 GB of disk for 8B, so the app's process is killed once its
    last step is logged."""
    with open(metrics.parent.parent / "stdout", "w+") as out, open(metrics.parent.parent / "stderr", "w+") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "TORCH_LOGS": "recompiles"},
        )
        started = time.time()
        while proc.poll() is None:
            time.sleep(1)
            if time.time() - started > RUN_TIMEOUT_S:
                os.killpg(proc.pid, 9)
                proc.wait()
                err.seek(0, 2)
                err.write(f"\nkilled after {RUN_TIMEOUT_S:.0f} s (THROUGHPUT_RUN_TIMEOUT_S)\n")
                break
            if kill and last_logged_step(metrics) >= STEPS:
                os.killpg(proc.pid, 9)
                proc.wait()
                proc.returncode = 0
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def one(way: str, cfg: dict, gpu: int, meta: dict) -> dict:
    name = f"{cfg['model']}-{cfg['stage']}-{cfg['method']}-{cfg['seq']}-{cfg['mix']}"
    work = WORK / name / way
    subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    data = make_dataset(cfg, cfg["batch"] * (STEPS + 2) + 8, WORK / name / "data.jsonl")
    cmd = command(way, cfg, model_dir(cfg["model"]), data, work / "run")
    (work / "run").mkdir()
    peak = NvmlPeak(gpu)
    peak.start()
    t0 = time.time()
    proc = finish_after_last_step(cmd, gpu, work / "run" / "metrics.jsonl", kill=way != "plain")
    if PROFILE:
        with (Path(meta["out"]) / "profiles.txt").open("a") as f:  # one file: few files come back from the machine
            f.write(f"\n=== {name} {way}\n" + proc.stdout[proc.stdout.find('{"profile"') :] + proc.stderr[-800:])
    record = {
        **{k: v for k, v in meta.items() if k != "out"},
        **cfg,
        "way": way,
        "nvml_peak_gib": peak.stop() / 2**30,
        "wall_s": round(time.time() - t0, 1),
        "error": None if proc.returncode == 0 else proc.stderr[-800:],
    }
    tps, losses, rates = tokens_per_second(work / "run" / "metrics.jsonl")
    span = attention_span(data, cfg)
    seqs = lengths(data, cfg)
    record.update(
        tokens_per_s=tps,
        losses=losses,
        attention_span=round(span, 1),
        mean_tokens=round(sum(seqs) / len(seqs), 1),
        padding_free="batches: padding-free" in proc.stdout,
        kernels=[line[9:] for line in proc.stdout.splitlines() if line.startswith("kernels: ")],
        step_rates=[round(r) for r in rates],
        recompiles=proc.stderr.count("Recompiling function"),  # TORCH_LOGS=recompiles: a compile way's new shapes
    )
    if tps:
        flops = tps * model_flops_per_token(cfg, span)
        record.update({f"mfu_{k}": flops / (v * 1e12) for k, v in PEAK_TFLOPS.items()})
    return record


def run(args) -> None:
    import pynvml

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pynvml.nvmlInit()
    gpus = list(range(pynvml.nvmlDeviceGetCount()))
    name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    meta = {
        "date": datetime.date.today().isoformat(),
        "gpu": name if isinstance(name, str) else name.decode(),
        "versions": versions(),
        "out": str(out),
    }
    global PROFILE
    PROFILE = args.profile
    for key in args.models.split(","):  # before any run, so no measurement shares its GPU with a model being built
        model_dir(key)
    jobs: queue.Queue = queue.Queue()
    ways = args.ways.split(",")
    # the ways of one configuration together: a budget cut leaves pairs
    for cfg in configs(args.models.split(","), args.grid):
        for way in ways:
            key = f"{cfg['model']}:{cfg['stage']}:{cfg['method']}"
            if not args.only or {key, f"{key}:{cfg['seq']}"} & set(args.only.split(",")):
                jobs.put((way, cfg))
    start, lock = time.time(), threading.Lock()

    def worker(gpu: int):
        while True:
            try:
                way, cfg = jobs.get_nowait()
            except queue.Empty:
                return
            if time.time() - start > args.budget_s:
                print("budget spent, skipped", way, cfg, flush=True)
                continue
            record = one(way, cfg, gpu, meta)
            with lock, (out / "throughput.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                json.dumps(
                    {
                        k: record.get(k)
                        for k in (
                            "way",
                            "model",
                            "stage",
                            "method",
                            "seq",
                            "tokens_per_s",
                            "nvml_peak_gib",
                            "mfu_measured",
                            "wall_s",
                            "padding_free",
                            "error",
                        )
                    }
                ),
                flush=True,
            )

    threads = [threading.Thread(target=worker, args=(g,)) for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def score(args) -> None:
    """The table: (b) with --grad-ckpt against (a) at equal or lower memory (the issue's comparison), and (b) with its
    own defaults (checkpointing only when needed, so more memory) where measured. For a configuration run more than
    once, the last pair counts (the file is in run order)."""
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["stage"], r["method"], r["seq"], r["mix"]), {})[r["way"]] = r
    lines = [
        "| model | stage | method | seq, mix | plain tok/s, GiB | app+ckpt tok/s, GiB | speed-up, equal memory | "
        "app default tok/s, GiB, speed-up | MFU app+ckpt (989 / 790) | first losses plain / app+ckpt |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ups, ups_default, lower_memory = [], [], 0
    for key, ways in by.items():
        a, c, b = ways.get("plain"), ways.get("app_ckpt"), ways.get("app")
        if not (a and c and a.get("tokens_per_s") and c.get("tokens_per_s")):
            why = f"failed: {((a or {}).get('error') or (c or {}).get('error') or 'no pair')[-120:]!r}"
            lines.append(f"| {' | '.join(map(str, key[:3]))} | {key[3]}, {key[4]} | {why} |")
            continue
        ups.append(c["tokens_per_s"] / a["tokens_per_s"])
        lower_memory += c["nvml_peak_gib"] <= a["nvml_peak_gib"] + 0.05
        default = "-"
        if b and b.get("tokens_per_s"):
            ups_default.append(b["tokens_per_s"] / a["tokens_per_s"])
            default = f"{b['tokens_per_s']:,.0f}, {b['nvml_peak_gib']:.1f}, {ups_default[-1]:.2f}x"
        other = " (other machine)" if c.get("machine") != a.get("machine") else ""
        loss = f"{a['losses'][0]:.3f} / {c['losses'][0]:.3f}" if a["losses"] and c["losses"] else "-"
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]}, {key[4]} | {a['tokens_per_s']:,.0f}, "
            f"{a['nvml_peak_gib']:.1f} | {c['tokens_per_s']:,.0f}, {c['nvml_peak_gib']:.1f} | "
            f"{ups[-1]:.2f}x{other} | {default} | {c.get('mfu_datasheet', 0):.1%} / "
            f"{c.get('mfu_measured', 0):.1%} | {loss} |"
        )
    meta = rows[-1] if rows else {}
    head = [
        f"# Throughput: engine.train vs a plain TRL script ({meta.get('date')}, {meta.get('gpu')}, "
        f"{json.dumps(meta.get('versions'))})",
        "",
        f"At equal or lower peak memory (both with gradient checkpointing): median {statistics.median(ups):.2f}x, "
        f"lowest {min(ups):.2f}x over {len(ups)} configurations; the app's NVML peak was within 0.05 GiB of "
        f"plain TRL's or lower in {lower_memory} of them."
        if ups
        else "No complete pair.",
        "The app's defaults (checkpointing only when needed: more memory): "
        f"{', '.join(f'{u:.2f}x' for u in ups_default)} where measured."
        if ups_default
        else "",
        "Each pair ran at the same time on the two GPUs of one machine (field `machine`); steps of models under 1B "
        "are bound by the host CPU queueing kernels, and the same run varies by up to ~25 % between machines.",
        "",
    ]
    text = "\n".join(head + lines + variants(by)) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)


def loss_gap(run: dict, other: dict | None) -> str:
    """The largest relative difference between two runs' losses, step by step ("-" for the run itself or no pair):
    where the math is the same (padding-free vs padded, Liger's kernels vs HF's), only bf16 rounding separates them."""
    a, b = (run or {}).get("losses") or [], (other or {}).get("losses") or []
    if not a or not b or run is other:
        return "-"
    return f"{max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b)):.1%}"


def variants(by: dict) -> list[str]:
    """Every way measured of each configuration against plain TRL of the same run file: the levers one by one."""
    lines = [
        "",
        "## Every way against plain TRL (same machine, same data)",
        "",
        "| model | stage | method | seq, mix | way | tok/s | NVML GiB | speed-up | memory vs plain | MFU (790) | "
        "first loss | loss curve vs plain, vs app_ckpt | kernels / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, ways in by.items():
        a = ways.get("plain") or {}
        for way, r in ways.items():
            tps, gib = r.get("tokens_per_s"), r.get("nvml_peak_gib") or 0
            up = f"{tps / a['tokens_per_s']:.2f}x" if tps and a.get("tokens_per_s") else "-"
            mem = f"{gib / a['nvml_peak_gib']:.2f}x" if a.get("nvml_peak_gib") and way != "plain" else "-"
            note = "; ".join(r.get("kernels") or []) if tps else (r.get("error") or "no steps")[-100:]
            gaps = ", ".join(loss_gap(r, ways.get(other)) for other in ("plain", "app_ckpt"))
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {key[3]}, {key[4]} | {way} | {tps or 0:,.0f} | {gib:.1f} | "
                f"{up} | {mem} | {r.get('mfu_measured', 0):.1%} | "
                f"{r['losses'][0] if r.get('losses') else float('nan'):.3f} | {gaps} | "
                f"{note.replace('|', '/').replace(chr(10), ' ')} |"
            )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--models", default="135m,0.5b,1b,8b")
    r.add_argument("--ways", default="plain,app")
    r.add_argument("--budget-s", type=float, default=540)
    r.add_argument("--only", help="these configurations only, e.g. 1b:sft:qlora,1b:dpo:lora,1b:sft:full:2048")
    r.add_argument("--grid", default="issue", choices=("issue", "mem"), help="mem: LoRA/QLoRA SFT, rows of 2048")
    r.add_argument("--profile", action="store_true", help="profile steps 6-9 of each run (bench/profile_run.py)")
    s = sub.add_parser("score")
    s.add_argument("results")
    s.add_argument("--write", help="also write the table to this markdown file")
    c = sub.add_parser("check")
    c.add_argument("--models", default="135m,1b")
    pl = sub.add_parser("plain")
    for flag in ("--cfg", "--model-dir", "--data", "--out"):
        pl.add_argument(flag, required=True)
    args = p.parse_args()
    if args.cmd == "plain":
        sys.exit(plain(args))
    {"run": run, "score": score, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
