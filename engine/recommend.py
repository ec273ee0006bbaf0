"""The lesson's decision tree as pure functions: goals -> a pipeline of stages, hardware -> full / LoRA / QLoRA.

    python -m engine.recommend --goal capability --goal quality --gpu rtx-3060   # the lesson's Task API assistant
    python -m engine.recommend --goal knowledge --goal style --goal safety --json  # its customer-support chatbot
    python -m engine.recommend --goal safety --vram-gib 80

Source: shared/seeds/000_98f6475dc6ec4493.txt ("Training Taxonomy"); its texts live in assets/lesson.yaml.
Without --gpu / --vram-gib the plan is for this computer (engine.hardware.this_computer).
"""

import argparse
import functools
import json
import sys
from dataclasses import asdict, dataclass, field, replace

import yaml

from engine.hardware import Hardware, HardwareError, custom_gpu, preset_hardware, this_computer
from engine.paths import ASSETS
from engine.spec import RunSpec, default_learning_rate, default_lr_scheduler

METHOD_NAMES = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
STAGE_ORDER = ("pt", "sft", "dpo", "rm", "rl")  # a pipeline always runs in this order
RLHF_STAGES = ("rm", "rl")  # reward model, then RL against it: RLHF in place of DPO

# Memory per billion parameters for training, from the lesson's PEFT table for a 7B model (full "60+ GB",
# LoRA 16 GB, QLoRA 6 GB), scaled linearly. Short sequences, small batches; the Estimate page does it properly.
GIB_PER_BILLION = {"full": 60 / 7, "lora": 16 / 7, "qlora": 6 / 7}
MPS_USABLE_FRACTION = 0.75  # macOS lets the GPU take about 3/4 of unified memory by default

# The lesson's hardware branch has gaps (8-16, 24-48, 80+ GB); we cut between them, in GiB per GPU as NVML
# reports it (a "24 GB" L4 shows 22.5 GiB, an "80 GB" H100 79.6 GiB).
CONSUMER_BELOW_GIB = 20  # "Consumer GPU (8-16 GB) -> QLoRA"
PROFESSIONAL_BELOW_GIB = 70  # "Professional GPU (24-48 GB) -> LoRA or full fine-tuning"; above: any method


class RecommendError(ValueError):
    """A goal or option a person got wrong; the message lists the valid ones."""


@functools.lru_cache(maxsize=1)
def lesson() -> dict:
    return yaml.safe_load((ASSETS / "lesson.yaml").read_text())


def goal_keys() -> list[str]:
    return list(lesson()["goals"])


@dataclass
class StageData:
    stage: str
    min_examples: int
    max_examples: int
    unit: str
    note: str


@dataclass
class GoalAdvice:
    goal: str
    label: str
    primary: str  # as the lesson's matrix says it: "SFT", "DPO", "Pretraining"
    secondary: str  # "" | "DPO" | "RLHF" | "RAG" | "SFT"
    why: str


@dataclass
class MethodAdvice:
    peft: str  # full | lora | qlora
    tier: str  # consumer | professional | cloud | apple | cpu | unknown
    reasons: list[str]
    caveats: list[str]
    largest_model_b: dict[str, float | None]  # method -> rough largest model in billions; None = not offered here


@dataclass
class Recommendation:
    goals: list[str]
    pipeline: list[str]  # stage keys in order, e.g. ["sft", "dpo"]
    peft: str
    consider_rag: bool
    data: StageData  # the first stage's data: what to collect first
    data_by_stage: list[StageData]
    reasons: list[str]
    caveats: list[str]
    per_goal: list[GoalAdvice]
    alternatives: list[dict] = field(default_factory=list)  # {"pipeline": [...], "when": "..."}
    hardware: str = ""
    base_models: list[dict] = field(default_factory=list)  # base_models(): what to start from, and why

    def to_dict(self) -> dict:
        return asdict(self)


def largest_billions(capacity_gib: float, gpus: int = 1) -> dict[str, float]:
    """Method -> parameters (billions) of the largest catalog model the estimator fits in capacity_gib per GPU with
    one copy per GPU, at 2048 tokens x 1 with gradient checkpointing (the smallest run worth doing): the lesson's
    "largest model I could fine-tune", from the arithmetic rather than its 7B table scaled. 0 = none fits."""
    from engine import estimate

    req = estimate.EstimateRequest(seq=2048, batch=1, grad_ckpt=True, gpus=gpus)
    out = {}
    for method in GIB_PER_BILLION:
        name = estimate.largest_model(req, capacity_gib, method)
        out[method] = round(estimate._shape(name).params() / 1e9, 1) if name else 0.0
    return out


