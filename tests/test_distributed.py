"""Several processes for one run: real FSDP2 over two CPU processes (gloo), through `python -m engine.train` and the
run queue; the per-GPU estimate; and every refusal, before any weights load.

accelerate shards only across accelerators (engine/distributed.py says where), so the sharded runs here take the
test path TUNEWISE_FSDP_ON_CPU=1, which runs torch's real fully_shard on CPU tensors.
"""

import json
import time
from dataclasses import replace

import pytest

from conftest import run_cli, wait_for
from engine import distributed, estimate, rundir, runs
from engine.spec import RunSpec, SpecError
from engine.users import OWNER

FSDP_CPU = {distributed.CPU_TEST_ENV: "1"}


def sharded_args(model, out, *extra):
    return (
        "engine.train",
        "--model",
        str(model),
        "--num-processes",
        "2",
        "--distributed",
        "fsdp",
        "--batch",
        "2",
        "--eval-steps",
        "10000",
        "--output-dir",
        str(out),
        *extra,
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model):
    """Full fine-tuning sharded over two processes, checkpoints every 2 steps, stopped after 4 of 6 planned."""
    out = tmp_path_factory.mktemp("fsdp") / "full"
    done = run_cli(
        *sharded_args(tiny_model, out, "--method", "full", "--max-steps", "4", "--save-steps", "2"), env=FSDP_CPU
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_fsdp_run_shards_its_checkpoints_and_writes_one_ordinary_model(full_run, tiny_model):
    settings = (full_run / "accelerate_fsdp.yaml").read_text()
    assert "distributed_type: FSDP" in settings and "fsdp_version: 2" in settings
    assert "LlamaDecoderLayer" in settings, "one FSDP unit per decoder layer"
    shards = sorted(p.name for p in (full_run / "checkpoint-2" / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"], "each process saved its own shard"
    assert (full_run / "checkpoint-2" / "optimizer_0").is_dir()
    assert rundir.read_status(full_run)["state"] == "completed"

    import torch
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(full_run / "final")  # one ordinary model, gathered
    start = AutoModelForCausalLM.from_pretrained(tiny_model)
    a, b = trained.state_dict(), start.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a), "full tensors, not one rank's shard"
    assert any(not torch.equal(a[k], b[k]) for k in a), "the weights trained"


def test_fsdp_run_resumes_from_its_sharded_checkpoint(full_run):
    losses = {r["step"]: r["loss"] for r in rundir.read_metrics(full_run) if "loss" in r}
    for later in ("checkpoint-4", "final"):
        import shutil

        shutil.rmtree(full_run / later)
    done = run_cli("engine.train", "--output-dir", str(full_run), "--resume", "--max-steps", "6", env=FSDP_CPU)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = {r["step"]: r["loss"] for r in rundir.read_metrics(full_run) if "loss" in r}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert resumed[3] == pytest.approx(losses[3], abs=1e-4), "the resumed run continues the same trajectory"
    assert rundir.read_status(full_run)["step"] == 6


def test_lora_under_fsdp_saves_an_adapter(tmp_path, tiny_model):
    out = tmp_path / "lora"
    done = run_cli(*sharded_args(tiny_model, out, "--max-steps", "2", "--grad-ckpt"), env=FSDP_CPU)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fsdp_activation_checkpointing: true" in (out / "accelerate_fsdp.yaml").read_text()
    config = json.loads((out / "final" / "adapter_config.json").read_text())
    assert config["r"] == 16

    from safetensors.torch import load_file

    weights = load_file(out / "final" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert not any("_fsdp" in k or "_checkpoint_wrapped" in k for k in weights), "plain PEFT names"


def test_stop_reaches_every_rank(monkeypatch, tiny_model):
    monkeypatch.setenv(distributed.CPU_TEST_ENV, "1")
    monkeypatch.setenv("TUNEWISE_SLOTS", "2")
    spec = RunSpec(
        model_name_or_path=str(tiny_model),
        max_steps=100_000,
        num_processes=2,
        distributed="fsdp",
        save_steps=10_000,
        eval_steps=10_000,
        per_device_train_batch_size=2,
    )
    run_id = runs.submit(spec, OWNER)
    run = wait_for(
        lambda: (r := runs.get(run_id, OWNER))["state"] != "queued" and rundir.read_metrics(r["run_dir"]) and r
    )
    assert run["state"] == "running", run["error"]
    import psutil

    tree = [run["supervisor_pid"], run["pid"], *(c.pid for c in psutil.Process(run["pid"]).children(recursive=True))]
    assert len(tree) >= 4, "the supervisor, accelerate's launcher and two ranks"
    started = time.time()
    stopped = runs.stop(run_id, OWNER)
    assert time.time() - started < 15
    assert stopped["state"] == "stopped"
    assert not [p for p in tree if runs.alive(p)], "no rank is left"


@pytest.mark.parametrize(
    "changes, gpus, words",
    [
        ({"distributed": "fsdp", "num_processes": 1}, 1, "one process"),
        ({"distributed": "fsdp", "num_processes": 2}, 0, "no NVIDIA GPU"),
        ({"distributed": "fsdp", "num_processes": 4}, 2, "2 are visible"),
        ({"distributed": "ddp", "num_processes": 4}, 2, "2 are visible"),
        ({"distributed": "fsdp", "num_processes": 2, "stage": "rl"}, 2, "not available for RL"),
        ({"fsdp_offload": True}, 1, "only FSDP does"),
    ],
)
def test_refusals_say_what_to_do(changes, gpus, words):
    with pytest.raises(SpecError, match=words):
        distributed.check(RunSpec(**changes), gpus)


def test_fsdp_on_a_cpu_machine_is_refused_before_any_weights_load(tmp_path, tiny_model):
    done = run_cli(*sharded_args(tiny_model, tmp_path / "run", "--max-steps", "2"))
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr and "num_processes 1" in done.stderr
    assert not (tmp_path / "run").exists(), "nothing started"


def test_a_model_class_fsdp_cannot_wrap_is_refused(tmp_path):
    model = tmp_path / "t5"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32, "num_layers": 1}))
    (model / "model.safetensors").write_bytes(b"")  # never read: the refusal comes before any weights load
    done = run_cli(*sharded_args(model, tmp_path / "run", "--max-steps", "2"), env=FSDP_CPU)
    assert done.returncode == 2
    assert "FSDP cannot shard" in done.stderr and "distributed: ddp" in done.stderr


