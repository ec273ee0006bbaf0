"""The Ray executor: a run our queue admitted becomes a Ray job on a cluster (README, "Clusters (Ray)").

    ray start --head --dashboard-host 0.0.0.0 --include-dashboard=true   # one machine; Jobs API on :8265
    ray start --address HEAD:6379                                        # every other GPU machine
    TUNEWISE_CLUSTER=http://HEAD:8265 make run                           # the app hands its runs to the cluster

Our queue still decides when a run starts (registry, fair share, quotas): Ray Jobs is not a queue (a job waiting
past its start timeout fails, in no order, with no per-user limits). The cluster's GPUs are the queue's slots (on a
cluster without GPUs, its CPUs in groups of TUNEWISE_RAY_CPUS, default 1; Ray sets OMP_NUM_THREADS to it). Once a
run has its slots, its supervisor (local.supervise, on the app's machine) submits the command the app shows as the
job's entrypoint and watches the job; train.log, status.json and metrics.jsonl stay the source of the live pages.
Every node needs the project and its venv at the same path (nothing is uploaded: no working_dir), and
TUNEWISE_HOME and TUNEWISE_CACHE on storage all nodes mount at the same path, which is checked (_check_storage).

We call the dashboard's Jobs REST and state APIs over HTTP, the calls ray.job_submission.JobSubmissionClient wraps:
the app's process never imports ray (3.4 s and +58 MB measured here, for a page refresh). One run uses one node;
several machines per run would go through Ray Train's TorchTrainer, never a rendezvous of ours (not built).
"""

import json
import os
import secrets
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine import paths, rundir
from engine.runs.registry import RunError, alive, record_end, set_setting, setting

