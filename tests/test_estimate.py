"""The estimator's arithmetic, as a user would notice it (engine/estimate.py, engine/vram.py)."""

import json
import math
import subprocess
import sys

import pytest

from conftest import run_cli
from engine import catalog, estimate, vram
from engine.estimate import EstimateError, EstimateRequest, estimate_run, peak_gib

SEVEN_B = "mistralai/Mistral-7B-v0.3"


def gib(**kw):
    return peak_gib(EstimateRequest(**kw))


def test_qlora_below_lora_below_full_for_7b():
    kw = dict(model=SEVEN_B, seq=512, batch=1, grad_ckpt=True)
    assert gib(method="qlora", **kw) < gib(method="lora", **kw) < gib(method="full", **kw)
    assert gib(method="full", optimizer="adamw_torch", **kw) > 60  # the lesson: "60+ GB"
    assert gib(method="full", **kw) * 2**30 / 1e9 > 59.9  # fused AdamW (our default) saves a copy of the weights
    assert 14 < gib(method="lora", **kw) < 20 and 5 < gib(method="qlora", **kw) < 8


def test_longer_sequences_and_bigger_batches_need_more_memory():
    assert gib(seq=1024) < gib(seq=2048) < gib(seq=4096)
    assert gib(batch=1) < gib(batch=4) < gib(batch=16)


def test_gradient_checkpointing_lowers_activations():
    off = estimate_run(EstimateRequest(model="Qwen/Qwen2.5-0.5B", seq=2048, batch=8))
    on = estimate_run(EstimateRequest(model="Qwen/Qwen2.5-0.5B", seq=2048, batch=8, grad_ckpt=True))
    assert on.breakdown_gib["activations"] < off.breakdown_gib["activations"] / 4
    assert on.peak_gib < off.peak_gib


def test_dpo_needs_more_than_sft():
    for method in ("full", "lora"):
        assert gib(stage="dpo", method=method, model="Qwen/Qwen2.5-0.5B") > gib(
            method=method, model="Qwen/Qwen2.5-0.5B"
        )


def test_small_model_long_batch_lora_about_as_big_as_full():
    # the issue: a 0.5B Qwen at 2048 x 8 tokens uses about as much with LoRA as with full fine-tuning
    # (measured on H200 through engine.train: 30.5 vs 26.9 GiB, bench/results/estimate_accuracy.jsonl)
    lora, full = (gib(model="Qwen/Qwen2.5-0.5B", seq=2048, batch=8, method=m) for m in ("lora", "full"))
    assert abs(lora - full) / full < 0.2


