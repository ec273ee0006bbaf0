"""Scoring answers of the seed's Task API assistant: does the model return the JSON the API needs?

An expected answer looks like {"title": "Review Q4 budget", "priority": "high", "status": "pending"}. Four checks,
each stricter than the one before it is useful for: the answer parses as a JSON object; it has exactly the keys
title/priority/status (extra keys break a strict API client); the priority is right; the title is exact
(character for character). Status is counted too, since "done" requests are part of the set. No torch here.
"""
import json

KEYS = ("title", "priority", "status")
CHECKS = {  # name -> what a person reads in the table
    "valid_json": "valid JSON",
    "has_keys": "has title/priority/status",
    "priority_ok": "priority right",
    "status_ok": "status right",
    "title_exact": "title exact",
}


def parse_object(text: str) -> dict | None:
    """The answer as a JSON object, or None. Only the answer itself counts: no prose before or after it."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def is_task_answer(text: str) -> bool:
    """True when an expected answer has the Task API shape, so a dataset can be scored this way."""
    value = parse_object(text)
    return value is not None and set(KEYS) <= set(value)


def score(answer: str, expected: str) -> dict[str, bool]:
    got, want = parse_object(answer), parse_object(expected) or {}
    keys = got is not None and set(got) == set(KEYS)
    return {"valid_json": got is not None, "has_keys": keys,
            "priority_ok": keys and got["priority"] == want.get("priority"),
            "status_ok": keys and got["status"] == want.get("status"),
            "title_exact": keys and got["title"] == want.get("title")}


def summarize(answers: list[str], expected: list[str]) -> dict[str, float]:
    """Share (0..1) of answers passing each check."""
    scores = [score(a, e) for a, e in zip(answers, expected)]
    n = max(1, len(scores))
    return {name: sum(s[name] for s in scores) / n for name in CHECKS}


def reward(answer: str, expected: str) -> float:
    """One number in [0, 1] per answer (mean of the checks): the RL stage's \"mean reward before/after\"."""
    s = score(answer, expected)
    return sum(s.values()) / len(s)
