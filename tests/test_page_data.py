"""The Data page (AppTest): the bundled set is checked and shown, a broken path gets its message with the line,
the plan survives it, and a good file can be put into the plan."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from engine.paths import REPO


@pytest.fixture
def page(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/data.py")
    at.run()
    assert not at.exception
    return at


def type_path(at, path):
    at.radio(key="data_source").set_value("A file on this machine").run()
    at.text_input(key="data_path").set_value(str(path)).run()
    assert not at.exception


def test_bundled_set_is_checked_and_tokenized(page):
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Usable rows"] == "2,400" and metrics["Layout"] == "input → output"
    assert "Cut off at the maximum length" in metrics
    assert any("within the lesson's guidance" in s.value for s in page.success)
    assert any("<span" in m.value for m in page.markdown)  # the loss-mask view


def test_broken_path_shows_the_line_and_keeps_the_plan(page, tmp_path):
    from dataclasses import replace

    page.session_state.spec = replace(page.session_state.spec, method="full", max_steps=7)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "a", "output": "b"}) + "\n" + '{"input": "c", "output": ' + "\n")
    type_path(page, bad)
    assert "cannot be used for supervised fine-tuning yet" in page.error[0].value  # as people say it, not "sft"
    table = page.table[0].value
    assert list(table["line"]) == ["2"] and "not valid JSON" in table["error"].iloc[0]
    assert any("Your plan is unchanged" in i.value for i in page.info)
    spec = page.session_state.spec
    assert (spec.method, spec.max_steps, spec.dataset_name) == ("full", 7, "")


def test_missing_path_is_a_sentence_not_a_traceback(page, tmp_path):
    type_path(page, tmp_path / "nope.jsonl")
    assert "does not exist" in page.table[0].value["error"].iloc[0]


def test_good_file_goes_into_the_plan(page, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(20)))
    type_path(page, good)
    assert any("Only 20 rows" in w.value for w in page.warning)
    page.button[0].click().run()
    assert page.session_state.spec.dataset_name == str(good)
    assert any("Your plan uses this data" in s.value for s in page.success)


from test_data import BROKEN, write  # noqa: E402  (the same broken files the CLI tests use)


@pytest.mark.parametrize("name,stage,file,content,words,line", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_broken_file_gets_its_sentence_on_the_page(page, tmp_path, name, stage, file, content, words, line):
    from dataclasses import replace

    page.session_state.spec = replace(page.session_state.spec, stage=stage, max_steps=9)
    page.run()
    type_path(page, write(tmp_path, file, content))
    table = page.table[0].value
    assert words in table["error"].iloc[0]
    if line is not None:
        assert table["line"].iloc[0] == str(line)
    assert page.session_state.spec.max_steps == 9 and page.session_state.spec.dataset_name == ""
