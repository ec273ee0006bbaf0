"""What a good answer is, stated once: the Try page's evaluation reports each check on the held-out split, and the
RL stage uses the same checks as its rewards (`python -m engine.train --stage rl --reward checks.yaml`).

A check file is YAML, a list of checks under `checks:`; each is a name, or a name with its argument:

    checks:
      - valid_json                      # the whole answer parses as one JSON object (no prose around it)
      - keys: [title, priority, status] # exactly these keys (required_keys: at least these)
      - schema: {type: object, properties: {priority: {enum: [low, medium, high]}}}   # JSON Schema
      - equal: priority                 # this field equals the reference answer's (equal: "" = the whole answer)
      - regex: '^\\{.*\\}$'             # re.search over the answer; anchor with ^...$ for the whole of it
      - max_chars: 200                  # min_chars too
      - {equal: title, name: title exact, weight: 2}   # a label for tables and logs, a weight for the reward

A check passes or fails; an answer's reward is the weighted share of checks it passes, in [0, 1]. The reference is
the row's expected answer (`expected`, `completion`, or the last assistant message). Presets are check files that
ship with the app: `task_api` (the lesson's Task API assistant). No torch here.
"""

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PRESETS = {"task_api": Path(__file__).parent / "assets" / "datasets" / "task_api" / "checks.yaml"}
KINDS = {  # kind -> (the type of its argument, the label used when the file gives no name, an example)
    "valid_json": (None, "valid JSON", "- valid_json"),
    "keys": (list, "has exactly the keys {}", "keys: [title, priority]"),
    "required_keys": (list, "has the keys {}", "required_keys: [title]"),
    "schema": (dict, "matches the JSON schema", "schema: {type: object}"),
    "equal": (str, "{} equals the reference", "equal: priority"),
    "regex": (str, "matches {}", "regex: '^[{]'"),
    "max_chars": (int, "at most {} characters", "max_chars: 200"),
    "min_chars": (int, "at least {} characters", "min_chars: 1"),
}
ARGUMENT = {list: "a list", dict: "a mapping", str: "a text", int: "a whole number"}
HINT = "Each check is one of: " + ", ".join(KINDS) + " (engine/checks.py shows the format)."


class CheckError(ValueError):
    """A check file that cannot be used; the message says what is wrong and how to fix it."""


def parse_object(text: str) -> dict | None:
    """The answer as a JSON object, or None. Only the answer itself counts: no prose before or after it."""
    try:
        value = json.loads(str(text).strip())
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Check:
    kind: str
    arg: object
    name: str
    weight: float = 1.0

    def passes(self, answer: str, reference: str) -> bool:
        kind, arg = self.kind, self.arg
        if kind in ("regex", "max_chars", "min_chars"):
            text = str(answer).strip()
            return (
                re.search(arg, text) is not None
                if kind == "regex"
                else len(text) <= arg
                if kind == "max_chars"
                else len(text) >= arg
            )
        if kind == "equal" and not arg:
            return str(answer).strip() == str(reference).strip()
        got = parse_object(answer)
        if got is None:
            return False
        if kind == "valid_json":
            return True
        if kind == "keys":
            return set(got) == set(arg)
        if kind == "required_keys":
            return set(arg) <= set(got)
        if kind == "schema":
            import jsonschema

            return jsonschema.Draft202012Validator(arg).is_valid(got)
        want = parse_object(reference) or {}
        return arg in got and arg in want and got[arg] == want[arg]


def _check(entry, where: str) -> Check:
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict):
        raise CheckError(
            f"{where}: a check is a name (valid_json) or a name with its argument (keys: [a, b]), not {entry!r}. {HINT}"
        )
    entry = dict(entry)
    name, weight = entry.pop("name", None), entry.pop("weight", 1.0)
    if len(entry) != 1:
        raise CheckError(f"{where}: one check per entry, found {', '.join(map(str, entry)) or 'none'}. {HINT}")
    ((kind, arg),) = entry.items()
    if kind not in KINDS:
        raise CheckError(f"{where}: unknown check {kind!r}. {HINT}")
    want, label, example = KINDS[kind]
    if kind == "equal" and arg is None:
        arg = ""  # `- equal:` alone: the whole answer equals the reference
    if want is None and arg is not None:
        raise CheckError(f"{where}: {kind} takes no argument; write `{example}`.")
    if want is not None and (not isinstance(arg, want) or isinstance(arg, bool)):
        raise CheckError(f"{where}: {kind} needs {ARGUMENT[want]} as its argument, e.g. `{example}`.")
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as e:
            raise CheckError(f"{where}: the regular expression {arg!r} does not compile ({e}).") from None
    if kind == "schema":
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(arg)
        except jsonschema.SchemaError as e:
            raise CheckError(f"{where}: the JSON schema is not valid ({e.message}).") from None
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
        raise CheckError(f"{where}: weight must be a number of 0 or more, not {weight!r}.")
    shown = ", ".join(map(str, arg)) if isinstance(arg, list) else (arg or "the answer")
    return Check(kind, arg, str(name or label.format(shown)), float(weight))


