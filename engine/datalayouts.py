"""The layouts each stage accepts, how a row is checked, and how it becomes TRL's standard layout.

A layout is a set of required fields. The file's layout is the one most of its first 1,000 rows match; every row is
then checked against it, so one broken row gets "missing field 'completion'" instead of sinking the whole file.
"""

import json
from dataclasses import dataclass

STAGES = ("pt", "sft", "dpo", "rm", "rl")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
}


@dataclass(frozen=True)
class Layout:
    name: str  # what the page calls it
    fields: tuple  # required fields, in the file's names
    target: str  # the standard layout it becomes
    kind: str  # how convert_row reads it: text | pair | alpaca | messages | sharegpt | pref |
    #                           implicit | prompt
    converted: bool = False  # True when the file's names are aliases we rename


def _pair(a, b, name=None):
    return Layout(name or f"{a}/{b}", (a, b), "prompt/completion", "pair", converted=(a, b) != ("prompt", "completion"))


LAYOUTS = {
    "pt": [Layout("text", ("text",), "text", "text")]
    + [Layout(f"{a} (raw text)", (a,), "text", "text", True) for a in ("content", "document", "body")],
    "sft": [
        Layout("messages (chat)", ("messages",), "messages", "messages"),
        Layout("conversations (ShareGPT)", ("conversations",), "messages", "sharegpt", True),
        _pair("prompt", "completion"),
        Layout(
            "instruction/input/output (Alpaca)", ("instruction", "input", "output"), "prompt/completion", "alpaca", True
        ),
        _pair("input", "output", "input → output"),
        _pair("instruction", "response"),
        _pair("instruction", "output"),
        _pair("question", "answer"),
        _pair("query", "response"),
    ],
    "dpo": [Layout("prompt/chosen/rejected", ("prompt", "chosen", "rejected"), "prompt/chosen/rejected", "pref")]
    + [
        Layout(f"{a}/chosen/rejected", (a, "chosen", "rejected"), "prompt/chosen/rejected", "pref", True)
        for a in ("input", "instruction", "question")
    ]
    + [Layout("chosen/rejected (implicit prompt)", ("chosen", "rejected"), "prompt/chosen/rejected", "implicit", True)],
    "rl": [Layout("prompt", ("prompt",), "prompt", "prompt")]
    + [
        Layout(f"{a} (prompt only)", (a,), "prompt", "prompt", True)
        for a in ("input", "question", "query", "instruction")
    ],
}
LAYOUTS["rm"] = LAYOUTS["dpo"]

# The lesson's guidance on data size ("Data: 1,000-100,000 high-quality examples" for SFT; "Data: Hundreds" for
# alignment; the Task API example: "2,000-5,000 task management examples"). Continued pretraining is counted in
# tokens, so its row count only flags a corpus too small to shift anything.
GUIDANCE = {
    "sft": (
        1000,
        100_000,
        "SFT usually needs 1,000-100,000 high-quality examples (the Task API example: 2,000-5,000).",
    ),
    "dpo": (100, None, "Preference data: hundreds of pairs and up."),
    "rm": (100, None, "A reward model: hundreds of preference pairs and up; more pairs, steadier scores."),
    "rl": (100, None, "RL: hundreds of prompts and up; each is answered many times during training."),
    "pt": (500, None, "Continued pretraining is measured in tokens: millions of tokens of domain text are typical."),
}


def guidance(stage: str, rows: int) -> dict:
    low, high, sentence = GUIDANCE[stage]
    level = "low" if rows < low else "high" if high and rows > high else "ok"
    message = {
        "low": f"Only {rows:,} rows: fewer than the {low:,} the lesson suggests. {sentence}",
        "high": f"{rows:,} rows: more than {high or 0:,}; fine, but check quality before quantity. {sentence}",
        "ok": f"{rows:,} rows: within the lesson's guidance. {sentence}",
    }[level]
    return {"level": level, "low": low, "high": high, "message": message}


# What a row that is not an object is, in words (the type names of json.loads' results)
KINDS = {
    "list": "lists",
    "str": "plain strings",
    "int": "numbers",
    "float": "numbers",
    "bool": "true/false values",
    "NoneType": "null values",
}


def describe(stage: str) -> str:
    return "; ".join(" + ".join(layout.fields) for layout in LAYOUTS[stage])


def detect_layout(stage: str, records: list) -> tuple:
    """(layout, "") for the layout most rows match, or (None, a sentence saying what the stage needs)."""
    votes = _votes(stage, records)
    if votes:
        return max(votes, key=lambda lay: (votes[lay], -LAYOUTS[stage].index(lay))), ""
    dicts = [r for r in records if isinstance(r, dict)]
    if not dicts:
        expected = f"Expected: one JSON object per row (in JSONL, one per line) with the fields of {stage}: " + (
            describe(stage).replace("; ", ", or ") + "."
        )
        if not records:
            return None, f"no row of the file could be read, so it holds no examples. {expected}"
        found = KINDS.get(type(records[0]).__name__, type(records[0]).__name__)
        return None, f"the rows are {found} (the first: {json.dumps(records[0])[:60]}), not objects. {expected}"
    keys = sorted({k for r in dicts[:50] for k in r})
    other = next((s for s in STAGES if s != stage and _votes(s, dicts[:50])), None)
    hint = f" These fields look like data for stage {other}; choose that stage if that is the plan." if other else ""
    return None, (
        f"no {stage} layout found: the rows have fields {', '.join(keys)}; {stage} needs one of: "
        f"{describe(stage)}. Rename the columns to match.{hint}"
    )