# Ray's SIGTERM -> SIGKILL wait (RAY_JOB_STOP_WAIT_TIME_S, an int; Ray's default 3 s is too short for a checkpoint).
# It is set when the job is submitted, before any step is timed, so it is local.STOP_GRACE_MAX_S, the longest a local
# stop may wait for the step under way and its checkpoint: the trainer exits as soon as it has saved, and a 7 s wait
# killed slow steps before their checkpoint (as it did locally on a CPU, tests/test_stop_checkpoint.py).
STOP_GRACE_S = 300
POLL_S = 1.0
CACHE_S = 5.0  # the cluster's nodes are read at most this often per process (the queue asks every second)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
FORWARDED = ("TUNEWISE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "PYTORCH_", "OMP_NUM_THREADS")


class Unreachable(RunError):
    """The cluster did not answer; the message is for a person."""


@dataclass
class Node:
    node_id: str
    ip: str
    head: bool
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return f"{self.ip} ({self.node_id[:8]})"


def address() -> str | None:
    """The dashboard's URL from TUNEWISE_CLUSTER (http://HEAD:8265; a bare HEAD:PORT means http), or None."""
    value = os.environ.get("TUNEWISE_CLUSTER", "").strip().rstrip("/")
    if not value:
        return None
    return value if "://" in value else f"http://{value}"


def _call(method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> dict:
    url = address() + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise KeyError(path) from None
        raise Unreachable(
            f"The Ray cluster at {address()} refused {method} {path}: HTTP {e.code} "
            f"{e.read()[:300].decode(errors='replace')}"
        ) from None
    except (OSError, ValueError) as e:  # refused, timed out, not HTTP (the GCS port 6379 answers no HTTP)
        raise Unreachable(
            f"The Ray cluster at {address()} cannot be reached ({getattr(e, 'reason', e)}). Runs "
            "wait in the queue until it answers; nothing is lost. Check that `ray start --head "
            "--include-dashboard=true` runs there and that TUNEWISE_CLUSTER names its dashboard "
            "(http://HEAD:8265, not the GCS port 6379)."
        ) from None


_nodes_cache: tuple[float, list[Node] | Unreachable] = (0.0, [])


def nodes(fresh: bool = False) -> list[Node]:
    """The cluster's live nodes (state API); raises Unreachable. Cached CACHE_S per process."""
    global _nodes_cache
    if fresh or time.time() - _nodes_cache[0] > CACHE_S:
        try:
            found = _call("GET", "/api/v0/nodes?limit=10000", timeout=3)["data"]["result"]["result"]
            value = [
                Node(
                    n["node_id"],
                    n["node_ip"],
                    bool(n.get("is_head_node")),
                    n["resources_total"].get("CPU", 0),
                    n["resources_total"].get("GPU", 0),
                )
                for n in found
                if n.get("state") == "ALIVE"
            ]
        except Unreachable as e:
            value = e
        except (KeyError, TypeError) as e:
            value = Unreachable(
                f"The Ray cluster at {address()} answered its node list in a form we do not "
                f"read ({e!r}); is it Ray 2.9 or newer?"
            )
        _nodes_cache = (time.time(), value)
    if isinstance(_nodes_cache[1], Unreachable):
        raise _nodes_cache[1]
    return _nodes_cache[1]


def cpus_per_run() -> int:
    return max(1, int(os.environ.get("TUNEWISE_RAY_CPUS", "1")))


def slot_count() -> int:
    """The queue's slots on the cluster: its GPUs, or CPU groups where it has none; 0 while unreachable (runs
    wait)."""
    try:
        live = nodes()
    except Unreachable:
        return 0
    gpus = sum(int(n.gpus) for n in live)
    return gpus or sum(int(n.cpus) // cpus_per_run() for n in live)


def problem() -> str | None:
    """A sentence when the cluster cannot be used now, for the pages."""
    try:
        live = nodes()
    except Unreachable as e:
        return str(e)
    return None if live else f"The Ray cluster at {address()} has no live node; runs wait until one joins."


def describe() -> dict:
    """The cluster for the Hardware page and `python -m engine.runs cluster`."""
    try:
        live = nodes(fresh=True)
    except Unreachable as e:
        return {"address": address(), "problem": str(e), "nodes": []}
    return {
        "address": address(),
        "problem": problem(),
        "slots": slot_count(),
        "nodes": [{"node": n.label, "head": n.head, "cpus": n.cpus, "gpus": n.gpus} for n in live],
    }


def check(spec, folder: Path) -> None:
    """Refuse, with a sentence, a run the cluster cannot take: more GPUs than its largest node, or a node that
    cannot see the folder of its run directory. Raises Unreachable when the cluster does not answer (the run may
    wait)."""
    live = nodes(fresh=True)
    largest = max((int(n.gpus) for n in live), default=0)
    if spec.num_processes > max(1, largest):
        raise RunError(
            f"This run asks for {spec.num_processes} GPUs but the largest machine of the Ray cluster at "
            f"{address()} has {largest}. Lower the number of GPUs (num_processes) to {max(1, largest)}; "
            "one run trains on one machine (several machines per run are not supported yet)."
        )
    _check_storage(Path(folder), live)


def _check_storage(folder: Path, live: list[Node]) -> None:
    """A job pinned to each node not yet checked for this folder reads a marker the app wrote there (~3 s, once
    per folder and node: the verdicts are kept in the registry's settings)."""
    root = str(folder)
    seen = setting("ray_storage", {})
    todo = [n for n in live if n.node_id not in seen.get(root, [])]
    if not todo:
        return
    token = secrets.token_hex(8)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".tunewise-visible"
    marker.write_text(token + "\n")
    probe = f'test "$(cat {shlex.quote(str(marker))} 2>/dev/null)" = {token}'
    jobs = {
        n.node_id: _call(
            "POST", "/api/jobs/", {"entrypoint": probe, "entrypoint_label_selector": {"ray.io/node-id": n.node_id}}
        )["submission_id"]
        for n in todo
    }
    deadline = time.time() + 60
    ended = {}
    while len(ended) < len(jobs) and time.time() < deadline:
        for node_id, sid in jobs.items():
            if node_id not in ended and (job := _call("GET", f"/api/jobs/{sid}"))["status"] in TERMINAL:
                ended[node_id] = job["status"]
        time.sleep(0.3)
    blind = [n.label for n in todo if ended.get(n.node_id) != "SUCCEEDED"]
    if blind:
        raise RunError(
            f"The folder {folder} of the run directories is not visible from node(s) {', '.join(blind)} of the Ray "
            "cluster. Put TUNEWISE_HOME (or the output directory) on storage every node mounts at the "
            "same path (NFS, for instance), or remove that node from the cluster."
        )
    seen[root] = sorted(set(seen.get(root, [])) | {n.node_id for n in todo})
    set_setting("ray_storage", seen)


def entrypoint(run) -> str:
    """The shell command of the job: the app's own command, from the repo, logged into the run directory."""
    from engine.runs.local import train_command

    cmd = " ".join(shlex.quote(c) for c in train_command(run))
    log = shlex.quote(str(Path(run["run_dir"]) / "train.log"))
    return f"cd {shlex.quote(str(paths.REPO))} && exec {cmd} >> {log} 2>&1"


def job_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) and k != "TUNEWISE_CLUSTER"}
    return env | {
        "TUNEWISE_HOME": str(paths.home()),
        "TUNEWISE_CACHE": str(paths.cache()),
        "TUNEWISE_LOG_REDIRECTED": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S),
    }