@dataclass(frozen=True)
class CheckSet:
    checks: tuple[Check, ...]
    source: str  # the preset's name or the file's path, for messages and eval.json

    def score(self, answer: str, reference: str) -> dict[str, bool]:
        """check name -> passed. A check that raises on an answer fails it (and says why on stderr)."""
        out = {}
        for c in self.checks:
            try:
                out[c.name] = bool(c.passes(answer, reference))
            except Exception as e:  # noqa: BLE001  a broken answer must not end an evaluation or an RL run
                print(f"check {c.name!r} raised {type(e).__name__}: {e}; the answer scores 0 on it", file=sys.stderr)
                out[c.name] = False
        return out

    def summarize(self, answers: list[str], references: list[str]) -> dict[str, float]:
        """Share (0..1) of answers passing each check."""
        scores = [self.score(a, r) for a, r in zip(answers, references)]
        return {c.name: sum(s[c.name] for s in scores) / max(1, len(scores)) for c in self.checks}

    def reward(self, answer: str, reference: str) -> float:
        """The weighted share of checks passed, in [0, 1]."""
        s, total = self.score(answer, reference), sum(c.weight for c in self.checks) or 1.0
        return sum(c.weight for c in self.checks if s[c.name]) / total

    def reward_funcs(self) -> list:
        """GRPO reward functions, one per check (TRL logs each as rewards/<name>), with weights summing to 1."""
        total = sum(c.weight for c in self.checks) or 1.0
        return [RewardFunc(self, c, c.weight / total) for c in self.checks]


class RewardFunc:
    """One check as a TRL reward function: f(prompts, completions, expected=..., **kw) -> [0.0 | 1.0 per answer].
    The weight is applied by GRPOConfig.reward_weights, so the total reward is CheckSet.reward."""

    def __init__(self, checks: CheckSet, check: Check, weight: float):
        self.checks, self.check, self.weight = checks, check, weight
        self.__name__ = re.sub(r"\W+", "_", check.name).strip("_") or check.kind

    def __call__(self, prompts=None, completions=(), **columns) -> list[float]:
        references = reference_column(columns, len(completions))
        single = CheckSet((self.check,), self.checks.source)
        return [float(single.score(answer_text(c), r)[self.check.name]) for c, r in zip(completions, references)]


def answer_text(value) -> str:
    """A completion as text: TRL passes conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(value, list):
        return "".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return str(value)


def reference_column(columns: dict, n: int) -> list[str]:
    for key in ("expected", "completion", "reference", "answer"):
        if key in columns and columns[key] is not None:
            return [answer_text(v) for v in columns[key]]
    return [""] * n


def load(source: str | Path) -> CheckSet:
    """A preset name (task_api) or a YAML check file -> CheckSet; a CheckError sentence for anything wrong."""
    key = str(source).strip()
    path = PRESETS.get(key, Path(key).expanduser())
    if not path.is_file():
        raise CheckError(
            f"The check file {key} does not exist. Give a YAML file of checks, or a preset: {', '.join(PRESETS)}."
        )
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckError(f"The check file {key} is not valid YAML ({str(e).splitlines()[0]}). {HINT}") from None
    entries = values.get("checks") if isinstance(values, dict) else values
    if not isinstance(entries, list) or not entries:
        raise CheckError(
            f"The check file {key} has no list of checks: write `checks:` followed by `- valid_json` "
            f"and the like, one per line. {HINT}"
        )
    checks = tuple(_check(e, f"{key}, check {i + 1}") for i, e in enumerate(entries))
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CheckError(
            f"The check file {key} names two checks the same ({', '.join(twice)}); give one of them its own `name:`."
        )
    return CheckSet(checks, key)
