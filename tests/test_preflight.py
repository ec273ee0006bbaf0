"""The pre-flight: a run that cannot fit the GPU's free memory even with checkpointing is refused before any weights
load, with the cheapest changes that fit, each with its estimate; as arithmetic, from the CLI, at submit and through
the Train page (NVML replaced by a 24 GB card with 23 GiB free; the estimator and the queue are real)."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from conftest import fake_nvml, run_cli
from engine import catalog, hardware, runs
from engine.estimate import EstimateRequest, alternatives, peak_gib, preflight
from engine.paths import REPO
from engine.spec import RunSpec
from engine.train import common
from engine.users import OWNER

MIB = 1024**2
THREE_B_FULL = EstimateRequest(model="meta-llama/Llama-3.2-3B", method="full", seq=1024, batch=4)


def test_a_run_that_fits_passes():
    assert preflight(EstimateRequest(model="meta-llama/Llama-3.2-1B", method="lora", seq=512, batch=4), 23.0) == ""


def test_a_run_that_cannot_fit_even_with_checkpointing_is_refused_with_changes_that_fit():
    refusal = preflight(THREE_B_FULL, 23.0)
    assert "even with gradient checkpointing" in refusal and "23.0 GiB free" in refusal
    options = alternatives(THREE_B_FULL.__class__(**{**THREE_B_FULL.__dict__, "grad_ckpt": True}), 23.0)
    assert len(options) >= 3
    for option in options:
        assert option["peak_gib"] <= 23.0
        assert f"{option['change']} ({option['peak_gib']:.1f} GiB)" in refusal
        assert "gradient checkpointing" not in option["change"].split(" with ")[0], "never what is already on"
    assert any(o["change"] == "switch to LoRA" for o in options) and any("QLoRA" in o["change"] for o in options)


def test_alternatives_never_offer_what_is_on():
    on = EstimateRequest(
        model="meta-llama/Llama-3.1-8B", method="qlora", seq=4096, batch=1, grad_ckpt=True, optimizer="adamw_8bit"
    )
    for option in alternatives(on, peak_gib(on) - 0.01, most=20):
        change = option["change"]
        assert "checkpointing" not in change and "QLoRA" not in change and "8-bit" not in change
        assert "micro-batch" not in change, "the micro-batch is already 1"


def test_several_gpus_offer_fsdp():
    two = EstimateRequest(**{**THREE_B_FULL.__dict__, "gpus": 2})
    assert "shard the model across the 2 GPUs with FSDP" in preflight(two, 23.0)


def test_estimate_cli_lists_alternatives():
    out = run_cli(
        "engine.estimate",
        "--model",
        "meta-llama/Llama-3.2-3B",
        "--method",
        "full",
        "--seq",
        "1024",
        "--batch",
        "4",
        "--gpu",
        "rtx-4090",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)
    assert not est["fits"]
    assert est["alternatives"] and all(set(a) == {"change", "peak_gib"} for a in est["alternatives"])
    assert all(a["peak_gib"] <= est["capacity_gib"] for a in est["alternatives"])


def test_out_of_memory_names_the_free_memory_and_changes_not_already_on(monkeypatch):
    req = EstimateRequest(**{**THREE_B_FULL.__dict__, "grad_ckpt": True})
    monkeypatch.setattr(
        common,
        "MEMORY",
        {"free_at_start_gib": 23.0, "predicted_peak_gib": peak_gib(req), "request": req, "checkpointing_was_on": True},
    )
    text = common.explain_failure(
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB. total capacity of 23.5 GiB")
    )
    assert "23.0 GiB of it free when this run started" in text
    assert "turn on gradient checkpointing" not in text
    assert "8-bit optimizer" in text


@pytest.fixture
def a_24gb_card_with_23_free(monkeypatch):
    fake_nvml(monkeypatch, "NVIDIA GeForce RTX 4090", 1, total_mib=24564, used_mib=1012, capability=(8, 9))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield
    hardware._read_nvml.cache_clear()


@pytest.fixture
def three_b_model(tmp_path):
    """A model directory with Llama-3.2-3B's published config; its weights are never read."""
    path = tmp_path / "llama-3b"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(catalog.load_config("meta-llama/Llama-3.2-3B")))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_submit_refuses_what_the_free_memory_cannot_hold(a_24gb_card_with_23_free, three_b_model):
    spec = RunSpec(model_name_or_path=str(three_b_model), method="full", max_length=1024, per_device_train_batch_size=4)
    with pytest.raises(runs.RunError, match=r"GPU 0 \(NVIDIA GeForce RTX 4090\) has 23.0 GiB free"):
        runs.submit(spec, OWNER)
    assert runs.list_runs(OWNER) == [], "nothing was queued"


