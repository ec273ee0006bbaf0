"""engine.data: broken files get a sentence with the right line, valid layouts are recognised and converted to
TRL's standard layouts, the bundled sets are usable, and the CLI keeps its exit-code promise."""

import json
import os
import subprocess
import sys

import pytest

from engine.data import DataError, bundled, check, load_for_stage, save_upload
from engine.paths import REPO

USER = {"role": "user", "content": "Add a task: Review Q4 budget"}
BOT = {"role": "assistant", "content": '{"title": "Review Q4 budget", "priority": "medium", "status": "pending"}'}
GOOD_IO = json.dumps({"input": "Create a task: A", "output": '{"title": "A"}'})


def jl(*rows):
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


# (name, stage, file name, content, expected words in the first error, expected line or None)
BROKEN = [
    ("invalid json line", "sft", "a.jsonl", jl(GOOD_IO, '{"input": "x", "output": "y"', GOOD_IO), "not valid JSON", 2),
    ("pretty-printed jsonl", "sft", "a.jsonl", '{\n "input": "x",\n "output": "y"\n}\n', "pretty-printed", 1),
    ("missing field", "sft", "a.jsonl", jl(GOOD_IO, {"input": "only a question"}), "missing field 'output'", 2),
    ("no layout at all", "sft", "a.jsonl", jl({"foo": 1, "bar": 2}), "no sft layout found", None),
    (
        "preference data for sft",
        "sft",
        "a.jsonl",
        jl({"prompt": "p", "chosen": "a", "rejected": "b"}),
        "stage dpo",
        None,
    ),
    ("empty string", "sft", "a.jsonl", jl(GOOD_IO, {"input": "x", "output": "  "}), "field 'output' is empty", 2),
    (
        "number instead of text",
        "sft",
        "a.jsonl",
        jl({"prompt": "x", "completion": 42}),
        "field 'completion' is a number (42)",
        1,
    ),
    ("null value", "sft", "a.jsonl", jl({"prompt": None, "completion": "y"}), "field 'prompt' is null", 1),
    ("row is a list", "sft", "a.jsonl", jl(GOOD_IO, [1, 2]), "found list", 2),
    ("rows are strings", "sft", "a.jsonl", jl('"a"', '"b"'), 'the rows are plain strings (the first: "a")', None),
    ("unknown role", "sft", "a.jsonl", jl({"messages": [{"role": "bot", "content": "hi"}]}), "role 'bot'", 1),
    ("chat ends with user", "sft", "a.jsonl", jl({"messages": [USER, BOT, USER]}), "ends with a 'user' turn", 1),
    (
        "turn without content",
        "sft",
        "a.jsonl",
        jl({"messages": [USER, {"role": "assistant"}]}),
        "turn 2 needs 'role' and 'content'",
        1,
    ),
    ("empty messages", "sft", "a.jsonl", jl({"messages": []}), "non-empty list of turns", 1),
    (
        "sharegpt unknown speaker",
        "sft",
        "a.jsonl",
        jl({"conversations": [{"from": "human", "value": "x"}, {"from": "robot", "value": "y"}]}),
        "role 'robot'",
        1,
    ),
    (
        "chosen equals rejected",
        "dpo",
        "a.jsonl",
        jl({"prompt": "p", "chosen": "same", "rejected": "same"}),
        "identical",
        1,
    ),
    (
        "rejected missing",
        "rm",
        "a.jsonl",
        jl({"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}),
        "missing field 'rejected'",
        2,
    ),
    ("prompt ends with assistant", "rl", "a.jsonl", jl({"prompt": [USER, BOT]}), "ends with an assistant turn", 1),
    (
        "chosen holds the prompt",
        "dpo",
        "a.jsonl",
        jl({"prompt": "p", "chosen": [USER, BOT], "rejected": "b"}),
        "only assistant turns",
        1,
    ),
    ("implicit prompt not shared", "dpo", "a.jsonl", jl({"chosen": [BOT], "rejected": [BOT]}), "must share", 1),
    ("pt without text", "pt", "a.jsonl", jl({"title": "x"}), "no pt layout found", None),
    (
        "not utf-8",
        "sft",
        "a.jsonl",
        GOOD_IO.encode() + b"\n" + '{"input": "caf\u00e9", "output": "x"}'.encode("latin-1"),
        "not UTF-8",
        2,
    ),
    ("utf-16", "sft", "a.jsonl", GOOD_IO.encode("utf-16"), "UTF-16", 1),
    ("empty file", "sft", "a.jsonl", "", "empty (0 bytes)", None),
    ("only whitespace", "sft", "a.jsonl", "\n \n", "only whitespace", 1),
    ("json object not list", "sft", "a.json", json.dumps({"input": "x", "output": "y"}), "single JSON object", 1),
    (
        "json list cut short",
        "sft",
        "a.json",
        '[\n {"input": "x", "output": "y"},\n {"input": "z", "output": "w"}\n',
        "not closed",
        None,
    ),
    (
        "json list bad element",
        "sft",
        "a.json",
        '[\n {"input": "x", "output": "y"},\n {"input": "z" "output": "w"}\n]',
        "not valid JSON",
        3,
    ),
    ("csv wrong columns", "sft", "a.csv", 'input,output\nhello,world\n"a, b",c,d\n', "has 3 values", 3),
    ("csv repeated header", "sft", "a.csv", "input,input\nhello,world\n", "repeated column names", 1),
    ("csv empty cell", "sft", "a.csv", "prompt,completion\nhello,world\nbye,\n", "field 'completion' is empty", 3),
    ("text file for sft", "sft", "a.txt", "Some raw text.\n\nMore text.\n", "only continued pretraining", None),
    ("unknown extension", "sft", "a.xlsx", "PK\x03\x04 binary", "unknown file type", None),
    ("broken parquet", "sft", "a.parquet", b"PAR1 this is not parquet", "not a readable Parquet", None),
]


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_a_file_of_plain_text_says_what_was_found_and_what_is_expected(tmp_path):
    report = check(write(tmp_path, "notes.jsonl", "hello world\nthis is not json\n"), "sft")
    first, *_, last = [e["message"] for e in report.errors]
    assert first.startswith("not valid JSON") and "rows are nothing" not in last
    assert last.startswith("no row of the file could be read, so it holds no examples. Expected: one JSON object")
    assert "prompt + completion, or" in last


@pytest.mark.parametrize("name,stage,file,content,words,line", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_file_gets_a_sentence_with_its_line(tmp_path, name, stage, file, content, words, line):
    report = check(write(tmp_path, file, content), stage)
    assert not report.ok
    first = report.errors[0]
    assert words in first["message"], first
    if line is not None:
        assert first["line"] == line, first
    with pytest.raises(DataError, match="cannot be used"):
        load_for_stage(tmp_path / file, stage)


def test_at_least_25_distinct_broken_files():
    assert len({b[0] for b in BROKEN}) >= 25


def test_file_over_the_upload_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_MAX_UPLOAD_MB", "0.001")  # 1 kB
    report = check(write(tmp_path, "big.jsonl", jl(*[GOOD_IO] * 100)), "sft")
    assert "larger than the 0 MB limit" in report.errors[0]["message"]
    assert "TUNEWISE_MAX_UPLOAD_MB" in report.errors[0]["message"]


def test_many_bad_rows_are_counted_not_listed(tmp_path):
    report = check(write(tmp_path, "a.jsonl", jl(GOOD_IO, *['{"input": "x"'] * 500)), "sft")
    assert report.error_count == 500 and len(report.errors) == 20
    assert report.errors[0]["line"] == 2 and report.rows == 1


def test_duplicates_are_a_warning_with_both_lines(tmp_path):
    report = check(write(tmp_path, "a.jsonl", jl(GOOD_IO, GOOD_IO)), "sft")
    assert report.ok
    assert any(w["line"] == 2 and "repeats line 1" in w["message"] for w in report.warnings)


VALID = [  # (stage, row or file content, layout name, first converted row)
    (
        "sft",
        {"input": "q", "output": "a"},
        "input → output",
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]},
    ),
    ("sft", {"prompt": "q", "completion": "a"}, "prompt/completion", None),
    ("sft", {"prompt": [USER], "completion": [BOT]}, "prompt/completion", {"prompt": [USER], "completion": [BOT]}),
    ("sft", {"messages": [USER, BOT]}, "messages (chat)", {"messages": [USER, BOT]}),
    (
        "sft",
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        "conversations (ShareGPT)",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ),
    (
        "sft",
        {"instruction": "Translate", "input": "hola", "output": "hello"},
        "instruction/input/output (Alpaca)",
        {
            "prompt": [{"role": "user", "content": "Translate\n\nhola"}],
            "completion": [{"role": "assistant", "content": "hello"}],
        },
    ),
    ("sft", {"instruction": "Say hi", "input": "", "output": "hi"}, "instruction/input/output (Alpaca)", None),
    ("sft", {"instruction": "q", "response": "a"}, "instruction/response", None),
    ("sft", {"question": "q", "answer": "a"}, "question/answer", None),
    (
        "dpo",
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        "prompt/chosen/rejected",
        {
            "prompt": [{"role": "user", "content": "p"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
        },
    ),
    (
        "rm",
        {"prompt": [USER], "chosen": [BOT], "rejected": [{"role": "assistant", "content": "nope"}]},
        "prompt/chosen/rejected",
        None,
    ),
    (
        "dpo",
        {"chosen": [USER, BOT], "rejected": [USER, {"role": "assistant", "content": "nope"}]},
        "chosen/rejected (implicit prompt)",
        {"prompt": [USER], "chosen": [BOT], "rejected": [{"role": "assistant", "content": "nope"}]},
    ),
    ("dpo", {"input": "p", "chosen": "good", "rejected": "bad"}, "input/chosen/rejected", None),
    ("rl", {"prompt": "p", "expected": "x"}, "prompt", {"expected": "x", "prompt": [{"role": "user", "content": "p"}]}),
    ("rl", {"prompt": [USER]}, "prompt", None),
    ("rl", {"question": "p"}, "question (prompt only)", None),
    ("pt", {"text": "Some words."}, "text", {"text": "Some words."}),
    ("pt", {"content": "Some words."}, "content (raw text)", None),
]


@pytest.mark.parametrize("stage,row,layout,converted", VALID, ids=[v[2] + "-" + v[0] for v in VALID])
def test_valid_layout_is_recognised_and_converted(tmp_path, stage, row, layout, converted):
    path = write(tmp_path, "ok.jsonl", jl(row))
    report = check(path, stage)
    assert report.ok, report.errors
    assert report.format == layout
    rows = load_for_stage(path, stage)
    if converted is not None:
        assert rows[0] == converted
    if layout not in ("prompt/completion", "prompt/chosen/rejected", "prompt", "text", "messages (chat)"):
        assert any("Converted" in w["message"] for w in report.warnings)


@pytest.mark.parametrize(
    "file,content,kind",
    [
        ("ok.json", '[\n  {"input": "q", "output": "a"},\n  {"input": "r", "output": "b"}\n]', "JSON"),
        ("ok.csv", 'input,output\nq,a\n"multi\nline",b\n', "CSV"),
        ("ok.csv", "input;output\nq;a\n", "CSV"),
        ("ok.data", jl({"input": "q", "output": "a"}), "JSONL"),
        ("lines.json", jl({"input": "q", "output": "a"}, {"input": "r", "output": "b"}), "JSONL"),
    ],
)
def test_file_formats(tmp_path, file, content, kind):
    report = check(write(tmp_path, file, content), "sft")
    assert report.ok and report.file_format == kind, report


def test_parquet_and_csv_chats(tmp_path):
    import pandas as pd

    pd.DataFrame([{"prompt": "p", "chosen": "good", "rejected": "bad"}]).to_parquet(tmp_path / "p.parquet")
    assert check(tmp_path / "p.parquet", "dpo").ok
    pd.DataFrame([{"messages": json.dumps([USER, BOT])}]).to_csv(tmp_path / "c.csv", index=False)
    assert load_for_stage(tmp_path / "c.csv", "sft")[0] == {"messages": [USER, BOT]}
    (tmp_path / "corpus.txt").write_text("First paragraph.\nStill first.\n\nSecond one.\n")
    assert [r["text"] for r in load_for_stage(tmp_path / "corpus.txt", "pt")] == [
        "First paragraph.\nStill first.",
        "Second one.",
    ]


@pytest.mark.parametrize("stage", ["pt", "sft", "dpo", "rm", "rl"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_bundled_sets_are_usable(stage, split):
    report = check(bundled(stage, split), stage)
    assert report.ok and report.error_count == 0, report.errors
    assert bundled(stage, split).stat().st_size < 1_000_000


def test_bundled_task_api_follows_the_seed():
    rows = [json.loads(line) for line in bundled("sft").read_text().splitlines()]
    test = [json.loads(line) for line in bundled("sft", "test").read_text().splitlines()]
    assert len(rows) >= 2000 and 200 <= len(test) <= 300
    answers = [json.loads(r["output"]) for r in rows]
    assert all(
        r["output"] == json.dumps(a) and list(a) == ["title", "priority", "status"] for r, a in zip(rows, answers)
    )
    assert {a["priority"] for a in answers} == {"high", "medium", "low"}
    assert {a["status"] for a in answers} == {"pending", "in_progress", "done"}
    titles = {a["title"] for a in answers}
    assert len(titles) == len(rows)
    assert not titles & {json.loads(r["output"])["title"] for r in test}
    assert len({r["input"] for r in rows}) == len(rows)


def test_save_upload_keeps_a_safe_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_HOME", str(tmp_path))
    path = save_upload("../../etc/my data.jsonl", b"x")
    assert path.parent == tmp_path / "uploads" and path.name.endswith("_my_data.jsonl")


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "engine.data", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=120,
    )


def test_cli_exit_codes_and_json(tmp_path):
    bad = write(tmp_path, "bad.jsonl", jl(GOOD_IO, '{"input": "x"', {"input": "y"}))
    done = run_cli("check", bad, "--stage", "sft", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["format"] == "input → output" and report["rows"] == 1
    assert [e["line"] for e in report["errors"]] == [2, 3]
    ok = run_cli("check", bundled("sft"), "--stage", "sft", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["rows"] >= 2000
    text = run_cli("check", bad, "--stage", "sft")
    assert "line 2: not valid JSON" in text.stdout
    assert run_cli("check", tmp_path / "missing.jsonl", "--stage", "sft").returncode == 2
    assert run_cli("check", bad, "--stage", "nope").returncode == 2
    big = run_cli("check", bad, "--stage", "sft", "--json", env={"TUNEWISE_MAX_UPLOAD_MB": "0.00001"})
    assert big.returncode == 1 and "larger than" in json.loads(big.stdout)["errors"][0]["message"]


def test_stats_cli_counts_tokens_and_masks_the_prompt():
    done = run_cli("stats", bundled("sft", "test"), "--stage", "sft", "--max-length", "64", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["rows"] == len(stats["lengths"]) and 0 < stats["truncated_share"] < 1
    tokens = stats["examples"][0]["tokens"]
    assert "<|im_start|>assistant" in stats["examples"][0]["text"]
    learned = "".join(t for t, counts in tokens if counts)
    assert learned.startswith('{"title"') and not any(counts for t, counts in tokens[:5])


def test_data_modules_stay_light_for_the_ui_process():
    code = (
        "import sys, engine.data, engine.datastats, engine.datafile, engine.datalayouts; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'tokenizers', 'streamlit') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
