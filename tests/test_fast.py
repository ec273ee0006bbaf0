"""Padding-free SFT batches (engine/train/fast.py): the packed batch must give every example exactly the logits it
gets alone, or training silently learns across examples. On the CPU the attention runs as one SDPA call per
example; the GPU's varlen kernel is checked against the same padded reference in bench/throughput.py."""

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.train import fast
from tests.conftest import read_jsonl, run_cli


def sharp(model):
    """The tiny model's weights (std 0.02) make attention nearly uniform and its output tiny: logits would barely
    move if an example saw its neighbours' tokens. Larger weights (same seed: the same in every copy) make where
    each token attends show in the logits, so these tests fail on any leak across examples."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_packed_batch_gives_each_example_its_own_logits(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    padded_model = sharp(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    packed_model = sharp(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=fast.register())
    )
    texts = [
        "short one",
        "a much longer example that has many more tokens than the first one does",
        "middle sized example text",
    ]
    examples = [{"input_ids": tok(t)["input_ids"], "labels": tok(t)["input_ids"]} for t in texts]
    check_packed_logits(tok, packed_model, padded_model, examples)
    # rows of one length (data that fills max_length) take the batched-SDPA path: same logits
    same_length = [{"input_ids": e["input_ids"][:2], "labels": e["input_ids"][:2]} for e in examples]
    check_packed_logits(tok, packed_model, padded_model, same_length)


def check_packed_logits(tok, packed_model, padded_model, examples):
    batch = fast.collator(tok)(examples)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one row, no padding at all
    packed = packed_model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        cu_seq_lens_q=batch["cu_seq_lens_q"],
        cu_seq_lens_k=batch["cu_seq_lens_k"],
        max_length_q=batch["max_length_q"],
        max_length_k=batch["max_length_k"],
    ).logits[0]
    start = 0
    for ex in examples:
        alone = padded_model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
        n = len(ex["input_ids"])
        torch.testing.assert_close(packed[start : start + n], alone, atol=1e-5, rtol=1e-4)
        start += n


def padded_and_packed_runs(tmp_path, tiny_model, stage, steps, fields):
    """The same short full fine-tuning run with padded and with padding-free batches: {name: [fields per step]}."""
    logged = {}
    for name, padding_free in (("padded", False), ("packed", True)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"extra": {"padding_free": padding_free}}))
        out = tmp_path / name
        r = run_cli(
            "engine.train",
            "--config",
            str(config),
            "--stage",
            stage,
            "--method",
            "full",
            "--model",
            str(tiny_model),
            "--max-steps",
            str(steps),
            "--batch",
            "4",
            "--lr",
            "1e-3",
            "--eval-steps",
            "1000",
            "--save-steps",
            "1000",
            "--output-dir",
            str(out),
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("batches: padding-free" in r.stdout) == padding_free
        logged[name] = [tuple(m[f] for f in fields) for m in read_jsonl(out / "metrics.jsonl") if "loss" in m]
    assert len(logged["packed"]) == steps
    return logged


def test_padding_free_training_follows_the_padded_loss_curve(tmp_path, tiny_model):
    """Same data, seed and math: only where the pad tokens go differs, so the losses must agree step by step."""
    losses = padded_and_packed_runs(tmp_path, tiny_model, "sft", 4, ("loss",))
    for (a,), (b,) in zip(losses["padded"], losses["packed"]):
        assert abs(a - b) < 1e-3 * max(1.0, abs(a)), losses


def test_a_packed_preference_call_gives_the_padded_call_s_log_probs_and_gradients(tiny_model):
    """DPO's batch (chosen and rejected rows padded to the longest) run as one packed row must hand TRL the same
    per-token log-probabilities, in the same padded layout, and the same gradients."""
    from trl.trainer.utils import add_fused_lm_head

    tok = AutoTokenizer.from_pretrained(tiny_model)
    models = []
    for packed in (False, True):
        model = sharp(
            AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=fast.register())
        )
        add_fused_lm_head(model)
        if packed:
            fast.pack_padded_calls(model)
        models.append(model)
    rows = [
        tok(t)["input_ids"]
        for t in ("prompt one answer good", "prompt two is longer, answer fine and long", "prompt one answer bad", "p")
    ]
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :2] = -100  # the "prompt"
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    outs = [
        models[0](**batch, fused_lm_head=True),
        models[1](**batch, **fast.packing_plan(attention_mask), fused_lm_head=True),
    ]
    padded, packed = outs
    assert packed.log_probs.shape == padded.log_probs.shape == (4, width - 1)
    torch.testing.assert_close(packed.log_probs, padded.log_probs, atol=1e-5, rtol=1e-4)
    assert (packed.log_probs[attention_mask[:, 1:] == 0] == 0).all()  # nothing scored on padding
    for out in outs:
        out.log_probs.sum().backward()
    grads = [m.model.layers[0].mlp.up_proj.weight.grad for m in models]
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_padding_free_dpo_follows_the_padded_loss_curve(tmp_path, tiny_model):
    losses = padded_and_packed_runs(tmp_path, tiny_model, "dpo", 3, ("loss", "rewards/margins"))
    for (a, ma), (b, mb) in zip(losses["padded"], losses["packed"]):
        assert abs(a - b) < 1e-3 and abs(ma - mb) < 1e-3, losses


def test_lora_layers_skip_the_fp32_round_trip_and_compute_the_same(tiny_model):
    """Under bf16 autocast the adapter's products run in bf16 whether or not PEFT first copies the input to fp32:
    switching the copy off must not change the output, and the adapter weights AdamW updates stay fp32."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False)
    )  # non-zero B: the adapter contributes
    ids = torch.tensor([[5, 17, 92, 3, 44, 8]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids).logits
        switched = fast.lora_inputs_in_compute_dtype(model)
        after = model(input_ids=ids).logits
    assert switched == 2 * 7  # 2 blocks x q, k, v, o, gate, up, down
    torch.testing.assert_close(after, before)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)