PERMISSIVE = ("Apache-2.0", "MIT")
PLAN_FOR_GIB = 24.0  # a base model is suggested for a 24 GB card until the Hardware page says otherwise
KIND_WHY = {
    "base": "a base model: right for continued pretraining and for teaching a format from a few "
    "thousand examples; it needs SFT before it chats",
    "instruct": "already follows instructions, so a narrow task or a preference stage needs fewer examples",
}
CPU_HOURS = 1.0  # on a processor, a suggested model trains the showcase-sized run within this (Hardware page's table)


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=1)  # the pages label every model of a list with it: read the file once
def model_notes() -> dict:
    """assets/model_notes.yaml: kind (base | instruct), licence and languages of each catalog model."""
    return yaml.safe_load((ASSETS / "model_notes.yaml").read_text())


def base_models(pipeline: list[str], hw: Hardware | None, method: str, seq: int = 1024) -> list[dict]:
    """Two or three catalog models to start from, with reasons: the lesson's Prompt 3. Each must fit the hardware
    with the method (the estimator at `seq` tokens, micro-batch 4, checkpointing, 10 % to spare). Chosen for the
    first stage: continued pretraining starts from a base model, preference stages from an instruct model, SFT from
    either (an instruct model already follows instructions, so a narrow task needs fewer examples). Ranked by a
    permissive licence first, then size: the largest that fits, then a small one for quick first runs, then
    another family. [{model, billions, kind, licence, languages, why}]"""
    from engine import catalog, estimate

    first = pipeline[0] if pipeline else "sft"
    wanted = "base" if first == "pt" else "instruct" if first in ("dpo", "rm", "rl") else None
    notes = model_notes()
    if hw is not None and hw.kind == "cpu":
        return on_a_processor(first, hw, method, wanted, notes)
    capacity = (hw.vram_gib if hw is not None else PLAN_FOR_GIB) * 0.9
    gpus = hw.count if hw is not None else 1
    fits = []
    for name in catalog.names():
        note = notes.get(name)
        if note is None or name == "HuggingFaceTB/SmolLM2-135M-Instruct":
            continue
        req = estimate.EstimateRequest(
            model=name, stage=first, method=method, seq=seq, batch=4, grad_ckpt=True, gpus=gpus
        )
        try:
            peak = estimate.peak_gib(req)
        except estimate.EstimateError:
            continue
        if peak <= capacity and (wanted is None or note["kind"] == wanted):
            fits.append((estimate._shape(name).params() / 1e9, name, note, peak))
    if not fits:
        return []
    fits.sort(key=lambda f: (f[2]["licence"] in PERMISSIVE, f[0]), reverse=True)
    picks = [fits[0]]
    small = [f for f in fits if f[0] <= picks[0][0] / 3 and f[0] >= 0.3]
    if small:
        picks.append(
            max(
                small,
                key=lambda f: (f[2]["licence"] in PERMISSIVE, f[1].split("/")[0] == fits[0][1].split("/")[0], f[0]),
            )
        )
    family = lambda f: f[1].split("/")[0]  # noqa: E731
    others = [f for f in fits if family(f) not in {family(p) for p in picks}]
    if others:
        picks.append(max(others, key=lambda f: f[0]))
    where = f"{hw.name}" + (f" × {hw.count}" if hw is not None and hw.count > 1 else "") if hw else "a 24 GB GPU"
    out, how = [], METHOD_NAMES[method].lower() if method == "full" else METHOD_NAMES[method]
    for i, (billions, name, note, peak) in enumerate(picks):
        role = (
            f"the largest that fits {where} with {how} ({peak:.0f} GiB at {seq} tokens x 4, checkpointing): the "
            "most capacity for the task"
            if i == 0
            else f"{billions:.1f}B: a quick first run to check the data and the settings before the large one"
            if picks[i] in small
            else "another family, to compare on your evaluation set"
        )
        why = f"{role[0].upper()}{role[1:]}; {KIND_WHY[note['kind']]}."
        out.append(
            _pick(
                name,
                billions,
                note,
                why + (f" {note['note'][0].upper()}{note['note'][1:]}." if note.get("note") else ""),
            )
        )
    return out