def execute(db, run) -> None:
    """In the run's supervisor, once the queue gave it slots: check, submit the job, watch it to its end."""
    import yaml

    from engine.spec import RunSpec

    while True:
        try:
            check(RunSpec.from_dict(yaml.safe_load(run["config"]) or {}), Path(run["run_dir"]).parent)
            has_gpus = any(n.gpus for n in nodes())
            break
        except Unreachable:
            time.sleep(5 * POLL_S)  # the slots are ours meanwhile; the run starts when the cluster answers
        except RunError as e:
            return record_end(db, run["id"], None, how=str(e))
    sid = f"tunewise-run{run['id']}-{int(time.time())}"
    db.execute("UPDATE runs SET job_id=?, node=NULL WHERE id=?", (sid, run["id"]))  # before: a stop finds it
    (Path(run["run_dir"]) / "command.txt").write_text(entrypoint(run) + "\n")
    resources = (
        {"entrypoint_num_gpus": run["slots_needed"], "entrypoint_num_cpus": cpus_per_run()}
        if has_gpus
        else {"entrypoint_num_cpus": cpus_per_run()}
    )
    try:
        _call(
            "POST",
            "/api/jobs/",
            {
                "entrypoint": entrypoint(run),
                "submission_id": sid,
                "runtime_env": {"env_vars": job_env()},
                **resources,
                "metadata": {"tunewise_run": str(run["id"]), "owner": run["owner"]},
            },
        )
    except RunError as e:
        return record_end(db, run["id"], None, how=f"The Ray cluster did not take the job: {e}")
    watch(db, db.execute("SELECT * FROM runs WHERE id=?", (run["id"],)).fetchone())


def watch(db, run) -> None:
    """Follow the run's job until it ends (also after an app restart); enforce the instructor's time limit."""
    from engine.runs.local import time_limit_reason

    sid, limit_s = run["job_id"], run["time_limit_s"]
    while True:
        try:
            job = _call("GET", f"/api/jobs/{sid}")
        except Unreachable:
            time.sleep(5 * POLL_S)  # mid-run: the job goes on without us; the pages say why nothing updates
            continue
        except KeyError:
            return record_end(
                db, run["id"], None, how=f"The Ray cluster no longer knows job {sid} (was its head restarted?)."
            )
        if job.get("driver_node_id") and not run["node"]:
            db.execute("UPDATE runs SET node=? WHERE id=?", (_node_label(job["driver_node_id"]), run["id"]))
            run = db.execute("SELECT * FROM runs WHERE id=?", (run["id"],)).fetchone()
        if job["status"] in TERMINAL:
            return settle_job(db, run, job)
        if limit_s and time.time() - (run["started_at"] or time.time()) > limit_s:
            _stop_job(sid)
            return record_end(db, run["id"], None, reason=time_limit_reason(limit_s))
        time.sleep(POLL_S)


