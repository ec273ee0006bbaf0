"""Load benchmark for the run queue: N sessions submit at once; nothing is lost, never more jobs than slots.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/queue_load.py --sessions 20 --slots 1

Each "session" is its own process calling engine.runs.submit at the same moment (as 20 workshop students pressing
Start). A tiny 2-layer model trains 3 steps per run, so the figure is about the queue, not the training. A monitor
polls the registry every 0.2 s and records the most runs it ever saw running at once. Writes a JSON line to
bench/results/queue_load.jsonl.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_tiny_model(out: Path) -> None:
    from engine.models import ensure_embedded

    code = f"""
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
tok = AutoTokenizer.from_pretrained({str(ensure_embedded())!r})
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
LlamaForCausalLM(cfg).save_pretrained({str(out)!r}); tok.save_pretrained({str(out)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def submit(args):
    index, model, barrier = args
    from engine import runs
    from engine.spec import RunSpec
    from engine.users import User

    barrier.wait()
    started = time.time()
    run_id = runs.submit(
        RunSpec(model_name_or_path=model, max_steps=3, per_device_train_batch_size=2, eval_steps=1000),
        User(f"student{index:02d}", "owner"),
    )
    return run_id, time.time() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--slots", type=int, default=1)
    a = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="queue-load-"))
    os.environ.update(TUNEWISE_HOME=str(home), TUNEWISE_SLOTS=str(a.slots), HF_HUB_OFFLINE="1")
    model = home / "tiny"
    make_tiny_model(model)
    from engine import runs
    from engine.users import OWNER

    runs.connect()
    manager = multiprocessing.Manager()
    barrier = manager.Barrier(a.sessions)
    t0 = time.time()
    with multiprocessing.Pool(a.sessions) as pool:
        results = pool.map(submit, [(i, str(model), barrier) for i in range(a.sessions)])
    ids = sorted(r[0] for r in results)
    max_running, order = 0, []
    while True:
        listed = runs.list_runs(OWNER)
        running = [r for r in listed if r["state"] == "running"]
        max_running = max(max_running, len(running))
        for r in running:
            if r["id"] not in order:
                order.append(r["id"])
        if all(r["state"] in ("completed", "failed", "stopped") for r in listed) and len(listed) == a.sessions:
            break
        time.sleep(0.2)
    listed = runs.list_runs(OWNER)
    by_start = [r["id"] for r in sorted(listed, key=lambda r: r["started_at"])]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "sessions": a.sessions,
        "slots": a.slots,
        "submitted": len(ids),
        "distinct_ids": len(set(ids)),
        "registered": len(listed),
        "completed": sum(r["state"] == "completed" for r in listed),
        "max_running_seen": max_running,
        "started_in_submission_order": by_start == sorted(by_start),
        "submit_seconds_max": round(max(r[1] for r in results), 3),
        "wall_seconds": round(time.time() - t0, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))
    out = REPO / "bench" / "results" / "queue_load.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