def test_models_whose_attention_does_more_keep_padded_batches(tmp_path, tiny_model):
    """Gemma-2 (no SDPA in transformers, softcapped scores) and a sliding window shorter than the rows would be
    computed wrongly, or not load, with plain causal varlen attention."""
    from transformers import Gemma2Config, MistralConfig

    assert fast.unsupported(str(tiny_model), 1024) == ""
    Gemma2Config(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    ).save_pretrained(tmp_path / "gemma2")
    assert "Gemma2ForCausalLM" in fast.unsupported(str(tmp_path / "gemma2"), 1024)
    MistralConfig(sliding_window=512).save_pretrained(tmp_path / "window")
    assert "512-token window" in fast.unsupported(str(tmp_path / "window"), 1024)
    assert fast.unsupported(str(tmp_path / "window"), 512) == ""


def test_a_shared_prefix_row_gives_the_same_loss_and_gradients_with_fewer_tokens(tiny_model):
    """SharedPrefix (the CPU's SFT batches): examples that begin with the same unlabelled tokens (a chat template's
    system prompt) carry them once. Every kept token's logits, the loss and every gradient must be those of the
    plain packed row, or the CPU path would train a different model."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    head = tok("system: you are a helpful assistant. user:", add_special_tokens=False)["input_ids"]
    examples = []
    for prompt, answer in [("add a task", "done, high"), ("list my tasks for the week", "none"), ("hi", "hello there")]:
        p, a = tok(prompt, add_special_tokens=False)["input_ids"], tok(answer, add_special_tokens=False)["input_ids"]
        examples.append({"input_ids": head + p + a, "labels": [-100] * (len(head) + len(p)) + a})
    plain = fast.collator(tok)(examples)
    shared = fast.share_prefix(plain)
    assert shared[fast.SHARED_PREFIX] == len(head)
    assert shared["input_ids"].shape[1] == plain["input_ids"].shape[1] - 2 * len(head)

    model = sharp(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=fast.register())
    )
    results = []
    for batch in (plain, shared):
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.logits[0].detach(), out.loss.detach(), grads))
    (logits_plain, loss_plain, grads_plain), (logits_shared, loss_shared, grads_shared) = results
    keep = torch.ones(plain["input_ids"].shape[1], dtype=torch.bool)
    starts = plain["cu_seq_lens_q"].tolist()[1:-1]
    for start in starts:
        keep[start : start + len(head)] = False
    torch.testing.assert_close(logits_shared, logits_plain[keep], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss_shared, loss_plain, atol=1e-6, rtol=1e-5)
    assert grads_plain.keys() == grads_shared.keys() and grads_plain
    for name in grads_plain:
        torch.testing.assert_close(grads_shared[name], grads_plain[name], atol=1e-6, rtol=1e-4, msg=name)


def test_a_prefix_that_carries_labels_or_differs_early_is_not_shared(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ("one two three four five six", "one two three x")]
    labelled = [{"input_ids": x, "labels": x} for x in ids]  # continued pretraining: every token is a target
    assert fast.SHARED_PREFIX not in fast.share_prefix(fast.collator(tok)(labelled))
    short = [{"input_ids": x, "labels": [-100] * len(x)} for x in ids]  # only 3 tokens alike: not worth it
    assert fast.SHARED_PREFIX not in fast.share_prefix(fast.collator(tok)(short))


@pytest.mark.parametrize("softcap, bias", [(None, False), (30.0, True)])
def test_the_cpu_lm_head_gives_trl_s_log_probs_entropy_and_gradients(softcap, bias):
    # engine/train/fast.py _CpuLogProbs stands in for TRL's ChunkedLogProbFunction on the CPU: the same outputs
    # (log-probs, entropy, log sum p^2, mean logit, is-top-1) and the same gradients for the hidden states and head
    from trl.kernels import ChunkedLogProbFunction

    torch.manual_seed(0)
    n, h, v = 37, 24, 1000
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    results = []
    for head in (ChunkedLogProbFunction, fast._CpuLogProbs(ChunkedLogProbFunction)):
        torch.manual_seed(1)
        hidden = torch.randn(n, h, requires_grad=True)
        weight = (torch.randn(v, h) * 0.3).requires_grad_()
        b = torch.randn(v, requires_grad=True) if bias else None
        targets = torch.randint(0, v, (n,))
        targets[0] = int((hidden[0] @ weight.t()).argmax())  # one target that is the top logit
        out = head.apply(hidden, weight, b, targets, 0.7, 256, softcap, 1.3, outputs)
        (out[0].sum() + 0.1 * out[1].sum()).backward()
        results.append((out, hidden.grad, weight.grad))
    (trl, trl_dh, trl_dw), (ours, dh, dw) = results
    for a, b in zip(trl, ours):
        if a.dtype == torch.bool:
            assert torch.equal(a, b) and bool(a[0])
        else:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dh, trl_dh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw, trl_dw, rtol=1e-4, atol=1e-5)


def test_gpu_kernels_leave_a_cpu_run_as_it_was(tiny_model):
    """Liger's kernels and torch.compile (engine/train/kernels.py) are for CUDA only: on the CPU the model keeps
    HF's modules and forwards, and liger-kernel (an optional GPU extra) is never imported."""
    import sys

    from engine.spec import RunSpec
    from engine.train import kernels
    from engine.train.defaults import TUNEWISE_EXTRA

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    kernels.apply(model, RunSpec(extra={"liger": True, "compile": True}), "cpu")
    assert "liger_kernel" not in sys.modules
    assert all("forward" not in vars(m) and m._compiled_call_impl is None for m in model.modules())
    assert set(kernels.EXTRA_KEYS) <= set(TUNEWISE_EXTRA)  # Tunewise's own keys, never handed to TRL


