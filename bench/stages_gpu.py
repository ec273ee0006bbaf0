"""Every stage with LoRA and QLoRA on a random-weight 1B model, and one- vs two-GPU throughput of full SFT, all
through `python -m engine.train` as the app launches it. Run on the GPU machine:

    python bench/stages_gpu.py stages --out $OUT     # pt, sft, dpo, rm, rl x lora, qlora on GPU 0
    python bench/stages_gpu.py scaling --out $OUT    # full SFT, 1 GPU vs 2 GPUs (accelerate launch, DDP)

Tokens per second are counted from the data (tokens fed per optimizer step / median step time after the first
two); peak memory is NVML's `used` for the GPU (what nvidia-smi shows), sampled every 5 ms from this process,
which holds no CUDA context. Results: JSON lines in $OUT/stages_gpu.jsonl, kept in bench/results/.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from estimate_accuracy import NvmlPeak, make_dataset, versions  # noqa: E402

MODEL = "meta-llama/Llama-3.2-1B"
WORK = Path("/tmp/tw_stages")


def model_dir() -> Path:
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "estimate_accuracy.py"), "make-model", MODEL, "/tmp/tw_models"],
        check=True,
    )
    return Path("/tmp/tw_models") / MODEL.replace("/", "--")


def train(name: str, args: list[str], gpus: str = "0") -> dict:
    out = WORK / name
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
    sampler = NvmlPeak()
    sampler.start()
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "engine.train", *args, "--output-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    peak = sampler.stop()
    logs = (
        [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        if (out / "metrics.jsonl").exists()
        else []
    )
    steps = [r for r in logs if "loss" in r or "reward" in r]
    gaps = [b["time"] - a["time"] for a, b in zip(steps, steps[1:])][2:]
    return {
        "name": name,
        "returncode": proc.returncode,
        "wall_s": round(time.time() - t0, 1),
        "step_s": statistics.median(gaps) if gaps else None,
        "nvml_peak_gib": peak / 2**30,
        "torch_reserved_gib": max((r.get("memory_gib") or 0) for r in steps) if steps else None,
        "last": {k: v for k, v in (steps[-1] if steps else {}).items() if isinstance(v, (int, float))},
        "error": proc.stderr[-800:] if proc.returncode else None,
    }


def write(out: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with (out / "stages_gpu.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def stages(out: Path, only: list[str]) -> None:
    model = str(model_dir())
    meta = {"date": time.strftime("%Y-%m-%d"), "model": MODEL, "versions": versions()}
    seq, batch, steps = 512, 8, 12
    data = {
        s: make_dataset("dpo" if s in ("dpo", "rm") else "sft", seq, batch * (steps + 2), WORK / f"{s}.jsonl")
        for s in ("sft", "dpo", "rm")
    }
    for method in ("lora", "qlora"):
        common = [
            "--method",
            method,
            "--model",
            model,
            "--max-steps",
            str(steps),
            "--batch",
            str(batch),
            "--seq",
            str(seq),
            "--eval-steps",
            "100000",
            "--save-steps",
            "100000",
        ]
        for stage in only or ("pt", "sft", "dpo", "rm", "rl"):
            # rm: the bundled pairs (TRL's RewardTrainer drops pairs longer than max_length instead of truncating)
            extra = {
                "sft": ["--dataset", str(data["sft"])],
                "dpo": ["--dataset", str(data["dpo"])],
                "rm": [],
                "pt": [],
                "rl": ["--reward-model", str(WORK / f"rm-{method}")],
            }[stage]
            result = train(f"{stage}-{method}", ["--stage", stage, *common, *extra])
            # tokens per optimizer step: pt/sft seq x batch; dpo/rm chosen + rejected; rl: generation-bound
            tokens = {"pt": seq * batch, "sft": seq * batch, "dpo": 2 * seq * batch}.get(stage)
            tps = tokens / result["step_s"] if tokens and result["step_s"] else None
            write(
                out,
                {
                    **meta,
                    "kind": "stage",
                    "stage": stage,
                    "method": method,
                    "seq": seq,
                    "batch": batch,
                    "tokens_per_s": tps,
                    **result,
                },
            )


def scaling(out: Path) -> None:
    model = str(model_dir())
    seq, batch, steps = 1024, 8, 14
    data = make_dataset("sft", seq, batch * 2 * (steps + 2), WORK / "scale.jsonl")
    meta = {"date": time.strftime("%Y-%m-%d"), "model": MODEL, "versions": versions()}
    for n, gpus in ((1, "0"), (2, "0,1")):
        result = train(
            f"full-sft-{n}gpu",
            [
                "--stage",
                "sft",
                "--method",
                "full",
                "--model",
                model,
                "--dataset",
                str(data),
                "--max-steps",
                str(steps),
                "--batch",
                str(batch),
                "--seq",
                str(seq),
                "--eval-steps",
                "100000",
                "--save-steps",
                "100000",
                "--num-processes",
                str(n),
            ],
            gpus,
        )
        tps = seq * batch * n / result["step_s"] if result["step_s"] else None
        write(
            out,
            {**meta, "kind": "scaling", "gpus": n, "seq": seq, "batch_per_gpu": batch, "tokens_per_s": tps, **result},
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["stages", "scaling"])
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    p.add_argument("--only", default="", help="comma-separated stages (stages only)")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.what == "stages":
        stages(Path(a.out), [x for x in a.only.split(",") if x])
    else:
        scaling(Path(a.out))
