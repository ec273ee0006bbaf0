"""RL against a reward model (TRL GRPOTrainer): the second half of RLHF. The policy writes several answers to each
prompt, the reward model from `--stage rm` scores them, and the policy is pushed toward the answers that scored
above their group's mean (GRPO, Shao et al. 2024; TRL 1.x has no PPO trainer). The lesson's pipeline is
sft -> rm -> rl: the policy starts from the SFT run, the reward model was trained on top of the same SFT run.

    python -m engine.train --stage rl --method lora --init-from runs/sft-demo --reward-model runs/rm \
        --max-steps 50 --output-dir runs/rl

--batch counts answers, not prompts: each step samples batch / num_generations prompts. Logged per step: reward
(mean reward-model score of the sampled answers), reward_std, completions/mean_length, kl (distance from the
starting policy). Defaults (answers per prompt, answer length, KL weight) are in engine/train/defaults.py.
No held-out evaluation: it would mean generating for every held-out prompt, minutes on a CPU.
"""
from pathlib import Path

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
    raise SpecError(f"RL samples at least 2 answers per prompt and compares them, but a step holds only {answers} "
                    "answer(s). Raise --batch (or --grad-accum) to 2 or more.")


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    # Wrong input (reward model, data, --init-from) fails here, before the slow imports.
    reward_path = reward_model_path(spec.extra.get("reward_model", ""), run_dir)
    train_rows, _ = common.load_splits(spec)
    model_path = common.base_model_path(spec, run_dir)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer

    device, dtype, precision = common.device_and_dtype()
    common.decide_grad_ckpt(spec, model_path, device)
    tokenizer = common.load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **common.model_kwargs(spec, dtype))
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=dtype)
    reward_tokenizer = common.load_tokenizer(reward_path)
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=False)
    config = trl_config(GRPOConfig, "rl", shared, {**spec.extra, "num_generations": num_generations(spec)})
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_model, args=config, processing_class=tokenizer,
        reward_processing_classes=reward_tokenizer, peft_config=common.lora_config(spec),
        train_dataset=Dataset.from_list(train_rows), callbacks=[common.run_dir_callback(run_dir)])
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
