"""Experiment tracking: the run's metrics also go to TensorBoard, MLflow or Weights & Biases, through transformers'
own integrations (TrainingArguments.report_to, TRL's names). Off by default.

    python -m engine.train --max-steps 20 --report-to tensorboard   # RUN/tensorboard/, `tensorboard --logdir RUN`
    python -m engine.train --max-steps 20 --report-to mlflow        # MLFLOW_TRACKING_URI, else RUN/../mlruns
    python -m engine.train --max-steps 20 --report-to wandb         # offline, RUN/wandb/; `wandb sync` uploads it

Where each one writes, decided here so the Runs page can say where to look:
- tensorboard: event files in RUN/tensorboard (TENSORBOARD_LOGGING_DIR).
- mlflow: MLFLOW_TRACKING_URI when set (a server, sqlite:///..., file:...); otherwise a file store beside the runs,
  RUN/../mlruns, so every run of a person lands in one store and can be compared (MLflow 3 keeps its file store in
  maintenance mode and wants MLFLOW_ALLOW_FILE_STORE=true, which is set for it). Experiment "tunewise", MLflow run
  name = the run directory's name.
- wandb: always offline (WANDB_MODE=offline, files in RUN/wandb): no account, no network during training.
A tracker that cannot work (package missing, an http(s) tracking URI that does not answer) never stops training:
the run trains on with tracking off, and status.json's `tracking` and train.log say why.
"""

import importlib.util
import os
import urllib.error
import urllib.request
from pathlib import Path

from engine import rundir

NAMES = {"none": "Off", "tensorboard": "TensorBoard", "mlflow": "MLflow", "wandb": "Weights & Biases (offline)"}
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
REACH_TIMEOUT_S = 3  # a tracking server on the network answers in well under a second; a dead one costs this once
EXPERIMENT = "tunewise"


def mlflow_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir).resolve().parent / "mlruns").as_uri()


def _unreachable(uri: str) -> str | None:
    """Why an http(s) tracking server cannot be used, or None when it answers (any HTTP status means it is up)."""
    try:
        urllib.request.urlopen(uri, timeout=REACH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:
        return f"the MLflow server at {uri} does not answer ({getattr(e, 'reason', e)})"
    return None


def problem(report_to: str, run_dir: Path) -> str | None:
    """Why tracking to `report_to` cannot work for this run, or None."""
    if report_to == "none":
        return None
    if importlib.util.find_spec(PACKAGES[report_to]) is None:
        return f"the {PACKAGES[report_to]} package is not installed (pip install {PACKAGES[report_to]})"
    if report_to == "mlflow" and mlflow_uri(run_dir).startswith(("http://", "https://")):
        return _unreachable(mlflow_uri(run_dir))
    return None


def setup(report_to: str, run_dir: Path, main_process: bool = True) -> str:
    """Point the chosen tracker at its place (environment variables its transformers callback reads) and return
    the report_to value for TrainingArguments: the tracker, or "none" with the reason in status.json/train.log."""
    run_dir = Path(run_dir)
    why = problem(report_to, run_dir)
    if why:
        line = f"tracking is off for this run: {why}; training goes on without it."
        if main_process:
            print(line, flush=True)
            rundir.write_status(run_dir, rundir.read_status(run_dir).get("state", "running"), tracking=line)
        return "none"
    if report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    elif report_to == "mlflow":
        uri = mlflow_uri(run_dir)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        if uri.startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    elif report_to == "wandb":
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_DIR"] = str(run_dir)
        os.environ.setdefault("WANDB_PROJECT", EXPERIMENT)
    if main_process and report_to != "none":
        where = {
            "tensorboard": run_dir / "tensorboard",
            "mlflow": os.environ.get("MLFLOW_TRACKING_URI"),
            "wandb": run_dir / "wandb",
        }[report_to]
        rundir.write_status(
            run_dir, rundir.read_status(run_dir).get("state", "running"), tracking=f"{NAMES[report_to]}: {where}"
        )
    return report_to
