"""Pipelines: the stages of a plan (SFT -> DPO; SFT -> reward model -> RL) queued at once, each starting from the
result of the one before it.

    python -m engine.runs submit sft.yaml dpo.yaml --chain          # stage configs without init_from

Every stage is a run of its own (its own directory, checkpoints, live view), registered together in one
transaction (engine.runs.submit_chain): the first is queued, the later ones wait (state 'waiting': not in the
queue's line). The whole pipeline is one entry against the waiting-runs quota while any of its stages is queued or
waiting, and every stage's per-run limits are checked at submission, so release() needs no quota check. When a
stage completes, release() fills in the next one's starting point - `init_from` = the last earlier stage that
writes answers (not a reward model), `extra.reward_model` = the reward-model stage, for RL - and queues it. A
stage that fails or is stopped holds the rest (held() says why); resuming it continues the pipeline.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import yaml

from engine import data, rundir
from engine.runs import local
from engine.runs.registry import RunError
from engine.spec import STAGE_NAMES, RunSpec

ORDER = {"pt": 0, "sft": 1, "dpo": 2, "rm": 2, "rl": 3}  # the lesson's order: skills first, behaviour after


def check(specs: list[RunSpec]) -> None:
    """Refuse, with a sentence, stages that do not fit together, before anything is registered."""
    if len(specs) < 2:
        raise RunError("A pipeline needs at least two stages; submit a single config on its own.")
    for i, spec in enumerate(specs):
        where = f"Stage {i + 1} ({STAGE_NAMES[spec.stage]})"
        if i and spec.init_from:
            raise RunError(
                f"{where} has init_from set, but in a pipeline each stage starts from the one before it. "
                "Remove init_from from its config."
            )
        if i and ORDER[spec.stage] < ORDER[specs[i - 1].stage]:
            raise RunError(
                f"{where} cannot follow {STAGE_NAMES[specs[i - 1].stage]}: the lesson's order is "
                "continued pretraining, then supervised fine-tuning, then preference tuning or a reward "
                "model, then RL. Put the stages in that order."
            )
        if spec.stage == "rm" and (i == len(specs) - 1 or specs[i + 1].stage != "rl"):
            raise RunError(
                f"{where} trains a reward model, which scores answers but does not write them: only an "
                "RL stage can use it. Add an RL stage right after it, or leave the reward model out."
            )
        if spec.stage == "rl" and not (
            spec.extra.get("reward_checks") or spec.extra.get("reward_model") or any(s.stage == "rm" for s in specs[:i])
        ):
            raise RunError(
                f"{where} has nothing to reward its answers with: add a reward-model stage before it, or "
                "give it checks (extra: {reward_checks: task_api}, or a check file)."
            )
        if spec.dataset_name:
            report = data.check(spec.dataset_name, spec.stage)
            if not report.ok:
                raise RunError(
                    f"{where}: {Path(spec.dataset_name).name} cannot be used for "
                    f"{STAGE_NAMES[spec.stage]}. {report.summary()}"
                )


def sources(db: sqlite3.Connection, run: sqlite3.Row) -> dict:
    """The runs this stage starts from: {"init_from": run dir, "reward_model": run dir (RL after an rm stage)}."""
    earlier = db.execute(
        "SELECT * FROM runs WHERE pipeline=? AND id < ? ORDER BY id", (run["pipeline"], run["id"])
    ).fetchall()
    policy = [r for r in earlier if r["stage"] != "rm"]
    reward = [r for r in earlier if r["stage"] == "rm"]
    out = {"init_from": policy[-1]["run_dir"]} if policy else {}
    if run["stage"] == "rl" and reward:
        out["reward_model"] = reward[-1]["run_dir"]
    return out


def release(db: sqlite3.Connection, run_id: int) -> list[int]:
    """After run_id ended: if it completed, fill in and queue the stage waiting for it, and start its supervisor
    (which hands it to the executor when its turn comes). Returns the ids queued."""
    done = db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
    if done is None or done["state"] != "completed":
        return []
    queued = []
    for run in db.execute("SELECT * FROM runs WHERE after_run=? AND state='waiting'", (run_id,)).fetchall():
        spec = RunSpec.from_dict(yaml.safe_load(run["config"]) or {})
        found = sources(db, run)
        spec.init_from = found.get("init_from", spec.init_from)
        if "reward_model" in found:
            spec.extra = {**spec.extra, "reward_model": found["reward_model"]}
        spec.save(Path(run["run_dir"]) / "config.yaml")
        changed = db.execute(
            "UPDATE runs SET state='queued', config=?, submitted_at=?, error=NULL WHERE id=? AND state='waiting'",
            (spec.to_yaml(), time.time(), run["id"]),
        ).rowcount
        if changed:
            rundir.write_status(run["run_dir"], "queued", error=None)
            local.start_supervisor(run["id"])
            queued.append(run["id"])
    return queued


def held(run: dict, by_id: dict[int, dict]) -> str:
    """Why a waiting stage waits, in a sentence ("" for a run that is not a waiting stage)."""
    if run["state"] != "waiting" or not run.get("after_run"):
        return ""
    before = by_id.get(run["after_run"])
    if before is None:
        return "The stage before it was removed, so it cannot start; remove this run too."
    name = STAGE_NAMES[before["stage"]]
    if before["state"] in ("failed", "stopped"):
        return (
            f"Held: run {before['id']} ({name}) {before['state']}. Resume it on the Runs page and this stage "
            "follows when it completes."
        )
    return f"Starts when run {before['id']} ({name}) completes."


def stages_of(run: dict, rows: list[dict]) -> list[dict]:
    """Every run of the pipeline a run belongs to, in order ([run] for a run outside a pipeline)."""
    if not run.get("pipeline"):
        return [run]
    return sorted((r for r in rows if r.get("pipeline") == run["pipeline"]), key=lambda r: r["id"])
