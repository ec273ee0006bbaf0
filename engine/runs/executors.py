"""Executors: where a run trains once our queue has admitted it. The queue (engine/runs/queue.py) stays ours
whatever the executor: registry, fair-share order, quotas, slots. Each run has a supervisor process on the app's
machine that waits for its turn (local.supervise) and then hands the run to its executor, recorded per run in the
registry (`executor`, plus the cluster's `job_id` and `node`).

An executor is a module with these functions (plain functions, no base class; local.py and ray.py):

    check(spec, run_dir)    at submit: refuse with a RunError sentence what it cannot run (too many GPUs, a run
                            directory its machines cannot see)
    slot_count()            the queue's slots: GPUs (or CPU slots) it offers; 0 while it cannot be reached
    execute(db, run)        in the supervisor, with the slots claimed: start `python -m engine.train --config
                            RUN/config.yaml`, wait, registry.record_end (local.execute also takes the slots)
    stop(run)               graceful first (SIGTERM: the trainer checkpoints), forced after the grace; returns
                            when the run's processes are gone
    settle(db, run)         reconcile() after a restart, for a run whose supervisor is gone: record how it ended,
                            or start a supervisor again (to wait in line, or to watch a running job: ray.watch)
    where(run)              a few words for the Runs page: "this machine", "Ray · 10.0.0.7 (1a2b3c4d)"

A Slurm executor fits the same slots (engine/runs/slurm.py, TUNEWISE_SLURM=partition): check = `sinfo` for the
partition's largest node (GPUs) and a marker read through `srun -w NODE`; slot_count = the partition's GPUs (or a
configured share: the cluster has its own users); execute = `sbatch --parsable --gres=gpu:N --signal=TERM@60
--wrap "cd REPO && exec PYTHON -m engine.train --config ..."` into job_id, then poll `sacct -j ID -o
State,ExitCode,NodeList`; stop = `scancel --signal=TERM --full ID`, `scancel ID` after the grace; settle =
sacct's state; where = the NodeList. It is not built.
"""

from engine.runs import local, queue, ray

LOCAL, RAY = "local", "ray"


def current() -> str:
    """The executor new runs go to: a Ray cluster when TUNEWISE_CLUSTER names one, else this machine."""
    return RAY if ray.address() else LOCAL


def of(run_or_name):
    """The executor module of a run (a registry row or dict) or of a name; runs made before executors: local."""
    name = run_or_name if isinstance(run_or_name, str) or run_or_name is None else run_or_name["executor"]
    return ray if name == RAY else local


def note() -> str | None:
    """A sentence for the pages when the configured cluster cannot take runs now (None: all is well)."""
    return ray.problem() if current() == RAY else None


def describe() -> dict:
    """The executor and, for a cluster, its nodes: `python -m engine.runs cluster --json`, the Hardware page."""
    if current() == RAY:
        return {"executor": RAY, **ray.describe()}
    return {"executor": LOCAL, "address": None, "problem": None, "slots": queue.slot_count(), "nodes": []}
