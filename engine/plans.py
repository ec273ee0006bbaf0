"""The plan a person builds on the Goal, Hardware, Estimate and Data pages, kept server-side per user so a reload
or a new login finds it again; and the class plan an instructor publishes for students to start from.

A plan is plain data: {"spec": RunSpec fields, "goals": [...], "hardware": {"preset": KEY or "", "count": N}}."""

import json
import time
from dataclasses import asdict

from engine.runs.registry import connect, set_setting, setting
from engine.spec import RunSpec, SpecError
from engine.users import User, require_instructor


def save(user: str, plan: dict) -> None:
    connect().execute(
        "INSERT INTO plans (user, plan, updated_at) VALUES (?, ?, ?) ON CONFLICT(user) DO UPDATE SET "
        "plan=excluded.plan, updated_at=excluded.updated_at",
        (user, json.dumps(plan), time.time()),
    )


def load(user: str) -> dict | None:
    row = connect().execute("SELECT plan FROM plans WHERE user=?", (user,)).fetchone()
    return _valid(json.loads(row["plan"])) if row else None


def publish_class_plan(plan: dict, *, by: User) -> None:
    """The plan students start from, published by `by` (an instructor)."""
    require_instructor(by, "publish the class plan")
    set_setting("class_plan", plan)


def class_plan() -> dict | None:
    return _valid(setting("class_plan"))


def spec_of(plan: dict) -> RunSpec:
    return RunSpec.from_dict(plan.get("spec") or {})


def plan_of(spec: RunSpec, goals: list, hardware) -> dict:
    return {
        "spec": asdict(spec),
        "goals": list(goals or []),
        "hardware": {
            "preset": "" if hardware is None or hardware.detected else hardware.preset,
            "count": 1 if hardware is None else hardware.count,
            "chosen": hardware is not None,
        },
    }


def _valid(plan: dict | None) -> dict | None:
    """A stored plan the current code still reads (settings renamed since are dropped, not fatal)."""
    if not isinstance(plan, dict):
        return None
    try:
        spec_of(plan)
    except SpecError:
        plan = {**plan, "spec": {}}
    return plan
