"""Supervised fine-tuning (TRL SFTTrainer): teach a skill or an output format from input -> output examples.

    python -m engine.train --stage sft --method lora --max-steps 100 --output-dir runs/sft-demo

The loss counts only the completion (the assistant's answer) for prompt/completion and chat data: the model is
taught to answer, not to repeat the question (TRL's completion_only_loss, on by default for these layouts).
"""
from pathlib import Path

from engine.spec import RunSpec
from engine.train import common
from engine.train.defaults import trl_config


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    device, dtype, precision = common.device_and_dtype()
    train_rows, eval_rows = common.load_splits(spec)
    model_path = common.base_model_path(spec, run_dir)
    tokenizer = common.load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **common.model_kwargs(spec, dtype))
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=bool(eval_rows))
    config = trl_config(SFTConfig, "sft", {**shared, "max_length": spec.max_length}, spec.extra)
    trainer = SFTTrainer(
        model=model, args=config, processing_class=tokenizer, peft_config=common.lora_config(spec),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=[common.run_dir_callback(run_dir)])
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
