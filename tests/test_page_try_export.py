"""The Try & Export page in AppTest, on a hand-built finished run (registry entry + run directory): the engine's
subprocesses are replaced by fakes that answer as the CLIs do, so the page's own behaviour is what is tested."""

import json
import time
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

import ui.try_export
from engine import rundir, runs

REPO = Path(__file__).resolve().parent.parent
EVAL = {
    "run": "0001-sft-lora",
    "stage": "sft",
    "method": "lora",
    "held_out": "bundled task_api test split, 60 rows",
    "rows": 60,
    "seconds": 42.0,
    "not_measured": [],
    "metrics": [
        {"metric": "held-out loss", "base": 1.82, "fine_tuned": 0.05, "kind": "loss"},
        {"metric": "valid JSON", "base": 0.0, "fine_tuned": 1.0, "kind": "share"},
        {"metric": "priority right", "base": 0.0, "fine_tuned": 0.967, "kind": "share"},
    ],
    "examples": [{"prompt": "Create a task: X", "expected": "{}", "base": "Sure!", "fine_tuned": "{}"}],
}


def finished_run(tmp_path, state="completed", with_eval=True) -> Path:
    run_dir = tmp_path / "0001-sft-lora"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"stage": "sft", "method": "lora"}))
    rundir.write_status(run_dir, state, error="Out of GPU memory" if state == "failed" else None)
    if with_eval:
        (run_dir / "eval.json").write_text(json.dumps(EVAL))
    runs.connect().execute(
        "INSERT INTO runs (owner, run_dir, stage, method, state, submitted_at, finished_at) "
        "VALUES ('me', ?, 'sft', 'lora', ?, ?, ?)",
        (str(run_dir), state, time.time(), time.time()),
    )
    return run_dir


def page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/try_export.py")
    at.run()
    assert not at.exception, at.exception
    return at


def button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


@pytest.fixture
def fake_engine(monkeypatch):
    calls = []

    def call(module, *args, user=None):
        calls.append((module, [str(a) for a in args]))
        if module == "engine.generate":
            return {
                "answers": {"base": "A task is a thing to do.", "tuned": '{"title": "Review Q4 budget"}'},
                "sample": "--sample" in args,
                "temperature": 0.7,
                "seconds": 3.1,
            }, ""
        if module == "engine.export":
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True)
            out.with_name(out.name + ".zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
            return {"out": str(out)}, ""
        return None, "Run 0001-sft-lora is still running (step 3 of 40), so there is no result to evaluate yet."

    monkeypatch.setattr(ui.try_export, "call", call)
    monkeypatch.setattr(runs, "reconcile", lambda db: None)
    return calls


def test_without_a_finished_run_the_page_says_where_to_get_one(fake_engine):
    at = page()
    assert any("No finished run yet" in i.value for i in at.info)
    assert not fake_engine


def test_a_finished_run_shows_its_evaluation_as_table_and_chart(tmp_path, fake_engine):
    finished_run(tmp_path)
    at = page()
    assert "0001-sft-lora" in at.selectbox[0].value
    table = at.dataframe[0].value
    assert list(table["metric"]) == ["held-out loss", "valid JSON", "priority right"]
    assert list(table["fine-tuned"]) == ["0.050", "100.0%", "96.7%"] and table["base model"][1] == "0.0%"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [bar["name"] for bar in chart["data"]] == ["base model", "fine-tuned"]
    assert chart["data"][1]["y"] == [100.0, pytest.approx(96.7)]


def test_the_playground_shows_both_answers_side_by_side(tmp_path, fake_engine):
    run_dir = finished_run(tmp_path)
    at = page()
    at.radio[0].set_value("sampled")
    at.run()
    button(at, "Answer with both models").click()
    at.run()
    assert not at.exception, at.exception
    module, args = fake_engine[-1]
    assert module == "engine.generate" and args[:2] == ["--run", str(run_dir)] and "--both" in args
    assert "--sample" in args and "--temperature" in args
    shown = [c.value for c in at.code]
    assert "A task is a thing to do." in shown and '{"title": "Review Q4 budget"}' in shown


def test_a_failed_evaluation_gets_its_sentence_and_export_offers_a_download(tmp_path, fake_engine):
    run_dir = finished_run(tmp_path, with_eval=False)
    at = page()
    button(at, "Evaluate").click()
    at.run()
    assert any("still running (step 3 of 40)" in e.value for e in at.error)
    at.radio[1].set_value("merged")
    at.run()
    button(at, "Export").click()
    at.run()
    assert not at.exception, at.exception
    module, args = fake_engine[-1]
    assert module == "engine.export" and "--merge" in args and args[args.index("--out") + 1].endswith("merged")
    assert (run_dir / "exports" / "merged.zip").is_file()
    assert "Download merged.zip" in at.get("download_button")[0].proto.label


def test_a_typed_directory_of_a_failed_run_gets_a_sentence(tmp_path, fake_engine):
    run_dir = finished_run(tmp_path, state="failed")
    at = page()
    assert any("No finished run yet" in i.value for i in at.info), "a failed run is not offered"
    at.text_input[0].input(str(run_dir))
    at.run()
    assert any("failed (Out of GPU memory)" in e.value for e in at.error)
    assert not fake_engine