def _pick(name: str, billions: float, note: dict, why: str) -> dict:
    """One suggested base model, as the Goal page and the CLI show it."""
    licence = note["licence"] + ("" if note["licence"] in PERMISSIVE else " (read its terms before you ship)")
    return {
        "model": name,
        "billions": round(billions, 1),
        "kind": note["kind"],
        "licence": licence,
        "languages": note["languages"],
        "why": why,
    }


def on_a_processor(first: str, hw: Hardware, method: str, wanted: str | None, notes: dict) -> list[dict]:
    """base_models() on a computer without a GPU, where time, not memory, limits the model: the bundled model, and
    the largest catalog model whose showcase-sized run (engine.estimate.SHOWCASE_RUN: 100 steps of 8 short
    examples) fits the RAM and trains within CPU_HOURS. The rule of the Hardware page's table, for the first stage."""
    from engine import catalog, estimate

    gpu = estimate.gpu_from_hardware(hw)

    def minutes(name: str) -> float:
        return estimate.hours(replace(estimate.SHOWCASE_RUN, model=name, stage=first, method=method), gpu)[1] * 60

    out = [
        {
            "model": "embedded",
            "billions": 0.135,
            "kind": "instruct",
            "licence": "Apache-2.0",
            "languages": "English",
            "why": f"SmolLM2-135M-Instruct, bundled with the app: 100 steps of 8 short examples take about "
            f"{minutes('embedded'):.0f} min on this computer, so it is the one for a first run.",
        }
    ]
    fits = []
    for name in catalog.names():
        note = notes.get(name)
        if note is None or name.startswith("HuggingFaceTB/SmolLM2-135M") or wanted and note["kind"] != wanted:
            continue
        req = replace(estimate.SHOWCASE_RUN, model=name, stage=first, method=method)
        try:
            fit = estimate.peak_gib(req) <= hw.vram_gib and minutes(name) <= CPU_HOURS * 60
        except estimate.EstimateError:
            continue
        if fit:
            fits.append((estimate._shape(name).params() / 1e9, name, note))
    if fits:
        billions, name, note = max(fits)
        why = (
            f"The largest catalog model that trains the same 100 steps within an hour here (about "
            f"{minutes(name):.0f} min): more capacity, for a second run once the first one works; "
            f"{KIND_WHY[note['kind']]}."
        )
        out.append(_pick(name, billions, note, why))
    return out


def advise_method(hw: Hardware | None) -> MethodAdvice:
    """The lesson's hardware branch, with reasons. A rule of thumb; the Estimate page checks what really fits."""
    if hw is None:
        return MethodAdvice(
            "lora",
            "unknown",
            [
                "No hardware chosen yet, so we suggest LoRA: it runs on any GPU, "
                "an Apple Mac or a CPU. The Hardware page may change this."
            ],
            [],
            {m: None for m in GIB_PER_BILLION},
        )
    usable = hw.vram_gib * (MPS_USABLE_FRACTION if hw.kind == "mps" else 1.0)
    largest = largest_billions(usable, hw.count)
    caveats = []
    if hw.kind == "cpu":
        largest["qlora"] = None
        return MethodAdvice(
            "lora",
            "cpu",
            [
                "No GPU: training runs on the processor, which is 50-100x slower than a GPU. LoRA keeps the work "
                "small; expect only tiny models such as the bundled SmolLM2-135M to finish in minutes."
            ],
            [
                "QLoRA is not offered here: its 4-bit base (bitsandbytes) does run on a CPU, but each step takes "
                "~2.4x as long as LoRA's, and the memory it saves matters only on a GPU."
            ],
            largest,
        )
    if hw.kind == "mps":
        largest["qlora"] = None
        return MethodAdvice(
            "lora",
            "apple",
            [
                f"Apple GPU (MPS) with {hw.vram_gib:g} GiB unified memory, of which macOS lets the GPU use about "
                f"{usable:.0f} GiB. LoRA fits models up to about {largest['lora']:g}B."
            ],
            [
                "QLoRA is not available on a Mac: its 4-bit kernels (bitsandbytes) need an NVIDIA GPU.",
                "An Apple GPU is several times slower than a data-centre GPU; plan for long runs.",
            ],
            largest,
        )
    if not hw.bf16:
        caveats.append(
            "This GPU has no bfloat16 (compute capability below 8.0), so training uses fp16, which "
            "is less numerically stable. Watch the loss for spikes or NaN."
        )
    if hw.count > 1:
        caveats.append(
            f"{hw.count} GPUs train faster (each works on part of the data), but with one copy per GPU (DDP, "
            "the default) one GPU's memory decides which models fit; sharding them (FSDP) fits bigger ones."
        )
    if hw.vram_gib < CONSUMER_BELOW_GIB:
        if hw.vram_gib < 6:
            caveats.append(
                f"{hw.vram_gib:g} GiB is below the 6 GB the lesson quotes for QLoRA on a 7B model; "
                f"stay at or below about {largest['qlora']:g}B parameters."
            )
        return MethodAdvice(
            "qlora",
            "consumer",
            [
                f"{hw.vram_gib:g} GiB per GPU is consumer-GPU territory (8-16 GB), where the lesson recommends QLoRA: "
                "the base model is stored in 4 bits, so a 7B model trains in about 6 GB at ~93% of full quality."
            ],
            caveats,
            largest,
        )
    if hw.vram_gib < PROFESSIONAL_BELOW_GIB:
        return MethodAdvice(
            "lora",
            "professional",
            [
                f"{hw.vram_gib:g} GiB per GPU (24-48 GB: an RTX 4090 or 3090, or a cloud L4, A10G or L40S): LoRA "
                f"fits 7B-class models (about {largest['lora']:g}B at most) at ~95% of full quality, and full "
                f"fine-tuning fits small models (up to about {largest['full']:g}B). QLoRA reaches about "
                f"{largest['qlora']:g}B."
            ],
            caveats,
            largest,
        )
    return MethodAdvice(
        "lora",
        "cloud",
        [
            f"{hw.vram_gib:g} GiB per GPU: any method is viable. Full fine-tuning fits models up to about "
            f"{largest['full']:g}B; LoRA is still our default, since it keeps ~95% of the quality, trains about 2x "
            "faster and cannot make the base model forget (its weights stay frozen)."
        ],
        caveats,
        largest,
    )