def _node_label(node_id: str) -> str:
    try:
        return next((n.label for n in nodes(fresh=True) if n.node_id == node_id), node_id[:8])
    except Unreachable:
        return node_id[:8]


def settle_job(db, run, job: dict) -> None:
    status, code = job["status"], job.get("driver_exit_code")
    if status == "SUCCEEDED":
        record_end(db, run["id"], 0)
    elif status == "STOPPED":
        record_end(
            db,
            run["id"],
            None,
            reason="Stopped on the Ray cluster (`ray job stop`). Its last checkpoint is kept: resume it to continue.",
        )
    elif code is not None:
        record_end(db, run["id"], code)  # the trainer's own sentence is in status.json
    else:  # the node died, or the job never started
        keep = " Its last checkpoint is kept: resume it to continue." if rundir.last_checkpoint(run["run_dir"]) else ""
        said = (job.get("message") or "no reason given").splitlines()[0].rstrip(".")
        lost = (
            " (its node stopped answering: the machine went down, or Ray's processes there were killed)"
            if ("actor died" in said)
            else ""
        )
        record_end(
            db,
            run["id"],
            None,
            how=f"The Ray job {run['job_id']} on node {run['node'] or '?'} failed: {said}{lost}.{keep}",
        )


def settle(db, run) -> None:
    """reconcile(), for a Ray run whose supervisor is gone (the app or its machine restarted)."""
    from engine.runs.local import start_supervisor

    if run["state"] == "queued" or (run["state"] == "running" and not run["job_id"]):
        if run["state"] == "running":  # had its slots but had not submitted: back in line
            db.execute("UPDATE runs SET state='queued', slots=NULL WHERE id=?", (run["id"],))
        return start_supervisor(run["id"])
    try:
        job = _call("GET", f"/api/jobs/{run['job_id']}")
    except Unreachable:
        return  # asked again at the next reconcile
    except KeyError:
        return record_end(db, run["id"], None, how=f"The Ray cluster no longer knows job {run['job_id']}.")
    if job["status"] in TERMINAL:
        settle_job(db, run, job)
    else:
        start_supervisor(run["id"])  # a new supervisor watches the running job


def stop(run) -> None:
    """Ray's stop: SIGTERM to the trainer (it checkpoints and exits), SIGKILL after STOP_GRACE_S; returns once the
    job has ended. The supervisor, only a watcher here, is ended first so it records nothing."""
    from engine.runs.local import end_tree

    if run["job_id"] and run["state"] == "running":
        _call("GET", "/api/version")  # unreachable: a sentence, and the run is left as it is
    end_tree(None, [run["supervisor_pid"]] if run["supervisor_pid"] else [], graceful=False)
    if run["job_id"]:
        _stop_job(run["job_id"])
        _wait_gone_here(run)


def _wait_gone_here(run) -> None:
    """Ray marks a job STOPPED as soon as it has sent SIGKILL; a killed trainer of a few GB takes a moment more to
    vanish. Where it ran on this machine (a node of the app's own), wait for it, local.KILL_WAIT_S at most."""
    import psutil  # accelerate's dependency

    from engine.runs.local import KILL_WAIT_S

    here = {a.address for addresses in psutil.net_if_addrs().values() for a in addresses}
    pid = rundir.read_status(run["run_dir"]).get("pid")
    deadline = time.time() + KILL_WAIT_S
    while pid and (run["node"] or "").split(" ")[0] in here and alive(pid) and time.time() < deadline:
        time.sleep(0.05)


def _stop_job(sid: str) -> None:
    try:
        _call("POST", f"/api/jobs/{sid}/stop")
        deadline = time.time() + STOP_GRACE_S + 10
        while _call("GET", f"/api/jobs/{sid}")["status"] not in TERMINAL and time.time() < deadline:
            time.sleep(0.2)
    except KeyError:
        pass  # never submitted, or already forgotten


def where(run) -> str:
    if run["state"] == "queued" or not run["job_id"]:
        return "Ray cluster"
    return f"Ray · {run['node']}" if run["node"] else "Ray · starting"
