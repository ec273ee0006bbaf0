"""Where a run's experiment tracker shows it: one markdown line for the Runs page. No torch, no streamlit: it reads
the run's config.yaml (report_to) and status.json (`tracking`, written by engine/tracking.py when training starts)."""

from pathlib import Path

from engine import rundir
from engine.spec import RunSpec, SpecError
from engine.tracking import EXPERIMENT, NAMES


def tracker_line(run_dir) -> str | None:
    """A markdown line saying how to open this run in its tracker, the sentence saying why tracking is off, or
    None when the run did not ask for a tracker."""
    run = Path(run_dir)
    try:
        report_to = RunSpec.load(run / "config.yaml").report_to
    except SpecError:
        return None
    if report_to == "none":
        return None
    recorded = rundir.read_status(run).get("tracking") or ""
    if recorded.startswith("tracking is off"):
        return recorded[0].upper() + recorded[1:]
    if report_to == "tensorboard":
        return (
            f"TensorBoard: `tensorboard --logdir {run / 'tensorboard'}`, then open http://localhost:6006 "
            "(pip install tensorboard)"
        )
    if report_to == "mlflow":
        uri = recorded.split(": ", 1)[1] if ": " in recorded else (run.resolve().parent / "mlruns").as_uri()
        if uri.startswith(("http://", "https://")):
            return f"MLflow: [{uri}]({uri}), experiment `{EXPERIMENT}`, run `{run.name}`"
        allow = "MLFLOW_ALLOW_FILE_STORE=true " if uri.startswith("file:") else ""
        return (
            f"MLflow: `{allow}mlflow ui --backend-store-uri {uri}`, then open http://localhost:5000 "
            f"(experiment `{EXPERIMENT}`, run `{run.name}`; pip install mlflow)"
        )
    return (
        f"{NAMES['wandb']}: the run is in `{run / 'wandb'}`; `wandb sync {run / 'wandb'}/offline-run-*` "
        "uploads it to your W&B account"
    )
