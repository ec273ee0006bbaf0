"""What fills GPU memory at a training step's peak, next to what the estimator says: one grid row of
bench/estimate_accuracy.py run through `engine.train` in this process, with torch's allocator history recorded over
one step after warm-up. The live blocks at the step's highest `memory_allocated` are summed by where they were
allocated (the innermost frames in transformers, PEFT, TRL or this project; "backward" when autograd's own thread
allocated them, which has no Python frames).

    python bench/memory_snapshot.py --out $OUT --rows 'HuggingFaceTB/SmolLM3-3B,sft,lora,2048,4,0' ...

One JSON line per row in $OUT/memory_snapshot.jsonl: torch's allocated bytes before the step (weights, optimizer
state), the step's peak, the reserved peak, the top allocation sites at the peak, and the estimator's parts.
"""

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # what python -m engine.train sets
GIB = 2**30
KEEP = ("transformers/", "peft/", "trl/", "engine/", "torch/nn/functional", "torch/utils/checkpoint", "accelerate/")


def site(frames: list[dict]) -> str:
    """The two innermost frames of interest, as 'file:line func < file:line func'."""
    picked = []
    for f in frames:
        name = f.get("filename", "")
        if any(k in name for k in KEEP):
            short = name.split("site-packages/")[-1].split("/work/")[-1]
            picked.append(f"{short}:{f.get('line')} {f.get('name')}")
        if len(picked) == 2:
            break
    return " < ".join(picked) if picked else "backward (autograd thread)" if not frames else "torch internals"


def peak_sites(snapshot: dict, device: int = 0, top: int = 25) -> tuple[int, list[tuple[str, int]]]:
    """Replay the recorded allocs and frees; return the highest net growth and the sites live at that moment."""
    live, net, best, at_best = {}, 0, 0, {}
    for event in snapshot["device_traces"][device]:
        action, addr, size = event["action"], event["addr"], event["size"]
        if action == "alloc":
            live[addr] = (size, site(event.get("frames") or []))
            net += size
        elif action == "free_completed" and addr in live:
            net -= live.pop(addr)[0]
        if net > best:
            best, at_best = net, dict(live)
    sums = Counter()
    for size, where in at_best.values():
        sums[where] += size
    return best, sums.most_common(top)


def recorder(step: int, out: dict):
    import torch
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                out["allocated_before_gib"] = torch.cuda.memory_allocated() / GIB
                torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step and "peak_allocated_gib" not in out:
                torch.cuda.synchronize()
                snapshot = torch.cuda.memory._snapshot()
                torch.cuda.memory._record_memory_history(enabled=None)
                out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
                out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
                growth, sites = peak_sites(snapshot)
                out["step_growth_gib"] = growth / GIB
                out["sites_gib"] = [(where, round(size / GIB, 3)) for where, size in sites]

    return Record()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", required=True, help="model,stage,method,seq,batch,grad_ckpt[,optim]")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    p.add_argument("--step", type=int, default=3, help="the step recorded (1-based)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this row in this process
    args = p.parse_args()
    if args.one:
        return run_one(args)
    import subprocess

    for row in args.rows:  # one process per row: a fresh allocator and CUDA context each
        subprocess.run(
            [sys.executable, __file__, "--rows", row, "--one", row, "--out", args.out, "--step", str(args.step)],
            cwd=REPO,
        )
    return 0


def run_one(args) -> int:
    from bench import estimate_accuracy as ea
    from engine import estimate, vram

    model, stage, method, seq, batch, ckpt, *optim = args.one.split(",")
    row = (model, stage, method, int(seq), int(batch), ckpt == "1", *optim)
    work, models_root = Path("/tmp/tw_snap"), Path("/tmp/tw_models")
    work.mkdir(exist_ok=True)
    shutil.rmtree(work / "run", ignore_errors=True)  # rows run one after another in the same folder
    model_dir = ea.make_model_dir(model, models_root)
    import torch

    torch.cuda.empty_cache()
    data = ea.make_dataset(stage, row[3], row[4] * (args.step + 2), work / "data.jsonl")
    out = {"row": args.one}
    from bench.profile_run import with_callback
    from engine.spec import RunSpec
    from engine.train.__main__ import main as train

    with_callback(lambda: recorder(args.step, out))
    flags = ea.engine_flags(row, model_dir, data, work / "run", args.step) + [
        "--save-steps",
        "1000",
        "--eval-steps",
        "1000",
    ]
    out["exit"] = train(flags)
    request = estimate.EstimateRequest(
        model=ea.estimator_model(model),
        stage=stage,
        method=method,
        seq=int(seq),
        batch=int(batch),
        grad_ckpt=ckpt == "1",
        optimizer=optim[0] if optim else RunSpec().optim,
        lora_dropout=RunSpec().lora_dropout,
    )
    parts = vram.breakdown_bytes(estimate._shape(request.model), estimate._plan(request))
    out["estimate_gib"] = {k: round(v / GIB, 3) for k, v in parts.items()}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with (Path(args.out) / "memory_snapshot.jsonl").open("a") as f:
        f.write(json.dumps(out) + "\n")
    print(json.dumps(out, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
