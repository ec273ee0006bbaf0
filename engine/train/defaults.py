"""Stage-specific TRL settings in one place: what Tunewise sets on top of TRL's own defaults, and building a TRL
config from the shared TrainingArguments, these defaults and the user's `extra` (config.yaml `extra:`, TRL's own
field names, e.g. `extra: {beta: 0.2}` for DPO). Learning rates live in engine/spec.py (default_learning_rate).

Light on purpose (no torch): the estimator and the UI may read STAGE_DEFAULTS.
"""

from dataclasses import fields

from engine.spec import SpecError

STAGE_DEFAULTS = {
    "pt": {
        "packing": True,  # join the corpus and cut it into max_length blocks, GPT-style: no padding
        "packing_strategy": "wrapped",  # blocks cross paragraph ends as in pretraining; "bfd" needs FlashAttention
    },
    "sft": {},  # TRL's defaults: loss on the completion only for prompt/completion and chat
    "dpo": {
        "beta": 0.1,  # pull toward the reference model (DPO paper, TRL default); lower = bolder
    },
    "rm": {},  # TRL's Bradley-Terry loss on (chosen, rejected) scores
    "rl": {
        "num_generations": 4,  # answers sampled per prompt; GRPO rewards each against its group's mean
        "max_completion_length": 64,  # the bundled answers are ~30 tokens of JSON; TRL's 512 means minutes per
        # step on a CPU. Raise it for longer answers.
        "beta": 0.04,  # KL penalty toward the starting policy: a learned reward model can be
        # gamed (InstructGPT §3.5); TRL's own default 0.0 suits verifiable rewards
        "log_completions": False,  # True prints sampled answers with their rewards to train.log
    },
}

# `extra` keys Tunewise reads itself (rl: the rm run or the check file; sft: padding-free batches,
# engine/train/fast.py; GPU kernels, engine/train/kernels.py); not passed to TRL
TUNEWISE_EXTRA = ("reward_model", "reward_checks", "padding_free", "liger", "compile", "compile_4bit")


def trl_config(config_cls, stage: str, shared: dict, extra: dict):
    """config_cls(**shared, **STAGE_DEFAULTS[stage], **extra); the later ones win. A misspelt field or a
    combination TRL rejects becomes a SpecError naming it."""
    values = {**shared, **STAGE_DEFAULTS[stage], **{k: v for k, v in extra.items() if k not in TUNEWISE_EXTRA}}
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SpecError(
            f"extra setting(s) {', '.join(unknown)} are not fields of TRL's {config_cls.__name__}, "
            f"which {stage} uses. Check the spelling against the TRL documentation for "
            f"{config_cls.__name__}, or remove them from `extra:` in config.yaml."
        )
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as e:  # TRL's __post_init__ checks, e.g. batch size vs num_generations
        raise SpecError(f"TRL refused the {stage} settings: {e}") from None