def _stage_data(stage: str, goals: list[str]) -> StageData:
    """The stage's data range; when several goals need the stage, the most demanding one sets it."""
    default = lesson()["stages"][stage]
    ranges = [lesson()["goals"][g].get("data", {}).get(stage) for g in goals]
    ranges = [r for r in ranges if r] or [default["data"]]
    return StageData(stage, max(r[0] for r in ranges), max(r[1] for r in ranges), default["unit"], default["note"])


def recommend(goals: list[str], hardware: Hardware | None = None) -> Recommendation:
    """Goals (keys of lesson.yaml's `goals`) and optional hardware -> the pipeline, the method and why."""
    known = lesson()["goals"]
    unknown = [g for g in goals if g not in known]
    if unknown:
        raise RecommendError(f"Unknown goal(s) {', '.join(unknown)}. Valid goals: {', '.join(known)}.")
    if not goals:
        raise RecommendError(f"Choose at least one goal. Valid goals: {', '.join(known)}.")
    goals = list(dict.fromkeys(goals))
    info = {g: known[g] for g in goals}
    stages = {s for g in goals for s in info[g]["stages"]}
    pipeline = [s for s in STAGE_ORDER if s in stages]
    method = advise_method(hardware)
    consider_rag = any(i.get("consider_rag") for i in info.values())

    reasons = [i["why"] for i in info.values()]
    if len(pipeline) > 1:
        roles = [lesson()["stages"][s]["role"] for s in pipeline]
        reasons.append(
            "The stages run in order, each starting from the model the previous one produced: "
            + ", then ".join(roles)
            + "."
        )
    reasons += method.reasons
    caveats = list(method.caveats)
    if consider_rag:
        caveats.append(
            "Facts: fine-tuning teaches patterns better than facts. For exact, up-to-date answers, "
            "consider retrieval (RAG), instead of or alongside fine-tuning."
        )
    if "pt" in pipeline:
        caveats.append(
            "Pretraining is almost never needed; the lesson keeps it for labs building foundation "
            "models, genuinely new domains and under-served languages. Try SFT on a multilingual "
            "model first."
        )
    if "dpo" in pipeline and "sft" not in pipeline:
        caveats.append(
            "DPO starts from a model that already follows instructions (a chat or instruct model, "
            "like the bundled SmolLM2-135M-Instruct). Starting from a base model? Run supervised fine-tuning first."
        )
    if {"sft", "pt"} & set(pipeline):
        caveats.append(
            "Catastrophic forgetting: training on one task can make a model worse at others. "
            + (
                "Full fine-tuning changes every weight, so keep a mixed evaluation set and watch it; LoRA avoids "
                "this by leaving the base weights untouched."
                if method.peft == "full"
                else "LoRA and QLoRA limit this: the base weights stay frozen and only a small adapter learns."
            )
        )
    caveats.append(
        "Bigger is not automatically better: a well-tuned 7B model often beats a poorly tuned 70B one "
        "on a specific task. Match the model to the task and to your data."
    )

    alternatives = []
    if any(i.get("rlhf_alternative") for i in info.values()):
        rlhf = [s for s in pipeline if s != "dpo"] + list(RLHF_STAGES)
        alternatives.append(
            {
                "pipeline": rlhf,
                "when": "If DPO proves insufficient: RLHF trains a reward model "
                "on your preferences, then improves the model against it with RL. More powerful, "
                "but three models in memory, slower and less stable.",
            }
        )
    per_goal = [GoalAdvice(g, i["label"], i["primary"], i.get("secondary", ""), i["why"]) for g, i in info.items()]
    data_by_stage = [_stage_data(s, goals) for s in pipeline]
    return Recommendation(
        goals=goals,
        pipeline=pipeline,
        peft=method.peft,
        consider_rag=consider_rag,
        data=data_by_stage[0],
        data_by_stage=data_by_stage,
        reasons=reasons,
        caveats=caveats,
        per_goal=per_goal,
        alternatives=alternatives,
        hardware=hardware.name if hardware else "",
        base_models=base_models(pipeline, hardware, method.peft),
    )


