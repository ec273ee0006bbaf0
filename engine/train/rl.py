"""RL (TRL GRPOTrainer): the policy writes several answers to each prompt, something scores them, and the policy is
pushed toward the answers that scored above their group's mean (GRPO, Shao et al. 2024; TRL 1.x has no PPO
trainer). What scores them is one of:
- checks that can be verified (`--reward checks.yaml` or a preset such as `task_api`; engine/checks.py): each
  check is one of GRPO's reward functions, and an answer's reward is the weighted share of checks it passes. The
  prompts must carry the reference answer (`expected`) where a check compares with it. No KL penalty by default
  (TRL's own beta 0.0, which suits rewards that cannot be gamed), so no reference model is held in memory.
- a reward model from `--stage rm` (the lesson's RLHF, sft -> rm -> rl: the policy starts from the SFT run, the
  reward model was trained on top of the same SFT run), with a KL penalty (beta 0.04), since a learned reward can be
  gamed.

    python -m engine.train --stage rl --method lora --init-from runs/sft-demo --reward task_api --output-dir runs/rl
    python -m engine.train --stage rl --method lora --init-from runs/sft-demo --reward-model runs/rm \
        --max-steps 50 --output-dir runs/rl

--batch counts answers, not prompts: each step samples batch / num_generations prompts. Logged per step: reward
(mean score of the sampled answers; with checks also rewards/<check>/mean), reward_std, completions/mean_length,
kl (distance from the starting policy). Defaults (answers per prompt, answer length, KL weight) are in
engine/train/defaults.py.
No held-out evaluation: it would mean generating for every held-out prompt, minutes on a CPU.
"""

from pathlib import Path

from engine import checks
from engine.spec import RunSpec, SpecError
from engine.train import common
from engine.train.defaults import STAGE_DEFAULTS, trl_config
from engine.train.loading import reward_model_path


def num_generations(spec: RunSpec) -> int:
    """GRPO needs whole groups in a batch: batch x accumulation x processes divisible by the group size."""
    if "num_generations" in spec.extra:
        return int(spec.extra["num_generations"])
    answers = spec.per_device_train_batch_size * spec.gradient_accumulation_steps * spec.num_processes
    for size in (STAGE_DEFAULTS["rl"]["num_generations"], 3, 2):
        if answers % size == 0:
            return size
    raise SpecError(
        f"RL samples at least 2 answers per prompt and compares them, but a step holds only {answers} "
        "answer(s). Raise --batch (or --grad-accum) to 2 or more."
    )


def reward_source(spec: RunSpec, run_dir: Path):
    """(the checks, None) or (None, the reward model's path); a sentence when neither or both are given."""
    given, model = spec.extra.get("reward_checks"), spec.extra.get("reward_model")
    if given and model:
        raise SpecError("RL got both checks (--reward) and a reward model (--reward-model); give one of them.")
    if given:
        try:
            return checks.load(given), None
        except checks.CheckError as e:
            raise SpecError(str(e)) from None
    return None, reward_model_path(model or "", run_dir)


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    # Wrong input (reward, data, --init-from) fails here, before the slow imports.
    by_checks, reward_path = reward_source(spec, run_dir)
    train_rows, _ = common.load_splits(spec)
    if by_checks and any(c.kind == "equal" for c in by_checks.checks) and not all("expected" in r for r in train_rows):
        raise SpecError(
            "The checks compare answers with a reference, but the prompts carry none: give every row an "
            "`expected` answer (as the bundled task_prompts set does), or use checks without `equal`."
        )
    model_path = common.base_model_path(spec, run_dir)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer

    device, dtype, precision = common.device_and_dtype()
    common.decide_grad_ckpt(spec, model_path, device)
    tokenizer = common.load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **common.model_kwargs(spec, dtype))
    common.record_versions(run_dir, device)
    shared = common.training_args(spec, run_dir, precision, has_eval=False)
    extra = {**spec.extra, "num_generations": num_generations(spec)}
    if by_checks:
        funcs = by_checks.reward_funcs()
        reward_args = {"reward_funcs": funcs, "reward_processing_classes": None}
        extra = {"beta": 0.0, **extra, "reward_weights": [f.weight for f in funcs]}
        print(f"rewards: the checks of {by_checks.source}: " + ", ".join(c.name for c in by_checks.checks), flush=True)
    else:
        reward_model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=dtype)
        reward_args = {"reward_funcs": reward_model, "reward_processing_classes": common.load_tokenizer(reward_path)}
    config = trl_config(GRPOConfig, "rl", shared, extra)
    trainer = GRPOTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        peft_config=common.lora_config(spec),
        train_dataset=Dataset.from_list(train_rows),
        callbacks=[common.run_dir_callback(run_dir)],
        **reward_args,
    )
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
