"""The Ray executor's costs on this machine: cluster start (a head + a second node process), submit-to-first-step
through Ray vs the local executor (the same short run of the embedded model), stop-to-gone through Ray (and
locally), and what a node dying with a run looks like.

    .venv/bin/python bench/ray_executor.py [--repeat 2]     # -> bench/results/ray_executor.jsonl (+ .md by hand)

Each figure is wall time as a person sees it: submit() called -> first metrics.jsonl line with a loss; stop()
called -> stop() returned with the trainer process gone.
"""

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ["HF_HUB_OFFLINE"] = "1"
from conftest import wait_for  # noqa: E402  (the tests' poll, here every 0.1 s)


def short_run(model, steps):
    from engine.spec import RunSpec

    return RunSpec(
        model_name_or_path=str(model),
        max_steps=steps,
        per_device_train_batch_size=2,
        max_length=64,
        save_steps=2,
        eval_steps=10_000,
    )


def first_step(run_dir):
    from engine import rundir

    return any("loss" in m for m in rundir.read_metrics(run_dir))


def fresh_home(cluster_address):
    os.environ["TUNEWISE_HOME"] = tempfile.mkdtemp(prefix="twbench")
    if cluster_address:
        os.environ["TUNEWISE_CLUSTER"] = cluster_address
    else:
        os.environ.pop("TUNEWISE_CLUSTER", None)
    from engine.runs import ray

    ray._nodes_cache = (0.0, [])


def submit_to_first_step(model, cluster_address):
    from engine import runs
    from engine.users import OWNER

    fresh_home(cluster_address)
    t0 = time.time()
    run_id = runs.submit(short_run(model, 3), OWNER)
    submit_s = time.time() - t0
    run = runs.get(run_id, OWNER)
    wait_for(lambda: first_step(run["run_dir"]), 600, 0.1)
    first_s = time.time() - t0
    runs.stop(run_id, OWNER)  # the rest of the run is the trainer's speed, the same either way
    return {"submit_call_s": round(submit_s, 2), "submit_to_first_step_s": round(first_s, 2)}


def stop_to_gone(model, cluster_address):
    from engine import rundir, runs
    from engine.users import OWNER

    fresh_home(cluster_address)
    run_id = runs.submit(short_run(model, 10_000), OWNER)
    run = runs.get(run_id, OWNER)
    wait_for(lambda: first_step(run["run_dir"]), 600, 0.1)
    pid = rundir.read_status(run["run_dir"])["pid"]
    t0 = time.time()
    stopped = runs.stop(run_id, OWNER)
    return {
        "stop_to_gone_s": round(time.time() - t0, 2),
        "trainer_gone": not runs.alive(pid),
        "checkpoint": bool(rundir.last_checkpoint(run["run_dir"])),
        "state": stopped["state"],
    }


def node_death(model, cluster):
    """A run on the second node; that node's processes are killed (as a machine losing power): how the run ends."""
    from engine import rundir, runs
    from engine.users import OWNER

    fresh_home(cluster.address)
    ids = [runs.submit(short_run(model, 10_000), OWNER) for _ in range(2)]  # one per node
    wait_for(lambda: all((r := runs.get(i, OWNER))["node"] and first_step(r["run_dir"]) for i in ids), 600, 0.1)
    from engine.runs import ray

    worker = next(n for n in ray.nodes(fresh=True) if not n.head)
    victim = next(i for i in ids if runs.get(i, OWNER)["node"] == worker.label)
    t0 = time.time()
    os.killpg(cluster.groups[1], signal.SIGKILL)  # the second node's raylet and agents
    ended = wait_for(lambda: (r := runs.get(victim, OWNER))["state"] != "running" and r, 300, 0.5)
    out = {
        "node_death_to_failed_s": round(time.time() - t0, 1),
        "state": ended["state"],
        "error": (ended["error"] or "")[:300],
        "resumable": rundir.last_checkpoint(ended["run_dir"]) is not None,
    }
    for i in ids:
        if runs.get(i, OWNER)["state"] in ("running", "queued"):
            runs.stop(i, OWNER)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only-first-step", action="store_true", help="skip the stop and node-death figures")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_executor.jsonl"))
    a = p.parse_args()
    from ray_cluster import LocalCluster

    from engine.models import ensure_embedded

    model = ensure_embedded()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "ray": version("ray"),
        "torch": version("torch"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
    }
    rows = []
    t0 = time.time()
    cluster = LocalCluster()
    cluster._ray_start(
        "--head",
        "--port",
        str(cluster.gcs_port),
        "--dashboard-port",
        str(cluster.dashboard_port),
        "--dashboard-host",
        "127.0.0.1",
        "--include-dashboard=true",
        "--temp-dir",
        cluster.temp,
    )
    cluster.wait_for_nodes(1)
    head_s = time.time() - t0
    cluster._ray_start("--address", f"127.0.0.1:{cluster.gcs_port}")
    cluster.wait_for_nodes(2)
    rows.append({"what": "cluster start", "head_s": round(head_s, 1), "head_and_node_s": round(time.time() - t0, 1)})
    print(rows[-1], flush=True)
    try:
        for i in range(a.repeat):  # local with one thread too: what a Ray job with 1 CPU gets (OMP_NUM_THREADS=1)
            for name, address, threads in (("local", None, None), ("local", None, "1"), ("ray", cluster.address, None)):
                if threads:
                    os.environ["OMP_NUM_THREADS"] = threads
                rows.append(
                    {
                        "what": "submit to first step",
                        "executor": name,
                        "attempt": i + 1,
                        "omp_num_threads": threads or ("1 (Ray)" if address else "default"),
                        **submit_to_first_step(model, address),
                    }
                )
                os.environ.pop("OMP_NUM_THREADS", None)
                print(rows[-1], flush=True)
        for name, address in () if a.only_first_step else (("local", None), ("ray", cluster.address)):
            rows.append({"what": "stop to gone", "executor": name, **stop_to_gone(model, address)})
            print(rows[-1], flush=True)
        if not a.only_first_step:
            rows.append({"what": "node dies with a run", "executor": "ray", **node_death(model, cluster)})
            print(rows[-1], flush=True)
    finally:
        swept = cluster.stop()
        rows.append({"what": "teardown", "swept_processes": len(swept), "left": len(cluster.leftovers())})
    with open(a.out, "a") as f:
        for r in rows:
            f.write(json.dumps({**meta, **r}) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