def apply_to_spec(spec: RunSpec, **changes) -> RunSpec:
    """spec with `changes` (stage, method, num_processes...); a learning rate still at the old stage/method's
    default moves to the new one's, a rate the user chose stays."""
    if spec.learning_rate == default_learning_rate(spec.stage, spec.method, spec.model_name_or_path):
        changes.setdefault("learning_rate", 0.0)  # 0 = RunSpec picks the default for the new stage and method
    if spec.lr_scheduler_type == default_lr_scheduler(spec.stage, spec.method, spec.model_name_or_path):
        changes.setdefault("lr_scheduler_type", "")  # likewise for the schedule
    return replace(spec, **changes)


def compare_dataset(guidance: StageData, n_examples: int) -> tuple[str, str]:
    """('low' | 'ok' | 'high', a sentence) for a dataset of n_examples against a stage's range."""
    lo, hi, unit = guidance.min_examples, guidance.max_examples, guidance.unit.split(" (")[0]
    if n_examples < lo:
        return "low", (
            f"You have {n_examples:,} {unit}; this usually needs at least {lo:,}. Collect more, or "
            "expect a weaker result (a first small run is still a good test)."
        )
    if n_examples > hi:
        return "high", (
            f"You have {n_examples:,} {unit}, more than the usual {hi:,}. That works but costs time; "
            "try a clean subset first, quality beats quantity."
        )
    return "ok", f"You have {n_examples:,} {unit}, inside the usual {lo:,}-{hi:,}."


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.recommend", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--goal",
        action="append",
        default=[],
        metavar="GOAL",
        help="what you need (repeat for several): " + ", ".join(goal_keys()),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpu", metavar="PRESET", help="plan for a preset from engine/assets/gpus.yaml")
    where.add_argument("--vram-gib", type=float, metavar="N", help="plan for an NVIDIA GPU with N GiB")
    parser.add_argument("--gpus", type=int, default=1, metavar="N", help="how many such GPUs (default 1)")
    parser.add_argument("--examples", type=int, metavar="N", help="how many examples you have, to compare")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        if args.gpu:
            hw = preset_hardware(args.gpu, args.gpus)
        elif args.vram_gib is not None:
            hw = custom_gpu(args.vram_gib, args.gpus)
        else:
            hw = this_computer()
        rec = recommend(args.goal, hw)
    except (RecommendError, HardwareError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = rec.to_dict()
    if args.examples is not None:
        out["dataset_check"] = compare_dataset(rec.data, args.examples)[1]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"Pipeline: {' -> '.join(rec.pipeline)}   method: {rec.peft}   on: {rec.hardware}")
    for d in rec.data_by_stage:
        print(f"Data for {d.stage}: {d.min_examples:,}-{d.max_examples:,} {d.unit}")
    if "dataset_check" in out:
        print(out["dataset_check"])
    print("Why:", *[f"  - {r}" for r in rec.reasons], sep="\n")
    print("Watch out:", *[f"  - {c}" for c in rec.caveats], sep="\n")
    for alt in rec.alternatives:
        print(f"Alternative: {' -> '.join(alt['pipeline'])}. {alt['when']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
