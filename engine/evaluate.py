"""Measure a finished run against the model it started from, on held-out rows the run never trained on.

    python -m engine.evaluate RUN_DIR                  # prints a table and writes RUN_DIR/eval.json
    python -m engine.evaluate RUN_DIR --json --limit 60

What is measured (base = the model the run started from; fine-tuned = the run's final/):
    pt, sft, dpo   held-out loss and perplexity of the reference text (sft: the answer only, as the trainer counts it)
    checks         share of greedy answers passing each check (engine/checks.py): --checks FILE, else the run's RL
                   reward checks, else for Task API data the task_api preset (valid JSON, exactly title/priority/
                   status, priority, status and title right: the seed's showcase)
    dpo            preference accuracy: the model gives the chosen answer a higher log-likelihood than the rejected
                   one; and DPO's implicit reward accuracy, beta*(log p_tuned - log p_base), chosen vs rejected
    rm             preference accuracy from the reward model's scores (a base model has no reward head)
    rl             mean reward before and after: the checks, and the run's own reward model (both on
                   prompts that carry an `expected` answer, as the bundled set does)
Held-out rows: the stage's bundled test split, or the last 5 % of a user's file (as the trainer holds them out).
Exit codes: 0 measured; 2 the run cannot be evaluated (running, failed, stopped, no final/); 1 unexpected failure.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from engine import access, data, taskapi, users
from engine import checks as checks_module
from engine.generate import ResultError, finished_run
from engine.runs import sidejobs

EXAMPLES = 5  # answers kept in eval.json for the page to show


def held_out(spec, limit: int | None) -> tuple[list[dict], str]:
    if not spec.dataset_name:
        path = data.bundled(spec.stage, "test")
        rows, about = data.load_for_stage(path, spec.stage), f"bundled {path.parent.name} test split"
    else:
        from engine.train.common import load_splits

        rows, about = load_splits(spec)[1], f"last rows of {Path(spec.dataset_name).name} (held out by the trainer)"
    rows = rows[:limit] if limit else rows
    return rows, f"{about}, {len(rows)} rows"


def _text(value) -> str:
    return value[-1]["content"] if isinstance(value, list) else str(value)


def _target(row: dict, stage: str) -> tuple[list | None, list | str] | None:
    """(prompt messages or None, completion messages or raw text) whose loss we measure, or None."""
    if "text" in row:
        return None, row["text"]
    if "messages" in row:
        return row["messages"][:-1], row["messages"][-1:]
    if "completion" in row:
        return row["prompt"], row["completion"]
    if "chosen" in row:
        return row["prompt"], row["chosen"]
    if "expected" in row:
        return row["prompt"], [{"role": "assistant", "content": row["expected"]}]
    return None


def sequence_logprobs(loaded, which: str, items: list, batch_size: int = 8) -> list[tuple[float, int]]:
    """(sum of log p, tokens) of each completion given its prompt; items are (prompt msgs | None, completion)."""
    import torch

    tok, seqs = loaded.tokenizer, []
    for prompt, completion in items:
        if prompt is None:
            ids = tok(completion, add_special_tokens=True)["input_ids"]
            seqs.append((ids, 1))
            continue
        full = tok(loaded.chat(prompt + completion, add_generation_prompt=False), add_special_tokens=False)
        start = len(tok(loaded.chat(prompt), add_special_tokens=False)["input_ids"])
        seqs.append((full["input_ids"], start))
    limit = min(loaded.context, 1024)
    out = []
    with loaded.model(which) as model, torch.inference_mode():
        for i in range(0, len(seqs), batch_size):
            chunk = [(ids[:limit], min(start, limit - 1)) for ids, start in seqs[i : i + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            pad = tok.pad_token_id
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk])
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in chunk])
            logp = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float(), -1)
            picked = logp.gather(-1, input_ids[:, 1:, None])[..., 0]
            for row, (ids, start) in enumerate(chunk):
                span = picked[row, max(start - 1, 0) : len(ids) - 1]
                out.append((float(span.sum()), int(span.numel())))
    return out


def _loss(pairs) -> float:
    return -sum(s for s, _ in pairs) / max(1, sum(n for _, n in pairs))


def measure(run_dir: Path, limit: int | None = None, checks_file: str | None = None) -> dict:
    spec, final = finished_run(run_dir, "evaluate")
    started = time.time()
    rows, about = held_out(spec, limit)
    result = {
        "run": Path(run_dir).name,
        "stage": spec.stage,
        "method": spec.method,
        "held_out": about,
        "rows": len(rows),
        "metrics": [],
        "not_measured": [],
        "examples": [],
    }
    if not rows:
        result["not_measured"].append(
            "Nothing: the data file has fewer than 100 rows, so the trainer held none "
            "out. Add rows, or evaluate on a separate file."
        )
        return result
    add = lambda name, base, tuned, kind: result["metrics"].append(  # noqa: E731
        {"metric": name, "base": base, "fine_tuned": tuned, "kind": kind}
    )
    if spec.stage == "rm":
        _reward_model(spec, run_dir, final, rows, add, result)
        result["seconds"] = round(time.time() - started, 1)
        return result

    from engine.generate import Loaded

    loaded = Loaded(run_dir)
    targets = [t for t in (_target(r, spec.stage) for r in rows) if t is not None]
    if targets:
        base, tuned = (_loss(sequence_logprobs(loaded, w, targets)) for w in ("base", "tuned"))
        add("held-out loss", base, tuned, "loss")
        add("perplexity", math.exp(min(base, 50)), math.exp(min(tuned, 50)), "perplexity")
    if spec.stage == "dpo":
        _preferences(loaded, rows, add)
    expected = [_text(r.get("completion") or r.get("expected") or r.get("chosen") or "") for r in rows]
    checks = answer_checks(spec, expected, checks_file)
    if checks is not None:
        prompts = [r["prompt"] if "prompt" in r else r["messages"][:-1] for r in rows]
        new = max(len(loaded.tokenizer(e)["input_ids"]) for e in expected) + 8  # room for the answer, no more
        new = max(new, 32) if not all(taskapi.is_task_answer(e) for e in expected) else new
        answers = {w: loaded.generate(prompts, w, max_new_tokens=new) for w in ("base", "tuned")}
        base, tuned = (checks.summarize(answers[w], expected) for w in ("base", "tuned"))
        for check in checks.checks:
            add(check.name, base[check.name], tuned[check.name], "share")
        result["checks"] = checks.source
        if spec.stage == "rl":
            add(
                "mean reward (the checks)",
                *(
                    sum(checks.reward(a, e) for a, e in zip(answers[w], expected)) / len(expected)
                    for w in ("base", "tuned")
                ),
                "reward",
            )
            if spec.extra.get("reward_model"):
                rm = _reward_scores(spec, Path(run_dir), prompts, answers)
                add("mean reward (the run's reward model)", rm["base"], rm["tuned"], "reward")
        result["examples"] = [
            {"prompt": _text(p), "expected": e, "base": b, "fine_tuned": t}
            for p, e, b, t in zip(prompts, expected, answers["base"], answers["tuned"])
        ][:EXAMPLES]
    elif spec.stage in ("sft", "rl"):
        result["not_measured"].append(
            "Answer accuracy: no checks are given for this data (its answers are not Task "
            "API JSON), so only the loss is measured. Pass --checks FILE (engine/checks.py) "
            "or compare answers by eye in the Playground."
        )
    if spec.stage == "rl" and not any(m["kind"] == "reward" for m in result["metrics"]):
        result["not_measured"].append(
            "Mean reward: the prompts carry no `expected` Task API answer, so the answers "
            "are not scored here; compare them in the Playground."
        )
    result["seconds"] = round(time.time() - started, 1)
    return result


def answer_checks(spec, expected: list[str], source: str | None = None):
    """The checks answers are scored with: --checks, else the run's RL reward checks, else the Task API preset when
    the expected answers have its shape; None when there is nothing to check against."""
    source = source or spec.extra.get("reward_checks")
    if source:
        return checks_module.load(source)
    if spec.stage in ("sft", "rl", "dpo") and expected and all(taskapi.is_task_answer(e) for e in expected):
        return taskapi.checks()
    return None


def _preferences(loaded, rows, add) -> None:
    chosen = [(r["prompt"], r["chosen"]) for r in rows]
    rejected = [(r["prompt"], r["rejected"]) for r in rows]
    logp = {
        (w, k): [s for s, _ in sequence_logprobs(loaded, w, items)]
        for w in ("base", "tuned")
        for k, items in (("c", chosen), ("r", rejected))
    }
    prefers = {w: sum(c > r for c, r in zip(logp[w, "c"], logp[w, "r"])) / len(rows) for w in ("base", "tuned")}
    add("prefers the chosen answer (log-likelihood)", prefers["base"], prefers["tuned"], "share")
    margins = [
        (tc - bc) - (tr - br)
        for tc, bc, tr, br in zip(logp["tuned", "c"], logp["base", "c"], logp["tuned", "r"], logp["base", "r"])
    ]
    add("implicit reward accuracy (DPO)", None, sum(m > 0 for m in margins) / len(rows), "share")


def _reward_model(spec, run_dir, final, rows, add, result) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.generate import base_path, set_threads

    set_threads()
    tok = AutoTokenizer.from_pretrained(final)
    tok.pad_token = tok.pad_token or tok.eos_token
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(base_path(spec, run_dir), num_labels=1)
        model = PeftModel.from_pretrained(base, str(final))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(final, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    scores = {}
    for key in ("chosen", "rejected"):
        texts = [tok.apply_chat_template(r["prompt"] + r[key], tokenize=False) for r in rows]
        values = []
        with torch.inference_mode():
            for i in range(0, len(texts), 8):
                enc = tok(texts[i : i + 8], return_tensors="pt", padding=True, truncation=True, max_length=1024)
                values += model(**enc).logits[:, 0].tolist()
        scores[key] = values
    accuracy = sum(c > r for c, r in zip(scores["chosen"], scores["rejected"])) / len(rows)
    add("preference accuracy (reward scores)", None, accuracy, "share")
    result["not_measured"].append(
        "Preference accuracy of the base model: a base model has no reward head, so "
        "there is nothing to compare with (chance is 50 %)."
    )


def _reward_scores(spec, run_dir: Path, prompts: list, answers: dict) -> dict:
    """Mean score the RL run's own reward model gives the base's and the fine-tuned model's answers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.train.loading import reward_model_path

    merged = run_dir / "reward_model"
    path = str(merged) if (merged / "config.json").is_file() else reward_model_path(spec.extra["reward_model"], run_dir)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id
    means = {}
    for which, texts in answers.items():
        chats = [
            tok.apply_chat_template(p + [{"role": "assistant", "content": a}], tokenize=False)
            for p, a in zip(prompts, texts)
        ]
        with torch.inference_mode():
            scores = [
                s
                for i in range(0, len(chats), 8)
                for s in model(
                    **tok(chats[i : i + 8], return_tensors="pt", padding=True, truncation=True, max_length=1024)
                )
                .logits[:, 0]
                .tolist()
            ]
        means[which] = sum(scores) / len(scores)
    return means


