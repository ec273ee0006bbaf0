"""Helpers of the Try & Export page: finished runs, engine CLIs in a subprocess, the evaluation table and chart.
No torch here: generation, evaluation and export run in `python -m engine.*` processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go

from engine import modelfile, paths, runs
from engine.evaluate import format_value
from engine.recommend import METHOD_NAMES
from engine.spec import STAGE_NAMES

LIMITS_S = {"engine.generate": 300, "engine.evaluate": 3600, "engine.export": 1800, "engine.gguf_file": 600}
# Sizes for SmolLM2-135M (engine/gguf_file.py; 2 bytes a weight for F16/BF16, 34 bytes per 32 weights for Q8_0)
QUANT_LABELS = {
    "f16": "F16 (exact to ~0.03 in the logits; 258 MB for 135M)",
    "bf16": "BF16 (as trained on most GPUs; same size as F16)",
    "q8_0": "Q8_0 (half the size, answers nearly always the same; 138 MB for 135M)",
    "q4_k_m": "Q4_K_M (a quarter of F16, through llama.cpp's llama-quantize)",
}


def finished_runs(user) -> list[dict]:
    """The user's completed runs that have a result in final/ (newest first)."""
    done = [r for r in runs.list_runs(user) if r["state"] == "completed" and (Path(r["run_dir"]) / "final").is_dir()]
    return list(reversed(done))


def label(run: dict, owner: bool = False) -> str:
    """owner: say whose run it is (an instructor's list holds every student's)."""
    method = METHOD_NAMES.get(run["method"], run["method"])
    whose = f" of {run['owner']}" if owner else ""
    return f"run {run['id']}{whose} · {STAGE_NAMES[run['stage']]} · {method} · {Path(run['run_dir']).name}"


def shell(module: str, *args) -> str:
    """The same call as a command a person can paste into a shell."""
    quoted = [f'"{a}"' if " " in str(a) or not str(a) else str(a) for a in args]
    return " ".join(["python -m", module, *quoted])


def call(module: str, *args, user=None) -> tuple[dict | None, str]:
    """Run `python -m module args... [--as USER]`; (parsed JSON output, "") or (None, a sentence for the page). In
    workshop mode the subprocess acts as the logged-in user, so it checks the same paths the page did."""
    acting = ["--as", user.name] if user is not None and user.role != "owner" else []
    cmd = [sys.executable, "-m", module, *map(str, args), *acting]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=LIMITS_S[module],
            cwd=str(paths.REPO),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, (
            f"`{module}` took more than {LIMITS_S[module] // 60} minutes and was stopped. The machine may "
            "be busy; try again, or run it from a shell: " + shell(module, *args)
        )
    if proc.returncode != 0:
        errors = [line[len("error: ") :] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        return None, errors[-1] if errors else f"`{module}` stopped with exit code {proc.returncode}: {tail[0]}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (json.JSONDecodeError, IndexError):
        return None, f"`{module}` printed no result. Run it from a shell to see why: {shell(module, *args)}"


def gguf_in(folder: Path) -> Path:
    return sorted(Path(folder).glob("*.gguf"))[0]


def ollama_here() -> bool:
    """An `ollama` command on PATH and its server answering on this computer."""
    return shutil.which("ollama") is not None and modelfile.ollama_running()


def ollama_create(folder: Path, name: str) -> str:
    """Run `ollama create NAME -f Modelfile` in the export folder; a sentence for the page."""
    try:
        done = subprocess.run(
            ["ollama", "create", name, "-f", "Modelfile"],
            cwd=str(folder),
            capture_output=True,
            text=True,
            timeout=LIMITS_S["engine.export"],
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ollama create did not finish ({e}). Run it from a shell in {folder}: {modelfile.create_command(name)}"
    if done.returncode != 0:
        return f"ollama create failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return f"Created {name} in Ollama: `ollama run {name}`"


def eval_table(result: dict) -> list[dict]:
    return [
        {
            "metric": m["metric"],
            "base model": format_value(m["base"], m["kind"]),
            "fine-tuned": format_value(m["fine_tuned"], m["kind"]),
        }
        for m in result["metrics"]
    ]


def eval_chart(result: dict) -> go.Figure | None:
    """Bars of the shares (valid JSON, priority, ...) for the base and the fine-tuned model; None if there are none."""
    shares = [m for m in result["metrics"] if m["kind"] == "share"]
    if not shares:
        shares = [m for m in result["metrics"] if m["kind"] == "loss"]
    if not shares:
        return None
    percent = shares[0]["kind"] == "share"
    scale = 100 if percent else 1
    fig = go.Figure()
    for key, name, color in (("base", "base model", "#9aa5b1"), ("fine_tuned", "fine-tuned", "#2e7d32")):
        values = [None if m[key] is None else m[key] * scale for m in shares]
        fig.add_bar(
            x=[m["metric"] for m in shares],
            y=values,
            name=name,
            marker_color=color,
            text=[format_value(m[key], m["kind"]) for m in shares],
            textposition="outside",
        )
    fig.update_layout(
        barmode="group",
        height=360,
        yaxis_title="% of held-out answers" if percent else "loss",
        yaxis_range=[0, 110] if percent else None,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
