"""Direct preference optimisation (TRL DPOTrainer): shape behaviour from pairs "this answer is better than that
one", without a separate reward model. Usually follows SFT.

    python -m engine.train --stage dpo --method lora --init-from runs/sft-demo --max-steps 100 --output-dir runs/dpo

The reference model (what the policy must not drift too far from, weighted by beta) is the starting model: with
LoRA/QLoRA, TRL computes it by switching the adapter off, so no second copy is loaded; with full fine-tuning it loads
a frozen copy (twice the weight memory). Logged per step: rewards/chosen, rewards/rejected, rewards/margins (how
much more the policy prefers the chosen answer than the reference does) and rewards/accuracies (share of pairs
where it prefers the chosen one).
On a GPU, the policy's and the reference's forward passes skip the padding (engine/train/fast.py,
`pack_padded_calls`); `extra: {padding_free: false}` turns that off.
"""

from pathlib import Path

from engine.spec import RunSpec
from engine.train import common, fast, kernels
from engine.train.defaults import trl_config


def main(spec: RunSpec, run_dir: Path, resume: bool) -> int:
    train_rows, eval_rows = common.load_splits(spec)  # a bad file or --init-from fails before the slow imports
    model_path = common.base_model_path(spec, run_dir)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    device, dtype, precision = common.device_and_dtype()
    tokenizer = common.load_tokenizer(model_path)
    common.check_host_memory(spec, model_path, device, train_rows, tokenizer)
    common.decide_compile(spec, model_path, device, train_rows, tokenizer)
    common.decide_grad_ckpt(spec, model_path, device)
    padding_free = fast.choose(spec, device, model_path)
    kwargs = common.model_kwargs(spec, dtype)
    if padding_free:
        kwargs["attn_implementation"] = fast.register()  # the reference model inherits it (TRL copies the setting)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    kernels.apply(model, spec, device)  # CUDA only: Liger's kernels, torch.compile (engine/train/kernels.py)
    common.record_versions(run_dir, device)

    shared = common.training_args(spec, run_dir, precision, has_eval=bool(eval_rows))
    config = trl_config(DPOConfig, "dpo", {**shared, "max_length": spec.max_length}, spec.extra)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=config,
        processing_class=tokenizer,
        peft_config=common.lora_config(spec),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=[common.run_dir_callback(run_dir, common.mfu_basis(spec, model_path))],
    )
    if padding_free:
        from peft import PeftModel

        policy = trainer.model.get_base_model() if isinstance(trainer.model, PeftModel) else trainer.model
        for patched in (policy, trainer.ref_model):  # the objects TRL gave its fused LM head
            if patched is not None:
                fast.pack_padded_calls(patched)
        trainer.data_collator = fast.PackingPlan(trainer.data_collator)
        print("batches: padding-free (chosen and rejected answers packed into one row; varlen attention)", flush=True)
    fast.adapter_inputs_in_compute_dtype(trainer, spec, precision)
    common.train(trainer, run_dir, resume)
    return common.finish_ok(trainer, tokenizer, run_dir)