def test_the_train_page_refuses_with_the_changes_that_fit(a_24gb_card_with_23_free, three_b_model):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["spec"] = RunSpec(method="full", max_length=1024, per_device_train_batch_size=4)
    at.run()
    at.switch_page("app_pages/train.py").run()
    next(t for t in at.selectbox if t.label == "Model").set_value("other").run()
    next(t for t in at.text_input if t.label.startswith("Another model")).set_value(str(three_b_model))
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "even with gradient checkpointing" in errors and "Changes that fit:" in errors, errors
    assert "switch to LoRA (" in errors and "GiB)" in errors
    assert runs.list_runs(OWNER) == []


# Checkpointing on as few layers as fit (issue 19): a run short of memory recomputes only what it must.
QWEN_LORA = EstimateRequest(model="Qwen/Qwen3-0.6B", method="lora", seq=1024, batch=8)
EIGHT_B_QLORA = EstimateRequest(model="meta-llama/Llama-3.1-8B", method="qlora", seq=2048, batch=4)


def test_checkpointing_is_chosen_on_as_few_layers_as_fit_and_that_is_faster():
    from dataclasses import replace

    from engine.estimate import checkpointing_choice, hours, load_gpu
    from engine.vram import CONTEXT_GIB

    assert not checkpointing_choice(QWEN_LORA, 60.0)[0].grad_ckpt  # room to spare: none, the fastest
    everies = []
    for free in (15.0, 11.0, 9.0):  # less and less memory: more and more layers checkpointed
        chosen, without = checkpointing_choice(QWEN_LORA, free)
        assert chosen.grad_ckpt and without > free
        assert peak_gib(chosen) - CONTEXT_GIB <= 0.9 * free  # free: besides the CUDA context; 10 % spare
        everies.append(chosen.ckpt_every)
    assert everies[0] > everies[1] > everies[2] == 1, everies
    gpu = load_gpu("rtx-4090")
    partial, every_layer = checkpointing_choice(QWEN_LORA, 15.0)[0], replace(QWEN_LORA, grad_ckpt=True)
    assert hours(partial, gpu)[1] < hours(every_layer, gpu)[1]  # fewer layers recomputed: a shorter estimate
    assert peak_gib(partial) > peak_gib(every_layer)


def test_when_only_offloading_the_checkpointed_inputs_fits_that_is_chosen_and_the_run_is_not_refused():
    from dataclasses import replace

    from engine.estimate import checkpointing_choice
    from engine.vram import CONTEXT_GIB

    on_gpu = peak_gib(replace(EIGHT_B_QLORA, grad_ckpt=True))
    offloaded = peak_gib(replace(EIGHT_B_QLORA, grad_ckpt=True, ckpt_offload=True))
    assert offloaded < on_gpu - 1.5  # 32 layers x 8,192 tokens x 4,096 x 2 bytes = 2 GiB of inputs leave the GPU
    free = (offloaded + on_gpu) / 2  # room for the offloaded run only (NVML's free: the CUDA context included)
    chosen, _ = checkpointing_choice(EIGHT_B_QLORA, (free - CONTEXT_GIB) / 0.9)  # engine.train keeps 10 % spare
    assert chosen.grad_ckpt and chosen.ckpt_every == 1 and chosen.ckpt_offload
    asked = replace(EIGHT_B_QLORA, grad_ckpt=True)  # checkpointing asked for: kept, and offloaded as only that fits
    assert checkpointing_choice(asked, free - CONTEXT_GIB)[0] == replace(asked, ckpt_offload=True)
    assert checkpointing_choice(asked, on_gpu)[0] == asked  # room enough: as asked
    assert preflight(EIGHT_B_QLORA, free) == ""
    assert "even with gradient checkpointing" in preflight(EIGHT_B_QLORA, offloaded - 0.5)


