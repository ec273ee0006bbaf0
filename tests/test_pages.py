"""The frame and the Train / Runs pages in AppTest: every page renders, bad input gets a sentence, a growing run
directory shows up live."""

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import rundir, runs
from engine.spec import RunSpec
from engine.users import OWNER

REPO = Path(__file__).resolve().parent.parent
PAGES = ["goal", "hardware", "estimate", "data", "train", "runs", "try_export"]
TITLES = ["1 · Goal", "2 · Hardware", "3 · Estimate", "4 · Data", "5 · Train", "6 · Runs", "7 · Try & Export"]


def app() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(page):
    at = app()
    at.switch_page(f"app_pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == TITLES[PAGES.index(page)], "titled as the sidebar names it"


def test_the_app_opens_on_the_goal_page_with_the_plan_in_the_sidebar():
    at = app()
    assert not at.exception
    assert at.title[0].value == "1 · Goal" and "**What should the model learn?**" in at.markdown[0].value
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "SmolLM2-135M-Instruct (bundled with the app)" in sidebar and "supervised fine-tuning" in sidebar


def submit_train_form(at, **fields):
    for label, value in fields.items():
        widget = next(w for w in at.text_input if w.label.startswith(label))
        widget.input(value)
    at.button[0].click()  # the form's "Start training"
    at.run()


def test_train_page_refuses_a_missing_model_with_a_sentence_and_keeps_the_plan():
    at = app()
    at.switch_page("app_pages/train.py")
    at.run()
    assert not any(w.label.startswith("Another model") for w in at.text_input), "no box until it is chosen"
    assert any(i.value.endswith("Earlier runs are on the Runs page.") for i in at.info), "no other people here"
    next(w for w in at.selectbox if w.label == "Model").set_value("other").run()
    submit_train_form(at, **{"Another model": "/no/such/model"})
    assert not at.exception
    assert any("Model directory /no/such/model does not exist" in e.value for e in at.error)
    assert at.session_state.spec.model_name_or_path == "embedded", "the plan is unchanged"
    assert runs.list_runs(OWNER) == [], "nothing was launched"


def test_train_page_offers_the_class_s_shared_models_and_asks_for_a_name_under_another_model():
    from engine import paths

    shared = paths.shared_dir() / "models" / "tiny-llama"
    shared.mkdir(parents=True)
    (shared / "config.json").write_text("{}")
    at = app()
    at.switch_page("app_pages/train.py")
    at.run()
    picker = next(w for w in at.selectbox if w.label == "Model")
    assert "tiny-llama (shared with the class)" in picker.options
    assert picker.value == "", "the bundled model stays the default"
    picker.set_value("other").run()
    submit_train_form(at)
    assert any("You chose 'Another model' but typed no name" in e.value for e in at.error)
    assert runs.list_runs(OWNER) == [], "nothing was launched"


def fake_run(tmp_path, steps) -> int:
    """A registry entry whose run directory a test grows by hand, as a trainer would."""
    run_dir = tmp_path / "fake-run"
    run_dir.mkdir()
    db = runs.connect()
    run_id = db.execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, started_at, pid, "
        "supervisor_pid) VALUES ('me', ?, 'sft', 'lora', 'running', ?, ?, ?, ?)",
        (str(run_dir), time.time(), time.time(), 0, 0),
    ).lastrowid
    rundir.write_status(run_dir, "running", step=0, max_steps=steps, started_at=time.time() - 10)
    return run_id, run_dir


def grow(run_dir, upto):
    for step in range(1, upto + 1):
        rundir.append_metrics(
            run_dir,
            {
                "step": step,
                "loss": 2.0 / step,
                "learning_rate": 1e-4,
                "epoch": 0.1,
                "time": time.time() - 10 + step,
                "tokens_per_second": 5000.0,
                "mfu_percent": 41.0,
            },
        )
    rundir.write_status(run_dir, "running", step=upto)


