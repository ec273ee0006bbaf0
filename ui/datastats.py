"""Token statistics of a data file for the pages: the Data page shows them, the Estimate page times the run with
them. One cached call of `python -m engine.data stats` (a subprocess: the UI process never loads a tokenizer),
keyed on the file's path, modification time and the settings, so both pages share one answer and the bundled
set's statistics are there before the Data page is ever visited."""

import json
import subprocess
import sys
from pathlib import Path

import streamlit as st

from engine import paths
from engine.data import DataError, bundled
from engine.spec import RunSpec


def file_version(path: Path) -> tuple:
    """What the caches key on: a file edited in place gets checked again."""
    try:
        return path.stat().st_mtime_ns, path.stat().st_size
    except OSError:
        return 0, 0


def count_rows(path: str, stage: str) -> int:
    """Usable rows of a data file for a stage (the bundled set's when path is empty), cached per file version."""
    file = Path(path) if path else bundled(stage)
    return _rows(str(file), stage, file_version(file))


@st.cache_data(show_spinner=False, max_entries=32)
def _rows(path: str, stage: str, version: tuple) -> int:
    from engine.data import check

    return check(path, stage).rows


@st.cache_data(show_spinner="Tokenizing a sample (a few seconds)…", max_entries=32)
def cached_stats(path: str, stage: str, max_length: int, version: tuple, model: str, acting: str = "") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "engine.data",
        "stats",
        path,
        "--stage",
        stage,
        "--max-length",
        str(max_length),
        "--json",
        "--examples",
        "3",
        "--model",
        model,
    ] + (["--as", acting] if acting else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=paths.REPO)
        return json.loads(done.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        return {
            "ok": False,
            "error": f"token statistics failed ({type(e).__name__}); run `{' '.join(cmd)}` to see why.",
        }


def tokenizer_of(spec: RunSpec) -> str:
    """The plan's own tokenizer when the model is a local directory; otherwise the embedded SmolLM2's."""
    own = Path(spec.model_name_or_path).expanduser()
    return str(own) if (own / "tokenizer.json").is_file() else "embedded"


def plan_stats(spec: RunSpec, stage: str, acting: str = "") -> dict | None:
    """Statistics of the plan's data for `stage` (dataset_name "" = the stage's bundled set); None if they cannot be
    had (a file that fails the check: the Data page says why)."""
    try:
        path = Path(spec.dataset_name).expanduser() if spec.dataset_name else bundled(stage)
    except DataError:
        return None
    if not path.is_file():
        return None
    stats = cached_stats(str(path), stage, spec.max_length, file_version(path), tokenizer_of(spec), acting)
    return stats if stats.get("ok") else None


def passes_over(examples: float, rows: int) -> str:
    """How many times a run goes through its data, as a person says it: "20 passes", "1.5 passes", "40 % of one
    pass" (examples / rows)."""
    ratio = examples / rows
    if ratio < 0.995:
        return f"{max(ratio, 0.01):.0%} of one pass"
    if round(ratio, 2) == 1:
        return "one pass"
    return f"{ratio:,.0f} passes" if ratio >= 10 else f"{ratio:.2g} passes"