def test_engine_train_passes_the_chosen_checkpointing_to_transformers_and_says_so(monkeypatch, capsys, tmp_path):
    """decide_grad_ckpt on a GPU with little free memory (torch's free-memory query replaced: no GPU here)."""
    import torch

    spec = RunSpec(model_name_or_path="Qwen/Qwen3-0.6B", max_length=1024, per_device_train_batch_size=8)
    spec.output_dir = str(tmp_path)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=0: (11 * 1024**3, 80 * 1024**3))
    common.decide_grad_ckpt(spec, "Qwen/Qwen3-0.6B", "cuda")
    assert spec.gradient_checkpointing and spec.checkpoint_every == 3 and not spec.checkpoint_offload
    assert "gradient checkpointing: on for 10 of 28 layers (every 3)" in capsys.readouterr().out
    assert RunSpec.load(tmp_path / "config.yaml").checkpoint_every == 3  # a resume keeps it
    assert common.checkpointing_kwargs(spec) == {"every_n_layers": 3}
    spec.checkpoint_every, spec.checkpoint_offload = 1, True
    assert common.checkpointing_kwargs(spec) is None  # a processor has no pinned memory, nor GPU memory to save
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.checkpointing_kwargs(spec) == {"offload": True}
    spec.gradient_checkpointing = False
    assert common.checkpointing_kwargs(spec) is None


def test_engine_train_compiles_a_long_gpu_run_and_says_so_but_not_a_short_one(monkeypatch, capsys, embedded_dir):
    """decide_compile on an H100 (NVML's answer replaced: no GPU here): the compile costs about a minute at the
    first step, so only a run the estimate puts at COMPILE_MIN_MINUTES or more gets it; `extra: {compile: false}`
    keeps a long run eager, and a processor never compiles. The time counts the data's own tokens, as the Estimate
    page does: the same steps of short examples are a short run."""
    from transformers import AutoTokenizer

    from engine import data

    monkeypatch.setattr(common, "MEMORY", {})  # what this process's run records in status.json
    h100 = hardware.GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.6, 79.0, 0.6, (9, 0))
    monkeypatch.setattr(hardware, "detect_gpus", lambda refresh=False: hardware.Detection(gpus=(h100,)))
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    chat = [{"role": "user", "content": "word " * 1500}, {"role": "assistant", "content": "ok"}]
    rows = [{"messages": chat}] * 40  # every example cut at the 1024 tokens of max_length

    def spec_for(steps, **extra):
        return RunSpec(model_name_or_path="Qwen/Qwen3-0.6B", max_length=1024, max_steps=steps, extra=extra)

    def decide(spec, device="cuda", examples=rows):
        common.decide_compile(spec, "Qwen/Qwen3-0.6B", device, examples, tokenizer)

    long, short, kept = spec_for(20_000), spec_for(50), spec_for(20_000, compile=False)
    decide(long)
    assert common.MEMORY["compiled"]  # status.json's memory: the run panel says why the first step waits
    for spec in (short, kept):
        decide(spec)
    assert long.extra == {"compile": True} and "torch.compile chosen" in capsys.readouterr().out
    assert short.extra == {} and kept.extra == {"compile": False}
    on_cpu = spec_for(20_000)
    decide(on_cpu, device="cpu")
    assert on_cpu.extra == {}
    # a one-GPU run on a machine of eight takes as long as on one (~15 min here): the idle seven do not shorten it
    monkeypatch.setattr(hardware, "detect_gpus", lambda refresh=False: hardware.Detection(gpus=(h100,) * 8))
    one_of_eight = spec_for(3_000)
    decide(one_of_eight)
    assert one_of_eight.extra == {"compile": True}
    # Qwen3-8B, where the GPU bounds the step: 1,300 steps at 1024 tokens an example take ~14 min, over the bundled
    # Task API set (~70 tokens an example) ~8 min, not worth the compile. (0.6B's steps are the host's: as long.)
    task_api = data.load_for_stage(data.bundled("sft", "train"), "sft")
    assert 0 < common.data_tokens(one_of_eight, task_api, tokenizer) < 200
    full, brief = (RunSpec(model_name_or_path="Qwen/Qwen3-8B", max_length=1024, max_steps=1_300) for _ in "ab")
    for spec, examples in ((full, rows), (brief, task_api)):
        common.decide_compile(spec, "Qwen/Qwen3-8B", "cuda", examples, tokenizer)
    assert full.extra == {"compile": True} and brief.extra == {}