def _votes(stage: str, records: list) -> dict:
    votes = {}
    for record in records:
        if isinstance(record, dict):
            match = next((lay for lay in LAYOUTS[stage] if set(lay.fields) <= set(record)), None)
            if match:
                votes[match] = votes.get(match, 0) + 1
    return votes


def _text(record, name, allow_empty=False):
    """(value, problem) for a field that must hold text."""
    value = record.get(name)
    if isinstance(value, str):
        if not value.strip() and not allow_empty:
            return None, f"field '{name}' is empty. Write the text, or delete the row."
        return value, None
    kind = {
        type(None): "null (no value)",
        bool: "true/false",
        int: f"a number ({value})",
        float: f"a number ({value})",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
    return None, f"field '{name}' is {kind}, not text. Put the value in quotes as a string."


def _chat(record, name, position):
    """(messages, problem). position: conversation (ends with assistant) | prompt (ends with user) | reply."""
    value = record.get(name)
    if isinstance(value, str) and value.lstrip().startswith("["):  # CSV cells hold chats as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, f"field '{name}' looks like a JSON list of turns but is not valid JSON."
    if not isinstance(value, list) or not value:
        return None, (f'field \'{name}\' must be a non-empty list of turns like {{"role": "user", "content": "..."}}.')
    messages = []
    for number, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            return None, f"field '{name}' turn {number} needs 'role' and 'content'."
        role = turn["role"]
        if role not in ROLES:
            return None, f"field '{name}' turn {number} has role '{role}'; roles must be {', '.join(ROLES)}."
        if not isinstance(turn["content"], str) or not turn["content"].strip():
            return None, f"field '{name}' turn {number} ({role}) has no text in 'content'."
        messages.append({"role": role, "content": turn["content"]})
    last = messages[-1]["role"]
    if position == "conversation" and last != "assistant":
        return None, (
            f"field '{name}' ends with a '{last}' turn; the last turn must be the assistant's reply, "
            "which is what the model learns."
        )
    if position == "prompt" and last == "assistant":
        return None, f"field '{name}' (the prompt) ends with an assistant turn; it should end with the user's turn."
    if position == "reply" and any(m["role"] != "assistant" for m in messages):
        return None, f"field '{name}' must hold only assistant turns (the answer), not the prompt."
    return messages, None


def _either(record, name, position):
    value = record.get(name)
    if isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("[{")):
        return _chat(record, name, position)
    text, problem = _text(record, name)
    role = "assistant" if position == "reply" else "user"
    return ([{"role": role, "content": text}] if text is not None else None), problem


def convert_row(layout: Layout, record: dict, stage: str) -> tuple:
    """(problems, row in the standard layout). Problems are sentences naming the field."""
    missing = [f for f in layout.fields if f not in record]
    if missing:
        return [
            f"missing field {', '.join(repr(m) for m in missing)}: the file's other rows use the {layout.name} "
            "layout. Add the field, or delete the row."
        ], None
    kind, f = layout.kind, layout.fields
    if kind == "text":
        text, problem = _text(record, f[0])
        return ([problem], None) if problem else ([], {"text": text})
    if kind in ("messages", "sharegpt"):
        turns = record[f[0]]
        if kind == "sharegpt" and isinstance(turns, list):
            turns = [
                {"role": SHAREGPT_ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")}
                if isinstance(t, dict)
                else t
                for t in turns
            ]
        messages, problem = _chat({f[0]: turns}, f[0], "conversation")
        return ([problem], None) if problem else ([], {"messages": messages})
    if kind in ("pair", "alpaca"):
        prompt, p1 = _either(record, f[0], "prompt")
        extra, p2 = _text(record, "input", allow_empty=True) if kind == "alpaca" else ("", None)
        completion, p3 = _either(record, f[-1], "reply")
        problems = [p for p in (p1, p2, p3) if p]
        if problems:
            return problems, None
        if extra.strip():
            prompt = [{"role": "user", "content": prompt[-1]["content"] + "\n\n" + extra}]
        return [], {"prompt": prompt, "completion": completion}
    if kind == "pref":
        prompt, p1 = _either(record, f[0], "prompt")
        chosen, p2 = _either(record, "chosen", "reply")
        rejected, p3 = _either(record, "rejected", "reply")
        problems = [p for p in (p1, p2, p3) if p]
        if not problems and chosen == rejected:
            problems = [
                "'chosen' and 'rejected' are identical, so the pair teaches nothing. Write a worse answer "
                "in 'rejected', or delete the row."
            ]
        return (problems, None) if problems else ([], {"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if kind == "implicit":
        chosen, p1 = _chat(record, "chosen", "conversation")
        rejected, p2 = _chat(record, "rejected", "conversation")
        if p1 or p2:
            return [p for p in (p1, p2) if p] + [
                "(without a 'prompt' field, chosen and rejected must be full chats that share the prompt turns)"
            ], None
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0 or chosen[n:] == rejected[n:]:
            return [
                "'chosen' and 'rejected' must share the prompt turns and differ in the answer; add a 'prompt' "
                "field or fix the chats."
            ], None
        return [], {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    prompt, problem = _either(record, f[0], "prompt")  # rl: keep other columns for reward functions
    if problem:
        return [problem], None
    return [], {**{k: v for k, v in record.items() if k != f[0]}, "prompt": prompt}