def test_runs_page_follows_a_growing_run_directory(tmp_path, monkeypatch):
    import ui.monitor

    monkeypatch.setattr(runs, "reconcile", lambda db: None)  # the fake run has no process to check
    monkeypatch.setattr(ui.monitor, "CHART_EVERY_S", 0.0)  # redraw on every new line (8 s while training)
    run_id, run_dir = fake_run(tmp_path, steps=10)
    grow(run_dir, 3)
    at = app()
    at.switch_page("app_pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1, "the loss chart; the others on request (no comparison of one run)"
    at.toggle(key=f"more-{run_id}").set_value(True).run()
    assert any(f"Run {run_id}: running" in m.value for m in at.markdown)
    bar = at.get("progress")[0]
    assert "step 3 / 10" in bar.proto.text
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["x"] == [1, 2, 3]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")[1:]]
    assert "Speed" in titles and any(t.startswith("Model FLOP utilisation") for t in titles)
    lr = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Learning rate" in c.proto.spec)
    assert lr["layout"]["yaxis"]["range"] == [0, 2e-4], "a constant rate is drawn at its value, not as 0"

    (run_dir / "metrics.jsonl").unlink()
    grow(run_dir, 7)
    at.run()
    bar = at.get("progress")[0]
    assert "step 7 / 10" in bar.proto.text
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["data"][0]["x"][-1] == 7


def test_train_page_picks_data_and_rewards_and_checks_the_data_at_start():
    from engine import data

    at = app()
    at.session_state.spec = RunSpec(dataset_name=str(data.bundled("dpo")))  # chosen on the Data page for DPO
    at.switch_page("app_pages/train.py")
    at.run()
    labels = {w.label for w in at.text_input}
    assert "Dataset file" not in labels and "Data" in {w.label for w in at.selectbox}, "data is picked, not typed"
    reward = next(w for w in at.selectbox if w.label == "Reward (RL only)")
    assert any(o.startswith("Checks: Task API") for o in reward.options)
    method = next(w for w in at.selectbox if w.label == "Method")
    assert "LoRA" in method.options and "lora" not in method.options, "names as people say them"
    assert "QLoRA" not in method.options, "no NVIDIA GPU here: the Hardware page said QLoRA is not offered"
    at.button[0].click()
    at.run()
    assert any("train.jsonl cannot be used for supervised fine-tuning" in e.value for e in at.error)
    assert runs.list_runs(OWNER) == [], "nothing was launched"


def test_a_stopped_run_without_a_checkpoint_offers_to_start_again_not_to_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "reconcile", lambda db: None)
    run_id, run_dir = fake_run(tmp_path, steps=10)
    runs.connect().execute("UPDATE runs SET state='stopped', config='stage: sft' WHERE id=?", (run_id,))
    at = app()
    at.switch_page("app_pages/runs.py")
    at.run()
    labels = [b.label for b in at.button]
    assert "Start again with the same settings" in labels and "Resume from the last checkpoint" not in labels
    assert any("No checkpoint yet" in c.value for c in at.caption)


def test_a_queued_run_says_it_waits_and_the_page_watches_the_one_training(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "reconcile", lambda db: None)
    monkeypatch.setattr(runs, "gpu_count", lambda: 0)  # the processor is the one slot
    running_id, run_dir = fake_run(tmp_path, steps=10)
    grow(run_dir, 2)
    (tmp_path / "queued").mkdir()
    queued_id = (
        runs.connect()
        .execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at) "
            "VALUES ('me', ?, 'sft', 'lora', 'queued', ?)",
            (str(tmp_path / "queued"), time.time()),
        )
        .lastrowid
    )
    at = app()
    at.session_state.current_run = queued_id  # started from the Train tab, behind the one training
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception, at.exception
    watch = next(s for s in at.selectbox if s.label == "Watch run")
    assert watch.value == running_id, "the run training, not the one waiting behind it"
    assert "time left known after 2 more logged steps" in at.get("progress")[0].proto.text, "why no ETA yet"
    watch.set_value(queued_id).run()
    assert at.get("progress")[0].proto.text == "not started: waiting in the queue"
    info = " ".join(i.value for i in at.info)
    assert "Queued: it starts by itself when the processor is free" in info and "number 1 in line" in info
    assert "loading the model" not in info


def test_compare_runs_before_any_logged_step_says_so_instead_of_drawing_empty_axes(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "reconcile", lambda db: None)
    monkeypatch.setattr(runs, "gpu_count", lambda: 0)
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        runs.connect().execute(
            "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at) "
            "VALUES ('me', ?, 'sft', 'lora', 'queued', ?)",
            (str(tmp_path / name), time.time()),
        )
    at = app()
    at.switch_page("app_pages/runs.py").run()
    assert not at.exception, at.exception
    assert len(next(m for m in at.multiselect if m.label == "Runs to overlay").value) == 2
    assert not at.get("plotly_chart"), "no axes from -1 to 6"
    assert any("None of these runs has logged a training step yet" in c.value for c in at.caption)
