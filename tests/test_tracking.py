"""Experiment tracking on real (tiny, 3-step) runs: TensorBoard's event files and a local MLflow store are read
back with their own readers and hold the same losses as metrics.jsonl; an MLflow server that does not answer and a
tracker that is not installed leave the run training, with the sentence on status.json and in train.log."""

import importlib.util

import pytest

from conftest import free_port, read_jsonl, run_cli
from engine import rundir
from engine.spec import RunSpec, SpecError
from ui.tracking import tracker_line


def train(tiny_model, run, *args, env=None):
    result = run_cli(
        "engine.train",
        "--model",
        str(tiny_model),
        "--max-steps",
        "3",
        "--batch",
        "2",
        "--eval-steps",
        "1000",
        "--save-steps",
        "1000",
        "--output-dir",
        str(run),
        *args,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert rundir.read_status(run)["state"] == "completed"
    return {r["step"]: r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r}, result.stdout


def test_tensorboard_events_hold_the_losses_of_metrics_jsonl(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb-run"
    losses, _ = train(tiny_model, run, "--report-to", "tensorboard")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(logged) == sorted(losses) == [1, 2, 3]
    assert logged == {step: pytest.approx(loss, rel=1e-6) for step, loss in losses.items()}
    assert f"tensorboard --logdir {run / 'tensorboard'}" in tracker_line(run)


def test_mlflow_local_store_holds_the_losses_of_metrics_jsonl(tiny_model, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "mlflow-run"
    losses, _ = train(tiny_model, run, "--report-to", "mlflow")
    store = (tmp_path / "runs" / "mlruns").as_uri()  # beside the runs: every run of a person in one store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(store)
    found = client.search_runs(
        [client.get_experiment_by_name("tunewise").experiment_id], filter_string="tags.mlflow.runName = 'mlflow-run'"
    )
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    history = {m.step: m.value for m in client.get_metric_history(found[0].info.run_id, "loss")}
    assert history == {step: pytest.approx(loss, rel=1e-6) for step, loss in losses.items()}
    assert f"mlflow ui --backend-store-uri {store}" in tracker_line(run)


def test_an_unreachable_tracker_turns_tracking_off_and_the_run_trains_on(tiny_model, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = tmp_path / "offline-run"
    losses, stdout = train(tiny_model, run, "--report-to", "mlflow", env={"MLFLOW_TRACKING_URI": uri})
    assert sorted(losses) == [1, 2, 3]
    said = rundir.read_status(run)["tracking"]
    assert said.startswith(f"tracking is off for this run: the MLflow server at {uri} does not answer")
    assert said in stdout, "the trainer's output (train.log when the app starts it) says it too"
    assert tracker_line(run).startswith("Tracking is off for this run")


def test_weights_and_biases_runs_offline_or_says_it_is_missing(tiny_model, tmp_path):
    run = tmp_path / "wandb-run"
    train(tiny_model, run, "--report-to", "wandb")
    said = rundir.read_status(run)["tracking"]
    if importlib.util.find_spec("wandb") is None:  # not in the test extras: the fallback is what can be checked
        assert said == (
            "tracking is off for this run: the wandb package is not installed (pip install wandb); "
            "training goes on without it."
        )
    else:
        assert said.startswith("Weights & Biases (offline)") and list((run / "wandb").glob("offline-run-*"))
        assert "wandb sync" in tracker_line(run)


def test_tracking_is_off_by_default_and_an_unknown_tracker_is_refused(tmp_path):
    assert RunSpec().report_to == "none"
    with pytest.raises(SpecError, match="Unknown experiment tracker 'comet'"):
        RunSpec(report_to="comet")
    result = run_cli("engine.train", "--report-to", "comet", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "invalid choice: 'comet'" in result.stderr
    run = tmp_path / "plain"
    run.mkdir()
    RunSpec(output_dir=str(run)).save(run / "config.yaml")
    assert tracker_line(run) is None
    assert "report_to: tensorboard" in RunSpec(report_to="tensorboard").to_yaml()
