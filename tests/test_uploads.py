"""Uploads are kept per person and bounded for workshop students (TUNEWISE_UPLOADS_MB): a file past the bound is
refused with what to do, the Data page lists a person's uploads and removes one, and an upload a waiting or
training run will read cannot be removed (engine/data.py)."""

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from engine import data, paths, runs
from engine.paths import REPO

ROW = json.dumps({"prompt": "Create a task", "completion": '{"title": "x"}'}) + "\n"


def upload_of(kib: int, salt: str) -> bytes:
    return (f'{{"salt": "{salt}"}}\n' + ROW * (kib * 1024 // len(ROW))).encode()


def test_a_student_keeps_at_most_their_share_and_frees_it_by_removing(tunewise_home, monkeypatch):
    monkeypatch.setenv("TUNEWISE_UPLOADS_MB", "1")
    first = data.save_upload("a.jsonl", upload_of(600, "a"), "ana")
    assert data.save_upload("a.jsonl", upload_of(600, "a"), "ana") == first  # the same file again takes nothing
    with pytest.raises(data.DataError, match="Your uploads already take 0.6 MB of the 1 MB") as refused:
        data.save_upload("b.jsonl", upload_of(600, "b"), "ana")
    assert "Remove files you no longer need" in str(refused.value)
    assert data.save_upload("c.jsonl", upload_of(600, "c"), "ben").is_file()  # another student's share is theirs
    data.remove_upload(first.name, "ana")
    assert not first.exists() and data.save_upload("b.jsonl", upload_of(600, "b"), "ana").is_file()
    assert data.save_upload("big.jsonl", upload_of(2000, "d"), "").is_file()  # personal mode: no bound


def test_an_upload_a_run_will_read_or_another_persons_cannot_be_removed(tunewise_home):
    mine = data.save_upload("a.jsonl", upload_of(4, "a"), "ana")
    theirs = data.save_upload("b.jsonl", upload_of(4, "b"), "ben")
    for name in (theirs.name, f"../../ben/uploads/{theirs.name}", "missing.jsonl"):
        with pytest.raises(data.DataError, match="There is no upload"):
            data.remove_upload(name, "ana")
    runs.connect().execute(
        "INSERT INTO runs (owner, run_dir, state, config, submitted_at) VALUES ('ana', '', 'queued', ?, ?)",
        (f"dataset_name: {mine}\n", time.time()),
    )
    with pytest.raises(data.DataError, match="will train on"):
        data.remove_upload(mine.name, "ana")
    assert mine.is_file() and theirs.is_file()


def test_the_data_page_lists_your_uploads_and_removes_one(tunewise_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kept = data.save_upload("tasks.jsonl", upload_of(4, "a"), "")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/data.py").run()
    at.radio(key="data_source").set_value("Upload a file").run()
    assert not at.exception
    assert any(e.label.startswith("Your uploads (1 file,") for e in at.expander)
    at.button(key=f"remove_upload_{kept.name}").click().run()
    assert not at.exception and not kept.exists() and not list(paths.home().glob("uploads/*"))


def test_uploads_from_several_tabs_at_once_are_counted_one_by_one(tunewise_home, monkeypatch):
    """Eight 300 KB uploads at once against a 1 MB share: three fit, the others are refused (the review saw eight
    30 MB uploads at once leave 210 MB against 50)."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("TUNEWISE_UPLOADS_MB", "1")

    def upload(i):
        try:
            return data.save_upload(f"t{i}.jsonl", upload_of(300, f"t{i}"), "ana")
        except data.DataError:
            return None

    with ThreadPoolExecutor(8) as pool:
        kept = [p for p in pool.map(upload, range(8)) if p]
    assert len(kept) == 3 and sum(u["bytes"] for u in data.uploads("ana")) <= 2**20
