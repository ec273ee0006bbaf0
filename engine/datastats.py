"""Token statistics for a data file: lengths, the share `max_length` truncates, and what counts toward the loss.

    python -m engine.data stats engine/assets/datasets/task_api/train.jsonl --stage sft --max-length 512 --json

Runs in a subprocess of the page (the UI process never loads a tokenizer). Fast path: the `tokenizers` library on
the model's tokenizer.json and jinja2 on its chat template, rendered the way transformers does
(`apply_chat_template`: sandboxed jinja, trim_blocks + lstrip_blocks) - about 0.3 s to start instead of ~8 s for
`AutoTokenizer`. A model directory without tokenizer.json falls back to `AutoTokenizer`.

The loss rule follows TRL's defaults, so the view shows what the trainer will do:
  sft prompt/completion  completion tokens only (SFTConfig.completion_only_loss=None -> on for this layout)
  sft messages           every token (assistant_only_loss=False by default; SmolLM2's template has no
                         {% generation %} markers, which assistant-only loss would need)
  dpo                    the chosen and rejected answers; the prompt is context
  rm                     the score is read at the last token of prompt + answer
  rl                     the prompt is context; the loss is on answers the model generates during training
  pt                     every token
"""

import json
from pathlib import Path

from engine.data import load_for_stage
from engine.datafile import DataError

MAX_SAMPLED = 5000  # rows tokenized for the histogram; evenly spaced, so a 100k file still answers in seconds
MASK_RULES = {
    "pt": "Every token counts toward the loss.",
    "sft/prompt": "Only the completion (the answer) counts toward the loss; the prompt is context.",
    "sft/messages": "Every token counts (TRL's default for chat data without assistant markers).",
    "dpo": "The chosen and rejected answers are compared; the prompt is context.",
    "rm": "The reward is read at the last token of prompt + answer.",
    "rl": "The prompt is context; the loss is on answers the model writes during training.",
}


class ChatTokenizer:
    """tokenizer.json + chat template, without transformers."""

    def __init__(self, tokenizer, template: str | None, specials: dict, where: str):
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not template:
            raise DataError(f"{where} has no chat template, so chat data cannot be rendered for it.")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(DataError(message))
        self.tokenizer, self.template = tokenizer, env.from_string(template)
        self.specials = {k: specials.get(k) or "" for k in ("bos_token", "eos_token")}

    @classmethod
    def from_dir(cls, model_dir: Path) -> "ChatTokenizer":
        from tokenizers import Tokenizer

        config = (
            json.loads((model_dir / "tokenizer_config.json").read_text())
            if (model_dir / "tokenizer_config.json").is_file()
            else {}
        )
        template = config.get("chat_template")
        if (model_dir / "chat_template.jinja").is_file():
            template = (model_dir / "chat_template.jinja").read_text()
        return cls(Tokenizer.from_file(str(model_dir / "tokenizer.json")), template, config, str(model_dir))

    @classmethod
    def from_transformers(cls, tok) -> "ChatTokenizer":
        """The trainer's own (fast) tokenizer, already loaded."""
        specials = {"bos_token": tok.bos_token, "eos_token": tok.eos_token}
        return cls(tok.backend_tokenizer, tok.chat_template, specials, tok.name_or_path)

    def render(self, messages: list, add_generation_prompt: bool = False) -> str:
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.specials)

    def encode(self, texts: list[str]) -> list:
        return self.tokenizer.encode_batch(texts, add_special_tokens=False)


def _load_tokenizer(model: str):
    from engine.models import EMBEDDED, embedded_dir, ensure_embedded

    directory = Path(model).expanduser() if model not in ("", EMBEDDED) else embedded_dir()
    if model in ("", EMBEDDED) and not (directory / "tokenizer.json").is_file():
        directory = ensure_embedded()  # converts once (~10-40 s), then cached
    if (directory / "tokenizer.json").is_file():
        return ChatTokenizer.from_dir(directory)
    raise DataError(f"{directory} has no tokenizer.json; token statistics need a fast tokenizer.")


