"""What a stage starts from besides its data: the policy weights (`--init-from` an earlier run, adapters merged in)
and, for RL, the reward model from an `rm` run. Each check ends in a sentence that says what was wrong and what to
give instead, because a wrong kind of model here would otherwise train silently on nonsense: loading a causal LM
as a reward model gives it a fresh, random score head, and loading a reward model as a policy a random LM head.

Only light imports at module level (the Streamlit process may import engine.train.* for its defaults).
"""

import contextlib
import json
import os
import shutil
from pathlib import Path

import yaml

from engine.spec import STAGE_NAMES, SpecError

RM_HINT = (
    "Train one first, e.g. `python -m engine.train --stage rm --init-from SFT_RUN --output-dir runs/rm`, "
    "then pass `--reward-model runs/rm` (in config.yaml: `extra: {reward_model: runs/rm}`)."
)


@contextlib.contextmanager
def main_process_first():
    """With several processes (accelerate launch), rank 0 does a one-time file job first; the others wait, then
    find it done. With one process this does nothing and starts nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def run_stage(path: Path) -> str | None:
    """The stage recorded in a run directory's config.yaml, or None if `path` is not a run directory."""
    try:
        values = yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return values.get("stage") if isinstance(values, dict) else None


def base_model_path(spec, run_dir: Path) -> str:
    """The weights this stage starts from: the chosen model, or an earlier run's final/ (a LoRA adapter is merged
    into its base once and kept in RUN/init_model/, so --resume does not merge again)."""
    from engine import models

    if not spec.init_from:
        return models.resolve(spec.model_name_or_path)
    source = Path(spec.init_from).expanduser()
    final = source / "final"
    if not final.is_dir():
        what = "does not exist" if not source.exists() else "has no final/ directory"
        raise SpecError(
            f"--init-from {spec.init_from} is not a finished run: it {what}. Give the run directory "
            "of a completed run (one whose status is completed)."
        )
    if run_stage(source) == "rm":
        raise SpecError(
            f"--init-from {spec.init_from} is a reward-model run: it scores answers and cannot write "
            f"them, so {STAGE_NAMES[spec.stage]} cannot start from it. Start from an sft (or pt) run; "
            "for RL, pass the reward-model run with --reward-model instead."
        )
    if not (final / "adapter_config.json").is_file():
        return str(final)  # a full model
    merged = run_dir / "init_model"
    with main_process_first():
        if not (merged / "config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            _save_atomically(AutoPeftModelForCausalLM.from_pretrained(str(final)).merge_and_unload(), final, merged)
    return str(merged)


def reward_model_path(value: str, run_dir: Path) -> str:
    """A directory GRPO can load with AutoModelForSequenceClassification(num_labels=1): an rm run (its final/, a
    LoRA adapter merged into RUN/reward_model/ first) or a sequence-classification model directory."""
    if not value:
        raise SpecError(
            "RL needs a reward model to score the answers it generates, or checks that can be verified, "
            "and neither was given. For checks: `--reward task_api` or `--reward checks.yaml` "
            "(engine/checks.py). For a reward model: " + RM_HINT
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise SpecError(
            f"The reward model {value} does not exist. Give the run directory of a finished "
            "reward-model (--stage rm) run. " + RM_HINT
        )
    stage = run_stage(path) or (run_stage(path.parent) if path.name == "final" else None)
    if stage is not None and stage != "rm":
        raise SpecError(
            f"The reward model {value} is a {STAGE_NAMES.get(stage, stage)} run (stage {stage}), not a "
            "reward model: it writes answers but cannot score them. " + RM_HINT
        )
    if (path / "final").is_dir():
        model = path / "final"
    elif run_stage(path) == "rm":
        raise SpecError(
            f"The reward-model run {value} has not finished: it has no final/ directory. Wait for it to "
            "complete (or resume it), then start RL again."
        )
    else:
        model = path
    adapter = model / "adapter_config.json"
    if adapter.is_file():
        task = json.loads(adapter.read_text()).get("task_type")
        if task != "SEQ_CLS":
            raise SpecError(
                f"The reward model {value} holds a LoRA adapter for {task or 'an unknown task'}, not a "
                "reward model (a SEQ_CLS adapter with a score head). " + RM_HINT
            )
        merged = run_dir / "reward_model"
        with main_process_first():
            if not (merged / "config.json").is_file():
                _merge_reward_adapter(model, merged)
        return str(merged)
    _check_reward_config(model, value)
    return str(model)


def _check_reward_config(model: Path, value: str) -> None:
    from engine.models import read_config

    config = read_config(model)  # ModelError with a sentence if missing or broken
    architectures = config.get("architectures") or []
    num_labels = len(config.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"})  # transformers' default is 2
    kind = ", ".join(architectures) or "an unknown architecture"
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise SpecError(
            f"The reward model {value} is a {kind}, a model that writes text, not one that scores it. " + RM_HINT
        )
    if num_labels != 1:
        raise SpecError(
            f"The reward model {value} is a classifier with {num_labels} outputs; a reward model has "
            "one (the score). " + RM_HINT
        )


def _merge_reward_adapter(adapter_dir: Path, target: Path) -> None:
    """A SEQ_CLS LoRA adapter (trained score head saved alongside it) + its base -> one full reward model. Loaded
    without quantisation, so a QLoRA reward model merges into ordinary full-precision weights."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification

    base_path = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if not base_path or not Path(base_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SpecError(
            f"The reward model's adapter in {adapter_dir} was trained on {base_path or 'an unnamed model'}"
            ", which is no longer on this machine. Train the reward model again (--stage rm)."
        )
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    _save_atomically(PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload(), adapter_dir, target)


def _save_atomically(model, tokenizer_dir: Path, target: Path) -> None:
    """save_pretrained writes config.json before the weights; a temp directory + rename means a crash halfway never
    leaves a directory that looks complete."""
    from transformers import AutoTokenizer

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
