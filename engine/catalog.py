"""Offline catalog of public model configs, so estimates work without downloading a model.

    python -m engine.catalog            # list the catalog

Each file in assets/models/ is the `config.json` of a public Hugging Face model, named after its Hub id with "/"
written as "--". The values are the models' published config.json files, less bookkeeping keys
(tests/test_catalog.py checks each one's parameter count against its publisher's figure). Lookup accepts a Hub id
("Qwen/Qwen2.5-0.5B"), its last part ("Qwen2.5-0.5B"), "embedded" (the SmolLM2-135M-Instruct shipped with the
app), or a local model directory.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from engine import paths
from engine.models import EMBEDDED, EMBEDDED_NAME, ModelError, read_config

MODELS_DIR = paths.ASSETS / "models"
EMBEDDED_ID = f"HuggingFaceTB/{EMBEDDED_NAME}"


@dataclass(frozen=True)
class CatalogModel:
    name: str  # Hub id, e.g. "Qwen/Qwen2.5-0.5B"
    config: dict  # the config.json contents


def names() -> list[str]:
    """Hub ids in the catalog, in file order."""
    return [entry.name for entry in entries()]


def entries() -> list[CatalogModel]:
    out = []
    for path in sorted(MODELS_DIR.glob("*.json")):
        cfg = json.loads(path.read_text())
        out.append(CatalogModel(name=path.stem.replace("--", "/"), config=cfg))
    return out


def load_config(model: str) -> dict:
    """config.json for what a user typed: "embedded", a Hub id in the catalog, or a local model directory.

    Never converts or downloads anything; the embedded model's config is shipped in the catalog."""
    model = (model or "").strip()
    if model in ("", EMBEDDED, EMBEDDED_NAME):
        model = EMBEDDED_ID
    for entry in entries():
        if model.lower() in (entry.name.lower(), entry.name.split("/")[-1].lower()):
            return entry.config
    path = Path(model).expanduser()
    if path.is_dir():
        return read_config(path)  # raises ModelError with a sentence when config.json is missing or broken
    if path.suffix == ".json" and path.is_file():
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{path} is not valid JSON ({e}).") from None
    raise ModelError(
        f"'{model}' is neither a model directory nor in the offline catalog. Give the path of a "
        f"directory holding config.json, or one of: {', '.join(names())}."
    )


if __name__ == "__main__":
    for entry in entries():
        c = entry.config
        c = c.get("text_config", c)  # multimodal configs nest the language model
        print(f"{entry.name:40s} {c['model_type']:12s} layers={c['num_hidden_layers']:3d} hidden={c['hidden_size']}")
