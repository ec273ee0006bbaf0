"""Writes the bundled datasets. Deterministic: the same files every run (random.Random(0), no clock, no network).

    .venv/bin/python engine/assets/datasets/make_datasets.py      # rewrites every *.jsonl next to this file

task_api/    SFT, the lesson's Task API example: a natural request to create a task -> exactly the compact JSON
             {"title": ..., "priority": ..., "status": ...} (json.dumps, keys in that order). Titles are composed from
             a verb, an object and an optional qualifier (~40 x ~90 x ~25 combinations); each title is used once, so
             no title is shared between train and test. Requests are composed from independent parts (politeness
             opener, creation verb, priority wording at the start / middle / end / absent, status wording, closing),
             so there are thousands of distinct phrasings rather than a handful of templates. No priority word ->
             "medium"; no status word -> "pending".
task_preferences/  DPO and reward model: the same kind of request as prompt, chosen = the exact JSON, rejected = a
             plausible worse answer, one of eight mistakes a small model really makes (wrong priority, wrong status,
             title truncated or paraphrased, prose instead of JSON, a missing key, markdown-fenced JSON, a renamed
             key, a Python dict with single quotes). Titles come from the part of the pool SFT does not use.
task_prompts/ RL (GRPO): requests only, from titles neither SFT nor the preference set use; `expected` holds the
             correct JSON so a reward function can score answers (TRL passes extra columns to reward functions).
pretrain_text/  continued pretraining: paragraphs about task management composed from hand-written sentences
             (corpus_parts.py): 3-5 sentences of one topic in shuffled order, plus a worked example that uses a
             task title and its JSON record.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SFT_TRAIN, SFT_TEST = 2400, 240
PREF_TRAIN, PREF_TEST = 1200, 150
RL_TRAIN, RL_TEST = 1000, 100
PT_TRAIN, PT_TEST = 600, 60

# ---- titles: verb + object + qualifier -------------------------------------------------------------------------
VERBS = [
    "Review",
    "Update",
    "Draft",
    "Prepare",
    "Fix",
    "Schedule",
    "Email",
    "Call",
    "Book",
    "Renew",
    "Submit",
    "Clean up",
    "Plan",
    "Organize",
    "Finalize",
    "Test",
    "Deploy",
    "Write",
    "Order",
    "Pay",
    "Cancel",
    "Migrate",
    "Refactor",
    "Research",
    "Compare",
    "Back up",
    "Archive",
    "Proofread",
    "Translate",
    "Print",
    "Sign",
    "Approve",
    "Reconcile",
    "Audit",
    "Share",
    "Present",
    "Collect",
    "Confirm",
    "Set up",
    "Follow up on",
]
OBJECTS = [
    "Q4 budget",
    "Q1 roadmap",
    "the onboarding docs",
    "vendor contract",
    "marketing plan",
    "sprint backlog",
    "login bug",
    "release notes",
    "team offsite",
    "insurance policy",
    "expense report",
    "tax return",
    "client proposal",
    "website copy",
    "API documentation",
    "database schema",
    "CI pipeline",
    "holiday schedule",
    "board slides",
    "hiring plan",
    "job description",
    "performance reviews",
    "customer survey",
    "support tickets",
    "invoice #4411",
    "invoice #2087",
    "office lease",
    "laptop order",
    "conference talk",
    "travel itinerary",
    "dentist appointment",
    "car service",
    "gym membership",
    "rent payment",
    "grocery list",
    "birthday gift for Mom",
    "wedding RSVP",
    "passport renewal",
    "security audit",
    "password rotation",
    "SSL certificate",
    "server logs",
    "analytics dashboard",
    "pricing page",
    "newsletter",
    "blog post",
    "podcast episode",
    "demo video",
    "user interviews",
    "design mockups",
    "style guide",
    "test plan",
    "load tests",
    "mobile app build",
    "payment gateway",
    "refund requests",
    "shipping labels",
    "inventory count",
    "supplier quotes",
    "training materials",
    "safety checklist",
    "meeting notes",
    "project charter",
    "risk register",
    "stakeholder update",
    "weekly report",
    "monthly metrics",
    "annual report",
    "grant application",
    "research paper",
    "literature review",
    "lab results",
    "data export",
    "backup script",
    "README",
    "changelog",
    "license review",
    "legal memo",
    "NDA",
    "partnership deck",
    "sales forecast",
    "lead list",
    "CRM cleanup",
    "quarterly OKRs",
    "team retro",
    "1:1 agenda",
    "podcast guests",
    "kitchen repairs",
    "garden plan",
    "photo album",
    "recipe book",
]
QUALIFIERS = [
    "",
    "",
    "",
    "",
    "",
    "for the board meeting",
    "with Sarah",
    "with the design team",
    "for Acme Corp",
    "before the launch",
    "for next sprint",
    "with legal",
    "for the Berlin office",
    "for the new hire",
    "with finance",
    "for Monday's standup",
    "with the client",
    "for the v2 release",
    "with Priya",
    "for the audit",
    "with marketing",
    "for the conference",
    "with Tom",
    "for the family",
    "for the school trip",
]

# ---- priority wording: (words, value), placed at the start, in the middle (before "task") or at the end ------
PRIORITY_START = {
    "high": ["Urgent:", "ASAP:", "P1:", "High priority:", "Top priority -", "Critical:", "Important:", "URGENT -"],
    "medium": ["Medium priority:", "P2:", "Normal priority:", "Moderate priority -"],
    "low": ["Low priority:", "Whenever:", "P3:", "Low-key:", "No rush -", "Someday:"],
}
PRIORITY_MIDDLE = {
    "high": ["high priority", "urgent", "P1", "top-priority", "critical", "high-priority"],
    "medium": ["medium priority", "normal-priority", "P2", "medium-priority", "moderate"],
    "low": ["low priority", "low-key", "P3", "low-priority", "minor"],
}
PRIORITY_END = {
    "high": [
        ", it's urgent",
        " asap",
        " (P1)",
        ", high priority",
        " - this is critical",
        ", needs to happen today",
        ". Top priority.",
        ", mark it high",
    ],
    "medium": [", medium priority", " (P2)", ", normal priority", ". Medium importance.", ", mark it medium"],
    "low": [
        ", no rush",
        " whenever you can",
        ", low priority",
        " (P3)",
        ", low-key",
        ". It can wait.",
        ", mark it low",
        ", whenever",
    ],
}

OPENERS = ["", "", "", "Please ", "Hey, ", "Could you ", "Can you ", "Hi! ", "Quick one: ", "I need you to "]
CLOSERS = ["", "", "", "", ".", " please", ", thanks", " Thanks!", " please and thank you"]
CREATE = ["create", "add", "make", "set up", "put in", "log", "open", "enter", "record", "file"]
NOUN = ["task", "todo", "to-do", "item", "ticket", "reminder"]


def make_titles(rng: random.Random) -> list[str]:
    titles = sorted({" ".join(p for p in (v, o, q) if p) for v in VERBS for o in OBJECTS for q in QUALIFIERS})
    rng.shuffle(titles)
    return titles


def as_phrase(title: str, rng: random.Random) -> str:
    """The title as it sits inside a sentence: sometimes lower-cased first letter, sometimes quoted."""
    text = title[0].lower() + title[1:] if rng.random() < 0.4 and not title[:2].isupper() else title
    quote = rng.choice(["", "", "", "'", '"'])
    return f"{quote}{text}{quote}"


def status_request(title: str, status: str, rng: random.Random) -> str:
    """Requests whose wording says the task has started or finished."""
    t = as_phrase(title, rng)
    if status == "done":
        forms = [
            f"Log that I already finished {t}",
            f"I finished {t} - record it as done",
            f"Add {t} and mark it done",
            f"Mark {t} as completed",
            f"Track {t}, it's already done",
            f"Record a completed task: {t}",
            f"{t} is done, please log it",
            f"Done: {t}",
        ]
    else:
        forms = [
            f"I'm already working on {t}, add it as in progress",
            f"Add {t} - status: in progress",
            f"Log {t} as in progress",
            f"Started on {t}, track it",
            f"Create a task {t} and mark it in progress",
            f"In progress: {t}",
            f"Track {t}; I've begun working on it",
            f"{t} is underway, add it",
        ]
    return rng.choice(forms)


def creation_request(title: str, priority: str | None, rng: random.Random) -> str:
    """A request to create a pending task; priority None means the request does not say (-> medium)."""
    t = as_phrase(title, rng)
    verb, noun = rng.choice(CREATE), rng.choice(NOUN)
    a_noun = ("an " if noun[0] in "aeiou" else "a ") + noun
    place = "none" if priority is None else rng.choice(["start", "middle", "end"])
    if place == "start":
        body = f"{rng.choice(PRIORITY_START[priority])} {rng.choice([t, f'{verb} {t}', f'{verb} {a_noun} to {t[0].lower() + t[1:]}'])}"  # noqa: E501
        return body + closer(body, rng)
    imperative, other = [], []  # imperative forms take any opener ("Could you add ..."), the others only neutral ones
    if place == "middle":
        adj = rng.choice(PRIORITY_MIDDLE[priority])
        article = "an" if adj[0].lower() in "aeiou" else "a"
        imperative = [
            f"{verb} {article} {adj} {noun}: {t}",
            f"{verb} {article} {adj} {noun} for {t}",
            f"{verb} {t} as {article} {adj} {noun}",
        ]
        other = [f"new {adj} {noun} - {t}", f"{adj} {noun}: {t}"]
    elif place == "end":
        end = rng.choice(PRIORITY_END[priority])
        imperative = [f"{verb} {t}{end}", f"{verb} {a_noun}: {t}{end}"]
        other = [f"new {noun}: {t}{end}", f"{noun} - {t}{end}"]
    else:
        low = t[0].lower() + t[1:]
        imperative = [
            f"{verb} {a_noun}: {t}",
            f"{verb} {a_noun} to {low}",
            f"remind me to {low}",
            f"{verb} {t} to my list",
        ]
        other = [f"new {noun}: {t}", f"I need to {low}, {verb} it", f"{noun}: {t}"]
    if rng.random() < len(imperative) / (len(imperative) + len(other)):
        opener, form = rng.choice(OPENERS), rng.choice(imperative)
    else:
        opener, form = rng.choice(["", "", "Hey, ", "Hi! ", "Quick one: "]), rng.choice(other)
    if not opener or opener.endswith(("! ", ": ")):
        form = form[0].upper() + form[1:]
    return opener + form + closer(form, rng)


def closer(text: str, rng: random.Random) -> str:
    return rng.choice(["", " Thanks!"]) if text.endswith(".") else rng.choice(CLOSERS)


def task_example(title: str, rng: random.Random) -> dict:
    status = rng.choices(["pending", "in_progress", "done"], weights=[80, 10, 10])[0]
    priority = rng.choices(["high", "medium", "low", None], weights=[30, 20, 25, 25])[0]
    if status == "pending":
        request = creation_request(title, priority, rng)
    else:
        # Status requests state the priority only at the end, so the priority wording cannot collide with "done".
        request = status_request(title, status, rng)
        if priority is not None:
            request += rng.choice(PRIORITY_END[priority])
    answer = {"title": title, "priority": priority or "medium", "status": status}
    return {"input": request, "output": json.dumps(answer)}


def worse_answer(answer: dict, rng: random.Random) -> str:
    """A plausible wrong answer to the same request: the mistakes a small model makes before it is tuned."""
    title, priority, status = answer["title"], answer["priority"], answer["status"]
    mistake = rng.choice(["priority", "status", "title", "prose", "missing", "fenced", "renamed", "python"])
    if mistake == "priority":
        return json.dumps({**answer, "priority": rng.choice([p for p in ("high", "medium", "low") if p != priority])})
    if mistake == "status":
        return json.dumps(
            {**answer, "status": rng.choice([s for s in ("pending", "in_progress", "done") if s != status])}
        )
    if mistake == "title":
        words = title.split()
        short = " ".join(words[: max(1, len(words) // 2)])
        wrong = rng.choice([short, title.lower(), f"Task: {title}", title.replace(words[0], "Do", 1)])
        return json.dumps({**answer, "title": wrong if wrong != title else short + "..."})
    if mistake == "prose":
        return rng.choice(
            [
                f'Sure! I\'ve created the task "{title}" with {priority} priority.',
                f"Done - {title} is on your list ({priority} priority, {status.replace('_', ' ')}).",
                f"OK, added {title}.",
            ]
        )
    if mistake == "missing":
        drop = rng.choice(["priority", "status"])
        return json.dumps({k: v for k, v in answer.items() if k != drop})
    if mistake == "fenced":
        return "```json\n" + json.dumps(answer, indent=2) + "\n```"
    if mistake == "renamed":
        return json.dumps({"name": title, "priority": priority, "status": status})
    return str(answer)  # Python's repr: single quotes, not JSON


def preference_pair(title: str, rng: random.Random) -> dict:
    example = task_example(title, rng)
    return {
        "prompt": example["input"],
        "chosen": example["output"],
        "rejected": worse_answer(json.loads(example["output"]), rng),
    }


def paragraph(titles: list[str], rng: random.Random) -> dict:
    from corpus_parts import CONNECTIVES, EXAMPLES, STATUS_WORDS, TOPICS

    topic = rng.choice(sorted(TOPICS))
    sentences = rng.sample(TOPICS[topic], rng.randint(3, min(5, len(TOPICS[topic]))))
    sentences = [(c + s[0].lower() + s[1:]) if c else s for s, c in ((s, rng.choice(CONNECTIVES)) for s in sentences)]
    example = task_example(rng.choice(titles), rng)
    answer = json.loads(example["output"])
    worked = rng.choice(EXAMPLES).format(
        title=answer["title"],
        priority=answer["priority"],
        json=example["output"],
        status_words=STATUS_WORDS[answer["status"]],
        request=example["input"],
    )
    sentences.insert(rng.randint(1, len(sentences)), worked)
    return {"text": " ".join(sentences)}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(0)
    titles = make_titles(rng)
    sft_titles, rest = titles[: SFT_TRAIN + SFT_TEST], titles[SFT_TRAIN + SFT_TEST :]
    sft = [task_example(t, rng) for t in sft_titles]
    write_jsonl(HERE / "task_api" / "train.jsonl", sft[:SFT_TRAIN])
    write_jsonl(HERE / "task_api" / "test.jsonl", sft[SFT_TRAIN:])
    n_pref = PREF_TRAIN + PREF_TEST
    pref = [preference_pair(t, rng) for t in rest[:n_pref]]
    write_jsonl(HERE / "task_preferences" / "train.jsonl", pref[:PREF_TRAIN])
    write_jsonl(HERE / "task_preferences" / "test.jsonl", pref[PREF_TRAIN:])
    prompts = [task_example(t, rng) for t in rest[n_pref : n_pref + RL_TRAIN + RL_TEST]]
    prompts = [{"prompt": e["input"], "expected": e["output"]} for e in prompts]
    write_jsonl(HERE / "task_prompts" / "train.jsonl", prompts[:RL_TRAIN])
    write_jsonl(HERE / "task_prompts" / "test.jsonl", prompts[RL_TRAIN:])
    # Worked examples in the corpus use SFT training titles only, so the SFT test split stays unseen.
    corpus = [paragraph(sft_titles[:SFT_TRAIN], rng) for _ in range(PT_TRAIN + PT_TEST)]
    write_jsonl(HERE / "pretrain_text" / "train.jsonl", corpus[:PT_TRAIN])
    write_jsonl(HERE / "pretrain_text" / "test.jsonl", corpus[PT_TRAIN:])


if __name__ == "__main__":
    main()