def segments(row: dict, stage: str, tok: ChatTokenizer) -> tuple[str, list]:
    """(rule key, [(text, counts_toward_loss)]) for one row in the standard layout."""
    if stage == "pt":
        return "pt", [(row["text"] + tok.specials["eos_token"], True)]
    if "messages" in row:
        return "sft/messages", [(tok.render(row["messages"]), True)]
    prompt = tok.render(row["prompt"], add_generation_prompt=True)
    if stage == "rl":
        return "rl", [(prompt, False)]
    answer = row.get("completion") or row["chosen"]
    full = tok.render(row["prompt"] + answer)
    if not full.startswith(prompt):  # a template that rewrites earlier turns; show it whole
        return stage if stage != "sft" else "sft/prompt", [(full, True)]
    if stage == "rm":
        return "rm", [(full, False)]
    return ("sft/prompt" if stage == "sft" else "dpo"), [(prompt, False), (full[len(prompt) :], True)]


def _token_view(parts: list, tok: ChatTokenizer, stage: str) -> list:
    """[[token text, counts]] for the whole example, pieces cut from the rendered text by the token offsets."""
    text = "".join(t for t, _ in parts)
    encoding = tok.encode([text])[0]
    boundaries, at = [], 0
    for part, counts in parts:
        boundaries.append((at + len(part), counts))
        at += len(part)
    view = []
    for start, end in encoding.offsets:
        counts = next((c for b, c in boundaries if start < b), boundaries[-1][1])
        view.append([text[start:end], counts])
    if stage == "rm" and view:
        view[-1][1] = True
    return view


def evenly(rows: list) -> list:
    """At most MAX_SAMPLED rows, evenly spaced through the whole file (a stride of len // MAX_SAMPLED took only the
    first MAX_SAMPLED rows of a file of 5,000-9,999)."""
    n = min(len(rows), MAX_SAMPLED)
    return [rows[i * len(rows) // n] for i in range(n)]


def lengths_of(rows: list, stage: str, tok: ChatTokenizer, rendered: list | None = None) -> list[int]:
    """Each row's tokens as the trainer sees them before truncation (DPO: the prompt and the longer answer)."""
    rendered = rendered or [segments(row, stage, tok) for row in rows]
    lengths = [len(e.ids) for e in tok.encode(["".join(t for t, _ in parts) for _, parts in rendered])]
    if stage == "dpo":  # DPO truncates prompt + the longer answer; count the longer of the two
        alt = [segments({**row, "chosen": row["rejected"]}, stage, tok)[1] for row in rows]
        lengths = [max(a, len(e.ids)) for a, e in zip(lengths, tok.encode(["".join(t for t, _ in p) for p in alt]))]
    return lengths


def token_stats(path, stage: str, max_length: int = 512, n_examples: int = 3, model: str = "embedded") -> dict:
    try:
        rows = load_for_stage(path, stage)
        tok = _load_tokenizer(model)
    except DataError as e:
        return {"ok": False, "error": str(e)}
    sample = evenly(rows)
    rendered = [segments(row, stage, tok) for row in sample]
    lengths = lengths_of(sample, stage, tok, rendered)
    ordered = sorted(lengths)
    examples = [
        {"text": "".join(t for t, _ in parts), "tokens": _token_view(parts, tok, stage)}
        for _, parts in rendered[:n_examples]
    ]
    return {
        "ok": True,
        "stage": stage,
        "rows": len(rows),
        "sampled": len(sample),
        "max_length": max_length,
        "lengths": lengths,
        "truncated_share": sum(n > max_length for n in lengths) / len(lengths),
        "mean": sum(lengths) / len(lengths),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[int(len(ordered) * 0.95)],
        "max": ordered[-1],
        "total_tokens_estimate": round(sum(lengths) * len(rows) / len(sample)),
        "mask_rule": MASK_RULES[rendered[0][0]],
        "examples": examples,
    }


def mask_html(tokens: list, limit: int = 400) -> str:
    """Tokens as inline spans: green = counts toward the loss, grey = context. Pure, so the page stays thin."""
    import html

    spans = []
    for text, counts in tokens[:limit]:
        style = "background:#c8f7c5;color:#111" if counts else "background:#eeeeee;color:#666"
        shown = html.escape(text).replace("\n", "↵<br>")
        spans.append(f'<span style="{style};border-right:1px solid #fff;padding:1px 0">{shown}</span>')
    more = f" <i>… {len(tokens) - limit} more tokens</i>" if len(tokens) > limit else ""
    return (
        '<div style="font-family:monospace;font-size:0.85em;line-height:1.9;white-space:pre-wrap">'
        + "".join(spans)
        + more
        + "</div>"
    )
