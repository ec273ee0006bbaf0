"""Teacher-forced priority accuracy of every checkpoint of a Task API run on the 240 held-out rows: the model is
given the request and the right answer up to `"priority": "` and we read which of high / medium / low it ranks
first. ~20 s a checkpoint on 2 CPU cores (generating the answers: ~90 s), and within 0.5 points of the generated
answers' priority accuracy; used to choose the CPU path's schedule and step count (see bench/showcase.py).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/priority_probe.py RUN_DIR
"""

import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LEVELS = ("high", "medium", "low")


def prompts(tokenizer) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (REPO / "engine/assets/datasets/task_api/test.jsonl").open()]
    texts, gold = [], []
    for row in rows:
        answer = json.loads(row["output"])
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["input"]}], tokenize=False, add_generation_prompt=True
        )
        texts.append(chat + '{"title": "%s", "priority": "' % answer["title"])
        gold.append(answer["priority"])
    return texts, gold


def main(run_dir: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine import models

    base_path = str(models.resolve("embedded"))
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    tokenizer.padding_side = "left"
    texts, gold = prompts(tokenizer)
    ids = {level: tokenizer(level, add_special_tokens=False)["input_ids"][0] for level in LEVELS}
    checkpoints = sorted(Path(run_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for checkpoint in checkpoints + [p for p in [Path(run_dir) / "final"] if p.is_dir()]:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
        right, mistakes = 0, Counter()
        with torch.inference_mode():
            for start in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[start : start + 32], return_tensors="pt", padding=True, add_special_tokens=False
                )
                logits = model(**batch).logits[:, -1, :]
                for row, expected in enumerate(gold[start : start + 32]):
                    guess = max(LEVELS, key=lambda level: logits[row, ids[level]].item())
                    right += guess == expected
                    if guess != expected:
                        mistakes[f"{expected}->{guess}"] += 1
        print(f"{checkpoint.name}: priority {right / len(texts):.1%}  mistakes {dict(mistakes)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