def test_a_compiled_gpu_run_leaves_ligers_kernels_out(tiny_model, capsys):
    """On CUDA, compiling the decoder layers and Liger's kernels exclude each other (Liger's autograd functions stop
    dynamo's trace: the run failed at its first step). Here the device is only named "cuda": compile wraps each
    layer lazily, nothing runs."""
    from engine.spec import RunSpec
    from engine.train import kernels

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    kernels.apply(model, RunSpec(method="lora", extra={"compile": True}), "cuda")  # Liger is LoRA's default
    said = capsys.readouterr().out
    assert "torch.compile on 2 decoder layers" in said and "Liger" not in said, said
    layers = kernels.decoder_layers(model)
    assert layers and all(layer._compiled_call_impl is not None for layer in layers)


def test_compiled_layers_evaluate_eagerly_instead_of_recompiling(tiny_model):
    """A compiled run's evaluation (eval mode, no gradients) used to recompile every layer at the first evaluation
    (grad mode and the inputs' requires_grad are dynamo guards): a compile's wait on a GPU for a few forward passes.
    It now runs eagerly and gives the same logits; training stays compiled, and so does a no-grad pass in training
    mode (DPO's reference pass, at every step). Dynamo's eager backend: what is traced, without inductor's wait."""
    from torch._dynamo.utils import counters

    from engine.train import kernels

    torch._dynamo.reset()
    counters.clear()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    kernels.compile_layers(model, backend="eager")
    model.train()
    for n in (10, 13, 17):  # a new length each step: dynamic shapes, one graph
        ids = torch.randint(0, 100, (1, n))
        model(ids, labels=ids).loss.backward()
    traced = counters["stats"]["unique_graphs"]
    assert traced >= 1
    model.eval()
    ids = torch.randint(0, 100, (1, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits)
    assert counters["stats"]["unique_graphs"] == traced  # nothing compiled for the evaluation
    model.train()
    with torch.no_grad():
        model(ids)
    assert counters["stats"]["unique_graphs"] > traced  # the reference pass is compiled
    torch._dynamo.reset()
