"""Which paths a person may name, enforced here for every page and command line that takes one.

In personal mode the one person owns the machine: any path they can read is theirs. In workshop mode a path a
person types (data file, model directory, start-from run, reward model, run directory, export folder) must resolve,
symlinks followed, inside one of:
- their own area, TUNEWISE_HOME/users/NAME (uploads, runs, exports); an instructor: every user's area;
- the bundled data sets shipped with the app, and the converted embedded model;
- the folders the instructor published to the class: TUNEWISE_HOME/shared/ (models/, data/) and any listed in the
  `published` setting.
Anything else (`..` out of an area, an absolute path elsewhere, a symlink pointing out) is refused with a sentence.
A model may also be "embedded" or a Hub id from the app's catalog; it is not a path then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine import paths

if TYPE_CHECKING:
    from engine.spec import RunSpec
    from engine.users import User


class AccessError(ValueError):
    """A path or run this person may not use; the message says why and what to do."""


def roots(actor: User, writable: bool = False) -> list[Path]:
    """The folders the actor may name (writable: only where they may write)."""
    own = [paths.home() / "users"] if actor.sees_all else [paths.user_area(actor.name)]
    if writable:
        return own
    from engine.runs.registry import setting

    published = [Path(p).expanduser().resolve() for p in setting("published", [])]
    return own + [paths.shared_dir(), paths.ASSETS / "datasets", paths.cache()] + published


def confine(typed: str | Path, actor: User, what: str = "path", writable: bool = False) -> Path:
    """The resolved path a person typed, or AccessError. Relative paths start in the person's own area."""
    text = str(typed).strip()
    if not text:
        raise AccessError(f"The {what} is empty; choose one.")
    if actor.role == "owner":
        return Path(text).expanduser().resolve()
    if "\x00" in text:
        raise AccessError(f"The {what} contains a NUL character; give a normal file name.")
    raw = Path(text)  # no ~ expansion: ~root would say which accounts the machine has
    raw = raw if raw.is_absolute() else paths.user_area(actor.name) / raw
    path = raw.resolve()  # follows symlinks: one in a user's folder pointing out is refused
    allowed = roots(actor, writable)
    if any(path.is_relative_to(root) for root in allowed):
        return path
    # The class's shared folders are the instructor's to fill (students cannot write there), so a link the
    # instructor put there to publish a model kept elsewhere counts as published; `..` still cannot climb out.
    lexical = Path(os.path.normpath(raw))
    if not writable and any(lexical.is_relative_to(root) for root in allowed[len(roots(actor, True)) :]):
        return lexical  # the published name, so that checking it again (at submit) gives the same answer
    shared = f"the class's shared folder ({paths.shared_dir()})"
    where = "your own folder (your uploads, runs and exports)" + ("" if writable else f", the bundled sets or {shared}")
    if "run" in what:  # a run is picked from the person's own runs; another person's cannot be opened
        advice = "Pick one of your own runs from the list instead."
    elif writable:
        advice = "Choose a folder inside your own folder."
    elif "model" in what:
        advice = f"Pick the bundled model or one shared with the class, or ask the instructor to put yours in {shared}."
    else:
        advice = "Upload the file instead (its copy goes to your own folder), or ask the instructor to share it."
    raise AccessError(f"The {what} '{text}' is outside {where}, so it cannot be used here. {advice}")


def check_model(model: str, actor: User, what: str = "model") -> str:
    """'embedded', a catalog Hub id, or a confined model directory (returned resolved)."""
    model = model.strip()
    if actor.role == "owner" or not model or model == "embedded":
        return model
    from engine import catalog

    if model in catalog.names() and ".." not in model:
        return model
    return str(confine(model, actor, what))


# TRL settings a workshop student may pass in `extra:` (the rest - output_dir, max_steps, hub uploads, deepspeed
# or template paths, save limits - would get round the checks below or the instructor's quotas).
STUDENT_EXTRA = {
    "reward_model",
    "reward_checks",
    "padding_free",
    "beta",
    "loss_type",
    "label_smoothing",
    "num_generations",
    "max_completion_length",
    "max_prompt_length",
    "temperature",
    "completion_only_loss",
    "assistant_only_loss",
    "packing",
    "center_rewards_coefficient",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
    "neftune_noise_alpha",
}


# The sizes among them that multiply a step's memory and time (RL: answers sampled per prompt and their length).
STUDENT_EXTRA_LIMITS = {"num_generations": 64, "max_completion_length": 8192, "max_prompt_length": 32768}


def check_spec(spec: RunSpec, actor: User) -> None:
    """Every path of a run, before it is registered: confined, written back resolved so the trainer (whose working
    directory is the app's) reads exactly what was checked."""
    if actor.role == "owner":
        return
    refused = sorted(set(spec.extra) - STUDENT_EXTRA)
    if refused:
        raise AccessError(
            f"The setting(s) {', '.join(refused)} under `extra:` are not allowed in a workshop (they "
            f"could write elsewhere or get round the class's limits). Allowed there: "
            f"{', '.join(sorted(STUDENT_EXTRA))}."
        )
    for key, most in STUDENT_EXTRA_LIMITS.items():
        value = spec.extra.get(key)
        if value is not None and not (isinstance(value, int | float) and 0 < value <= most):
            raise AccessError(
                f"`extra: {{{key}: {value}}}` is outside what a workshop run may ask for (1 to {most:,}): it would "
                "take the server's memory or time from the class. Choose a value in that range."
            )
    if spec.dataset_name:
        spec.dataset_name = str(confine(spec.dataset_name, actor, "dataset file"))
    spec.model_name_or_path = check_model(spec.model_name_or_path, actor) or "embedded"
    if spec.init_from:
        spec.init_from = str(confine(spec.init_from, actor, "earlier run to start from"))
    if spec.extra.get("reward_model"):
        spec.extra["reward_model"] = str(confine(spec.extra["reward_model"], actor, "reward model run"))
    if spec.extra.get("reward_checks"):
        spec.extra["reward_checks"] = check_checks(spec.extra["reward_checks"], actor)
    if spec.output_dir:
        out = confine(spec.output_dir, actor, "output directory", writable=True)
        runs_dir = paths.user_area(actor.name) / "runs"
        if not (out.is_relative_to(runs_dir) and out != runs_dir):  # Remove deletes it: never a whole area
            raise AccessError(
                f"The output directory must be a new folder inside {runs_dir}; leave it empty and the app makes one."
            )
        spec.output_dir = str(out)


def check_checks(source: str, actor: User) -> str:
    """A check file (engine/checks.py): a preset by name, or a file inside the actor's area."""
    from engine.checks import PRESETS

    if source in PRESETS or actor.role == "owner":
        return source
    return str(confine(source, actor, "check file"))


def check_run_dir(run_dir: str | Path, actor: User) -> Path:
    """A run directory the actor may try, evaluate or export: inside their area and, if registered, theirs."""
    path = confine(run_dir, actor, "run directory")
    if actor.sees_all:
        return path
    from engine.runs.registry import connect

    row = connect().execute("SELECT owner FROM runs WHERE run_dir=?", (str(path),)).fetchone()
    if row is not None and row["owner"] != actor.name:
        raise AccessError(f"The run directory '{run_dir}' is not one of your runs.")
    return path
