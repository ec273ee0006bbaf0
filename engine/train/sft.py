"""Supervised fine-tuning (TRL SFTTrainer): teach a skill or an output format from input -> output examples.

    python -m engine.train --stage sft --method lora --max-steps 100 --output-dir runs/sft-demo

The loss counts only the completion (the assistant's answer) for prompt/completion and chat data: the model is
taught to answer, not to repeat the question (TRL's completion_only_loss, on by default for these layouts).
On a GPU, batches are padding-free (engine/train/fast.py): no compute on pad tokens. `extra: {padding_free: false}`
turns that off, `true` forces it (the CPU then runs an exact but slower per-example attention).
"""

from pathlib import Path

from engine.spec import RunSpec
from engine.train import common, fast, kernels
from engine.train.defaults import trl_config


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    device, dtype, precision = common.device_and_dtype()
    train_rows, eval_rows = common.load_splits(spec)
    model_path = common.base_model_path(spec, run_dir)
    tokenizer = common.load_tokenizer(model_path)
    common.check_host_memory(spec, model_path, device, train_rows, tokenizer)
    common.decide_compile(spec, model_path, device, train_rows, tokenizer)
    common.decide_grad_ckpt(spec, model_path, device)
    padding_free = fast.choose(spec, device, model_path, on_cpu=True)
    share = padding_free and device == "cpu"  # the CPU's attention loop can let examples see a shared prefix
    kwargs = common.model_kwargs(spec, dtype)
    if padding_free:
        kwargs["attn_implementation"] = fast.register()
        print(
            "batches: padding-free (each batch is one row of whole examples; varlen attention"
            + ("; a prompt prefix every example shares is computed once" if share else "")
            + ")",
            flush=True,
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    kernels.apply(model, spec, device)  # CUDA only: Liger's kernels, torch.compile (engine/train/kernels.py)
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=bool(eval_rows))
    config = trl_config(SFTConfig, "sft", {**shared, "max_length": spec.max_length}, spec.extra)
    trainer = SFTTrainer(
        model=model,
        args=config,
        processing_class=tokenizer,
        peft_config=common.lora_config(spec),
        data_collator=fast.collator(tokenizer, shared_prefix=share) if padding_free else None,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=[common.run_dir_callback(run_dir, common.mfu_basis(spec, model_path))],
    )
    fast.adapter_inputs_in_compute_dtype(trainer, spec, precision)
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
