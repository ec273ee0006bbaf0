"""The seed's Task API assistant: does the model return the JSON the API needs? Its checks (valid JSON, exactly
the keys title/priority/status, priority and status right, title exact) are the preset check file
engine/assets/datasets/task_api/checks.yaml (engine/checks.py), used by the evaluation and as RL rewards."""

from engine.checks import load, parse_object

KEYS = ("title", "priority", "status")


def checks():
    return load("task_api")


def is_task_answer(text: str) -> bool:
    """True when an expected answer has the Task API shape, so a dataset can be scored this way."""
    value = parse_object(text)
    return value is not None and set(KEYS) <= set(value)
