"""Reward model (TRL RewardTrainer): the first half of RLHF. A copy of the language model with a one-number
"score" head instead of the LM head, trained on preference pairs so the chosen answer scores higher than the
rejected one (Bradley-Terry loss). `--stage rl --reward-model RUN` then optimises a policy against it.

    python -m engine.train --stage rm --method lora --init-from runs/sft-demo --max-steps 100 --output-dir runs/rm

The score head starts random. With LoRA/QLoRA it is trained in full next to the adapter (PEFT's SEQ_CLS task
saves it with the adapter). Logged per step: accuracy (share of pairs scored the right way round), margin
(mean chosen - rejected score) and min/mean/max_reward.
"""

from pathlib import Path

from engine.spec import RunSpec, SpecError
from engine.train import common, fast
from engine.train.defaults import trl_config


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    train_rows, eval_rows = common.load_splits(spec)  # a bad file or --init-from fails before the slow imports
    model_path = common.base_model_path(spec, run_dir)
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    device, dtype, precision = common.device_and_dtype()
    tokenizer = common.load_tokenizer(model_path)
    common.check_host_memory(spec, model_path, device, train_rows, tokenizer)
    common.decide_grad_ckpt(spec, model_path, device)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=1, **common.model_kwargs(spec, dtype)
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=bool(eval_rows))
    config = trl_config(RewardConfig, "rm", {**shared, "max_length": spec.max_length}, spec.extra)
    trainer = RewardTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        peft_config=common.lora_config(spec, task_type="SEQ_CLS"),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=[common.run_dir_callback(run_dir)],
    )
    if len(trainer.train_dataset) == 0:  # TRL drops pairs longer than max_length rather than cutting them
        raise SpecError(
            f"All {len(train_rows)} preference pairs are longer than max_length={spec.max_length} "
            "tokens, and the reward trainer skips such pairs, so nothing is left to train on. Raise "
            "--seq (max length), or shorten the prompts and answers."
        )
    if spec.method == "qlora":
        # TRL stores QLoRA's trainable weights in bf16 (QLoRA paper). LoRA layers cast their input themselves; the
        # plain score head does not, and without autocast (CPU) float32 hidden states meet bf16 weights. float32
        # is also the better precision for a head that starts from random.
        for name, param in trainer.model.named_parameters():
            if param.requires_grad and "score" in name.split("."):
                param.data = param.data.float()
    fast.adapter_inputs_in_compute_dtype(trainer, spec, precision)
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
