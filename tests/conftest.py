"""Shared fixtures. Every test runs offline with its own TUNEWISE_HOME (runs, registry); the converted embedded
model stays in the shared cache, since converting it is the same work every time."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def tunewise_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEWISE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def embedded_dir():
    from engine.models import ensure_embedded

    return ensure_embedded()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_dir):
    """A 2-layer llama with the embedded model's tokenizer: real code paths, steps in milliseconds."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    code = f"""
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained({str(embedded_dir)!r})
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
LlamaForCausalLM(cfg).save_pretrained({str(out)!r}); tok.save_pretrained({str(out)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return out


def run_cli(*args, env=None, timeout=600, input_text=None):
    """Run `python -m ...` the way a person would in a shell; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def wait_for(predicate, timeout=240, every=0.5):
    """predicate()'s first truthy value, polled every `every` s; AssertionError after `timeout` s."""
    end = time.time() + timeout
    while time.time() < end:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# Debian's chromium (`make browser`), as the browser tests start it: no sandbox as root, no calls home.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_another_model(tab, model: str) -> None:
    """On the Train page: Model -> 'Another model', then its name in the box under it (a real browser)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):  # a whole-page rerun (another run changed state) closes an open list: open it again
        tab.get_by_role("combobox", name="Model", exact=True).click()
        try:
            tab.get_by_role("option", name="Another model: type its name or folder below").click(timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    tab.get_by_role("textbox", name="Another model: its Hugging Face name or folder").fill(model)


def start_app(*serve_args, env=None) -> tuple[str, subprocess.Popen]:
    """The app as `make run` / `make workshop` start it (python -m engine.serve), on a free port, once it answers
    its health check. Returns (url, process); stop it with os.killpg(proc.pid, 9)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.serve", "--port", str(port), *serve_args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return url, proc


def fake_nvml(monkeypatch, name: str, count: int, total_mib: int, used_mib: int, capability=(9, 0)) -> None:
    """NVML answering as `count` GPUs called `name` (the app's detection code and the queue run unchanged)."""
    from types import SimpleNamespace

    import pynvml

    from engine import hardware

    mib = 1024**2
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: count)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: name)
    memory = SimpleNamespace(total=total_mib * mib, used=used_mib * mib, free=(total_mib - used_mib) * mib)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: memory)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCudaComputeCapability", lambda h: capability)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "570.86.15")
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12080)
    hardware._read_nvml.cache_clear()


@pytest.fixture(scope="session")  # shared by the Try & Export and GGUF tests: one 2-step run
def tiny_run(tmp_path_factory, tiny_model):
    run = tmp_path_factory.mktemp("after") / "run"
    result = run_cli(
        "engine.train",
        "--model",
        str(tiny_model),
        "--max-steps",
        "2",
        "--batch",
        "2",
        "--eval-steps",
        "1000",
        "--output-dir",
        str(run),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run