def test_submit_refuses_fsdp_without_gpus():
    with pytest.raises(runs.RunError, match="no NVIDIA GPU"):
        runs.submit(RunSpec(num_processes=2, distributed="fsdp"), OWNER)


def test_per_gpu_estimate_shards_what_fsdp_shards():
    one = estimate.EstimateRequest(model="meta-llama/Llama-3.1-8B", method="full", seq=2048, batch=1, grad_ckpt=True)
    ddp = [estimate.peak_gib(replace(one, gpus=n)) for n in (2, 4, 8)]
    fsdp = [estimate.peak_gib(replace(one, gpus=n, distributed="fsdp")) for n in (2, 4, 8)]
    assert ddp[0] == ddp[1] == ddp[2] > estimate.peak_gib(one), "DDP: a whole copy per GPU, plus its buckets"
    assert fsdp[0] > fsdp[1] > fsdp[2], "FSDP: more GPUs, less on each"
    # 8B full fine-tuning: bf16 weights + grads + AdamW ~ 8 bytes x 8.03B = 60 GiB, shared 8 ways is ~7.5 GiB;
    # the rest is what is not sharded (activations, the gathered layers and root, context)
    assert 7.5 < fsdp[2] < 20
    offload = estimate.peak_gib(replace(one, gpus=2, distributed="fsdp", offload=True))
    assert offload < fsdp[2], "offloaded shards wait in CPU memory"


def test_estimate_offers_fsdp_when_ddp_does_not_fit():
    gpu = estimate.load_gpu("rtx-4090")
    # full fine-tuning of 3B: bf16 weights, gradients and AdamW alone are ~24 GiB on each GPU with DDP
    req = estimate.EstimateRequest(model="meta-llama/Llama-3.2-3B", method="full", seq=1024, batch=1, grad_ckpt=True)
    est = estimate.estimate_run(replace(req, gpus=2), gpu)
    assert not est.fits
    assert "FSDP" in est.sharding and "per GPU" in est.sharding
    assert "FSDP" in est.fix
    assert estimate.estimate_run(replace(req, gpus=2, distributed="fsdp"), gpu).fits


def test_estimate_cli_gives_per_gpu_figures():
    out = run_cli(
        "engine.estimate",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--method",
        "qlora",
        "--gpus",
        "4",
        "--distributed",
        "fsdp",
        "--grad-ckpt",
        "--batch",
        "1",
        "--seq",
        "2048",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    est = json.loads(out.stdout)
    assert est["gpus"] == 4 and est["distributed"] == "fsdp"
    assert "weights (this GPU's shard)" in est["breakdown_gib"]