def test_matches_h200_measurements():
    rows = [json.loads(line) for line in open("bench/results/estimate_accuracy.jsonl")]
    error = {
        (r["model"], r["stage"], r["method"], r["seq"], r["batch"], r["grad_ckpt"]): abs(
            gib(
                model=r["model"],
                stage=r["stage"],
                method=r["method"],
                seq=r["seq"],
                batch=r["batch"],
                grad_ckpt=r["grad_ckpt"],
                optimizer=r.get("optim", "adamw_torch"),
                lora_dropout=r.get("lora_dropout", 0.05),
            )
            - r["measured_gib"]
        )
        / r["measured_gib"]
        for r in rows
    }
    errors = sorted(error.values())
    assert errors[len(errors) // 2] <= 0.05  # the issue's bar: median within 5 %, every case within 12 %
    assert errors[-1] <= 0.12, max(error.items(), key=lambda kv: kv[1])


def _stored_errors(grids: tuple[str, ...], expandable: bool) -> dict[tuple, float]:
    """Relative error of today's estimate on every stored GPU row of these grids (bench/results/estimate_*.jsonl)
    measured with (or without) the expandable segments engine.train has set since 2026-12-02; a configuration
    measured again later replaces its older measurement."""
    sys.path.insert(0, "bench")
    import estimate_accuracy as ea

    errors = {}
    for grid in grids:
        for line in open(f"bench/results/estimate_{grid}.jsonl"):
            r = json.loads(line)
            if r.get("error") or not r.get("torch_reserved_gib") or ("alloc_conf" in r) != expandable:
                continue
            row = (r["model"], r["stage"], r["method"], r["seq"], r["batch"], r["grad_ckpt"])
            errors[row] = ea.predict(row, r["optim"], r["lora_dropout"]) / r["measured_gib"] - 1
    return errors


def test_the_issues_targets_hold_on_every_row_measured_as_engine_train_runs_now():
    # issue 18: median |error| <= 4 %, nothing under by more than 3 %, nothing over by more than 12 %, on the GPU
    # rows measured with the allocator engine.train runs (the refit grid, the fourth held-out grid, re-measured
    # older rows, the mixture-of-experts row). An under-prediction is the out-of-memory surprise the estimate
    # exists to prevent.
    errors = _stored_errors(("expandable", "fam_heldout4", "expandable_old", "coverage"), expandable=True)
    assert len(errors) >= 25
    assert sorted(abs(e) for e in errors.values())[len(errors) // 2] <= 0.04
    assert min(errors.values()) > -0.03, min(errors.items(), key=lambda kv: kv[1])
    assert max(errors.values()) < 0.12, max(errors.items(), key=lambda kv: kv[1])


def test_older_grids_measured_with_fixed_segments_stay_close():
    # Runs before 2026-12-02 held the allocator's fragmentation as well (up to 2.3 GiB, that engine.train no longer
    # has), so today's estimate may sit under them by that much; their median still says the model of the step
    # holds across families
    errors = _stored_errors(
        ("fam_calib", "fam_heldout", "fam_heldout2", "fam_heldout3", "coverage", "remeasure"), expandable=False
    )
    assert len(errors) >= 35
    assert sorted(abs(e) for e in errors.values())[len(errors) // 2] <= 0.04
    assert min(errors.values()) > -0.11, min(errors.items(), key=lambda kv: kv[1])


def test_lora_on_fused_experts_counts_the_merged_expert_stacks():
    # PEFT builds W + BA for a layer's whole expert stack each forward and the grouped matmul keeps it for backward
    # (Qwen3-30B-A3B, 6 layers, LoRA 1024 x 2 with checkpointing: -13.7 % before this was counted)
    cfg = catalog.load_config("Qwen/Qwen3-30B-A3B")
    shape = vram.Shape.from_config(cfg)
    stack = shape.merged_expert_bytes("lora") / vram.GIB
    assert stack == pytest.approx(1.125)  # 128 experts x (gate, up, down) x 2048 x 768 in bf16
    assert shape.merged_expert_bytes("full") == 0 and shape.merged_expert_bytes("lora", "q_proj,v_proj") == 0
    kw = dict(model="Qwen/Qwen3-30B-A3B", method="lora", seq=512, batch=1)
    off = estimate_run(EstimateRequest(**kw)).breakdown_gib["activations"]
    on = estimate_run(EstimateRequest(grad_ckpt=True, **kw)).breakdown_gib["activations"]
    assert off > shape.layers * stack > on > stack  # every layer's stack without checkpointing, one with it


def test_full_dpo_counts_the_reference_copy_of_the_weights():
    # measured on the H200 (bench/results/estimate_accuracy.jsonl): Qwen2.5-0.5B full DPO 512 x 4 used 6.96 GiB,
    # 1 GiB more than full SFT of the same shape, the bf16 reference model
    sft, dpo = (
        gib(model="Qwen/Qwen2.5-0.5B", stage=s, method="full", seq=512, batch=4, grad_ckpt=True) for s in ("sft", "dpo")
    )
    assert dpo - sft > 0.9


def test_embedded_model_config_is_known_without_converting():
    shape = vram.Shape.from_config(catalog.load_config("embedded"))
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab, shape.tied) == (
        576,
        30,
        9,
        3,
        1536,
        49152,
        True,
    )
    assert 130e6 < shape.params() < 140e6


def test_param_counts_match_published_sizes():
    for name, billions in (
        ("meta-llama/Llama-3.1-8B", 8.03),
        ("Qwen/Qwen2.5-0.5B", 0.494),
        ("mistralai/Mistral-7B-v0.3", 7.25),
        ("meta-llama/Llama-3.2-1B", 1.24),
    ):
        assert vram.Shape.from_config(catalog.load_config(name)).params() / 1e9 == pytest.approx(billions, rel=0.01)


def test_too_big_run_gets_a_fix_and_limits():
    est = estimate_run(EstimateRequest(model="meta-llama/Llama-3.1-8B", method="full", gpu="rtx-4090"))
    assert not est.fits and est.fix and est.max_batch == 0
    ok = estimate_run(EstimateRequest(model="embedded", gpu="rtx-4090"))
    assert ok.fits and ok.max_batch > 8 and ok.max_seq >= 2048 and ok.hours > 0


def test_bad_inputs_are_sentences():
    with pytest.raises(EstimateError, match="whole number"):
        EstimateRequest(batch=0)
    with pytest.raises(EstimateError, match="neither a model directory"):
        peak_gib(EstimateRequest(model="/no/such/model"))


def test_cli_json_and_exit_codes():
    run = lambda *a: subprocess.run([sys.executable, "-m", "engine.estimate", *a], capture_output=True, text=True)  # noqa: E731
    ok = run("--model", "Qwen/Qwen2.5-0.5B", "--method", "qlora", "--seq", "1024", "--batch", "2", "--json")
    out = json.loads(ok.stdout)
    assert ok.returncode == 0 and {"peak_gib", "breakdown_gib", "fits", "max_batch", "hours", "usd"} <= set(out)
    bad = run("--model", "/no/such/dir")
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    assert run("--batch", "-3").returncode == 2


def test_engine_does_not_import_torch():
    code = "import sys, engine.estimate; print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]


def test_time_matches_the_h200_throughput_runs():
    """Tokens per second the Estimate page's time implies, against engine.train on the H200 (135M-8B, full / LoRA /
    QLoRA, SFT and DPO, with and without checkpointing, bench/results/throughput.jsonl): the step-time model of
    assets/mfu.yaml must keep every run within 0.7-1.35x and the typical one within ~15 %."""
    from bench.throughput import MODELS
    from engine.estimate import hours, load_gpu

    runs = {}
    for r in map(json.loads, open("bench/results/throughput.jsonl")):
        if r["way"] != "plain" and r["tokens_per_s"]:
            runs[(r["model"], r["stage"], r["method"], r["seq"], r["mix"], r["way"])] = r  # the last run counts
    h200 = load_gpu("h200")
    ratios = {}
    for key, r in runs.items():
        req = EstimateRequest(
            model=MODELS[r["model"]],
            stage=r["stage"],
            method=r["method"],
            seq=r["seq"],
            batch=r["batch"],
            grad_ckpt=r["way"] == "app_ckpt",
            tokens_per_example=int(r["mean_tokens"]),
            liger=False,  # these runs used HF's kernels (before Liger was the default)
        )
        tokens, h = hours(req, h200)
        ratios[key] = tokens / (h * 3600) / r["tokens_per_s"]
    assert len(ratios) >= 25
    assert all(0.7 <= x <= 1.35 for x in ratios.values()), ratios
    assert math.sqrt(sum(math.log(x) ** 2 for x in ratios.values()) / len(ratios)) < 0.15


def test_cpu_time_follows_the_measured_cpu_rate():
    """The showcase run (320 Task API examples of ~71 tokens, LoRA, embedded model) took ~315 CPU-seconds on one
    thread here; a 2-core machine should be told minutes, not hours."""
    from engine.estimate import Gpu, hours

    two_cores = Gpu(name="2-core CPU", vram_gib=16, tflops_bf16=2 * 0.096, usd_per_hour=None, mfu_class="cpu")
    _, h = hours(EstimateRequest(model="embedded", examples=320, tokens_per_example=71), two_cores)
    assert 1.5 / 60 < h < 6 / 60


def test_training_turns_checkpointing_on_only_when_the_run_would_not_fit_without_it():
    from engine.estimate import checkpointing_needed, request_for
    from engine.spec import RunSpec

    req = request_for(
        RunSpec(
            model_name_or_path="meta-llama/Llama-3.1-8B", method="lora", max_length=1024, per_device_train_batch_size=4
        )
    )
    needed, without = checkpointing_needed(req, free_gib=22.0)  # a 24 GB card: 8B LoRA needs checkpointing
    assert needed and without > 22.0
    assert not checkpointing_needed(req, free_gib=138.0)[0]  # an H200: faster without it


def test_a_mixture_of_experts_family_never_measured_says_so():
    qwen = estimate.caveat(vram.Shape.from_config(catalog.load_config("Qwen/Qwen3-30B-A3B")), EstimateRequest())
    oss = estimate.caveat(vram.Shape.from_config(catalog.load_config("openai/gpt-oss-20b")), EstimateRequest())
    assert "was measured" in qwen and "not been measured" in oss and "spare" in oss
    assert estimate.caveat(vram.Shape.from_config(catalog.load_config("Qwen/Qwen3-8B")), EstimateRequest()) == ""


def test_the_time_follows_the_gpu_kernels_a_run_will_get():
    """Liger's kernels are the default for full fine-tuning and LoRA on CUDA (measured 1.22-1.33x where the GPU bounds
    the step), not for QLoRA (no gain measured); the estimate follows the run's settings, and a processor gets none."""
    from engine.estimate import Gpu, hours, load_gpu, request_for
    from engine.spec import RunSpec
    from engine.train import kernels

    assert kernels.liger_default("full") and kernels.liger_default("lora") and not kernels.liger_default("qlora")
    h100 = load_gpu("h100")
    full = EstimateRequest(model="meta-llama/Llama-3.2-1B", method="full", seq=2048, batch=8)
    with_liger, without = hours(full, h100)[1], hours(EstimateRequest(**{**full.__dict__, "liger": False}), h100)[1]
    assert 1.15 < without / with_liger < 1.35  # the GPU bounds this step: most of the 1.3 shows
    qlora = EstimateRequest(**{**full.__dict__, "method": "qlora"})
    assert hours(qlora, h100)[1] == hours(EstimateRequest(**{**qlora.__dict__, "liger": False}), h100)[1]
    spec = RunSpec(model_name_or_path="meta-llama/Llama-3.2-1B", method="full", extra={"liger": False})
    assert request_for(spec).liger is False and request_for(RunSpec(method="lora")).liger is True
    cpu = Gpu(name="2-core CPU", vram_gib=16, tflops_bf16=0.19, mfu_class="cpu")
    assert hours(full, cpu)[1] == hours(EstimateRequest(**{**full.__dict__, "liger": False}), cpu)[1]


def test_liger_memory_follows_what_its_kernels_save():
    """Liger's RMSNorm keeps a bf16 input instead of an fp32 one and its SwiGLU recomputes SiLU: 8h + 2i bytes a token
    and layer less for full fine-tuning. Measured on an H100 (bench/results/throughput-20261207-h100.jsonl): 1B full
    SFT 2048 x 8 without checkpointing, 36.9 GiB with HF's kernels, 28.8 GiB with Liger's."""
    from bench.throughput import MODELS

    rows = {r["way"]: r for r in map(json.loads, open("bench/results/throughput-20261207-h100.jsonl"))}
    for way, liger in (("app", False), ("app_liger", True)):
        r = rows[way]
        req = EstimateRequest(model=MODELS[r["model"]], method=r["method"], seq=r["seq"], batch=r["batch"], liger=liger)
        assert 1.0 <= peak_gib(req) / r["nvml_peak_gib"] < 1.04, (way, peak_gib(req), r["nvml_peak_gib"])
    unknown = EstimateRequest(model="meta-llama/Llama-3.2-1B", method="full", seq=2048, batch=8)
    assert peak_gib(unknown) == peak_gib(EstimateRequest(**{**unknown.__dict__, "liger": False}))  # maybe a CPU


def test_a_long_gpu_run_is_estimated_compiled_a_short_one_and_a_processor_not():
    """engine.train compiles the layers of SFT and DPO runs on CUDA that would take COMPILE_MIN_MINUTES or more
    (engine/train/kernels.py compile_default); the estimate follows: the minute of compiling counts, every step after
    it is faster where the host bounds it, and the memory is HF's kernels' (a compiled run leaves Liger's out)."""
    from dataclasses import replace

    from engine.estimate import compiled, hours, load_gpu
    from engine.train import kernels

    h100, cpu = load_gpu("h100"), load_gpu("cpu")
    long = EstimateRequest(model="Qwen/Qwen3-0.6B", method="lora", seq=1024, batch=8, examples=50_000, liger=True)
    short = replace(long, examples=400)
    assert compiled(long, h100) and not compiled(short, h100)
    assert not compiled(long, cpu) and not compiled(replace(long, stage="rl"), h100)
    eager, built = hours(replace(long, compile=False), h100)[1], hours(replace(long, compile=True), h100)[1]
    assert built < 0.8 * eager  # a host-bound row: the compiled steps are far shorter
    tiny = replace(short, examples=8)  # one step: the compile is nearly all of it
    assert hours(replace(tiny, compile=True), h100)[1] * 3600 >= kernels.COMPILE_FIRST_STEP_S
    assert estimate_run(long, h100).compiled and not estimate_run(short, h100).compiled
    assert estimate_run(long, h100).peak_gib == pytest.approx(peak_gib(replace(long, liger=False)), abs=1e-3)
    assert estimate_run(short, h100).peak_gib == pytest.approx(peak_gib(short), abs=1e-3)
    assert peak_gib(short) < peak_gib(replace(short, liger=False))


def test_the_cli_takes_the_datas_tokens_and_the_gpus_kernels_as_the_estimate_page_does():
    """The page times a run with the data's mean tokens per example, which decides whether engine.train compiles
    it, and so its kernels' memory; the CLI's --tokens-each gives the same figure (a walkthrough found LoRA at
    205.6 GiB on the page and 257.3 from the CLI for the same settings). On a GPU the estimate counts the kernels
    the trainer uses there (Liger's for LoRA) unless told otherwise."""
    from engine.estimate import estimate_run, load_gpu

    shape = dict(model="Qwen/Qwen3-8B", seq=4096, batch=9)
    page = estimate_run(EstimateRequest(method="lora", tokens_per_example=71, **shape), load_gpu("rtx-4090"))
    out = run_cli(
        "engine.estimate",
        "--model",
        "Qwen/Qwen3-8B",
        "--seq",
        "4096",
        "--batch",
        "9",
        "--gpu",
        "rtx-4090",
        "--tokens-each",
        "71",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["peak_gib"] == page.peak_gib and not page.compiled
    with_liger = estimate_run(
        EstimateRequest(method="lora", tokens_per_example=71, liger=True, **shape), load_gpu("rtx-4090")
    )
    assert page.peak_gib == with_liger.peak_gib


def test_qlora_says_why_it_takes_more_memory_than_lora_at_long_batches():
    """QLoRA trains with HF's kernels by default; at 4096 x 9 the activations they keep outweigh the 4-bit weights,
    so QLoRA's figure is above LoRA's: the estimate says so and what `extra: {liger: true}` would take. At 512 x 2
    QLoRA is the smaller, and nothing is said."""
    from engine.estimate import estimate_run, load_gpu

    long = estimate_run(
        EstimateRequest(model="Qwen/Qwen3-8B", method="qlora", seq=4096, batch=9, tokens_per_example=71),
        load_gpu("rtx-4090"),
    )
    assert "QLoRA takes more memory than LoRA" in long.caveat and "liger: true" in long.caveat
    short = estimate_run(EstimateRequest(model="Qwen/Qwen3-8B", method="qlora", seq=512, batch=2), load_gpu("rtx-4090"))
    assert "more memory than LoRA" not in short.caveat
