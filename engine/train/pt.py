"""Continued pretraining (TRL SFTTrainer on raw text): more of the same next-token prediction the base model was
built with, on your own corpus, so it picks up a domain's vocabulary and facts before any instruction tuning.

    python -m engine.train --stage pt --method lora --max-steps 100 --output-dir runs/pt-demo
    python -m engine.train --stage pt --dataset notes.txt --method full --output-dir runs/pt-notes

The loss counts every token (a `text` dataset has no prompt to mask). The corpus is joined and cut into blocks of
--seq tokens (packing, see engine/train/defaults.py), so no step is spent on padding.
"""

from pathlib import Path

from engine.spec import RunSpec
from engine.train import common, fast
from engine.train.defaults import trl_config


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    train_rows, eval_rows = common.load_splits(spec)  # a bad file or --init-from fails before the slow imports
    model_path = common.base_model_path(spec, run_dir)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    device, dtype, precision = common.device_and_dtype()
    tokenizer = common.load_tokenizer(model_path)
    common.check_host_memory(spec, model_path, device, train_rows, tokenizer)
    common.decide_grad_ckpt(spec, model_path, device)
    model = AutoModelForCausalLM.from_pretrained(model_path, **common.model_kwargs(spec, dtype))
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=bool(eval_rows))
    config = trl_config(
        SFTConfig, "pt", {**shared, "max_length": spec.max_length, "dataset_text_field": "text"}, spec.extra
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        peft_config=common.lora_config(spec),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=[common.run_dir_callback(run_dir, common.mfu_basis(spec, model_path))],
    )
    fast.adapter_inputs_in_compute_dtype(trainer, spec, precision)
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