def write(run_dir: Path, result: dict) -> Path:
    target = Path(run_dir) / "eval.json"
    tmp = target.with_name(f".eval.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    os.replace(tmp, target)
    return target


def read(run_dir) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "eval.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def format_value(value, kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if kind == "share" else f"{value:.3f}" if kind in ("loss", "reward") else f"{value:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out rows (faster)")
    p.add_argument(
        "--checks",
        metavar="FILE",
        help="score the answers with these checks (a YAML check file or a "
        "preset: task_api; engine/checks.py); default: the run's reward checks, or task_api for its data",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be at least 1")
    try:
        actor = users.acting(a.acting)
        a.run_dir = access.check_run_dir(a.run_dir, actor)
        if a.checks:
            a.checks = access.check_checks(a.checks, actor)
            checks_module.load(a.checks)
        if actor.role != "owner":  # it writes eval.json into the run: a shared folder's run is not theirs to change
            access.confine(a.run_dir, actor, "run directory (the evaluation is written into it)", writable=True)
    except (access.AccessError, users.AuthError, checks_module.CheckError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with sidejobs.one_at_a_time(actor, f"an evaluation of {a.run_dir.name}"):
            result = measure(a.run_dir, a.limit, a.checks)
            write(a.run_dir, result)
    except (ResultError, sidejobs.Busy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  a sentence here, the traceback in RUN/eval.log
        with open(a.run_dir / "eval.log", "a") as log:
            traceback.print_exc(file=log)
        print(
            f"error: the evaluation failed ({type(e).__name__}: {e}). Details are in {a.run_dir / 'eval.log'}.",
            file=sys.stderr,
        )
        return 1
    if a.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"{result['run']} ({result['stage']}, {result['method']}) on {result['held_out']}")
    for m in result["metrics"]:
        print(
            f"  {m['metric']:<44} base {format_value(m['base'], m['kind']):>8}   "
            f"fine-tuned {format_value(m['fine_tuned'], m['kind']):>8}"
        )
    for line in result["not_measured"]:
        print(f"  not measured: {line}")
    print(f"  ({result.get('seconds', 0)} s; written to {a.run_dir / 'eval.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
