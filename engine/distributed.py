"""One run over several processes, started through `accelerate launch`: DDP or FSDP2.

    distributed: ddp    every GPU holds the whole model, its gradients and optimizer state; batches are split
    distributed: fsdp   FSDP2 (torch.distributed.fsdp.fully_shard): weights, gradients and optimizer state are
                        sharded across the GPUs, one decoder layer is gathered at a time for its forward and backward

The FSDP settings are accelerate's (FSDP_* environment variables, the same ones `accelerate launch --config_file`
sets): version 2, one FSDP unit per decoder layer (TRANSFORMER_BASED_WRAP on the model's `_no_split_modules`),
reshard after forward, CPU-RAM-efficient loading (rank 0 reads the weights, the others start on the meta device
and receive their shards), sharded checkpoints (a stopped run resumes from its shards) and one ordinary model or
adapter in final/. `fsdp_offload: true` keeps parameters and optimizer state in CPU memory between uses. The run
directory keeps the settings as RUN/accelerate_fsdp.yaml, an accelerate config that reproduces them by hand.

accelerate shards only across accelerators: on a CPU its launcher and state fall back to a plain process group
(accelerate/state.py admits FSDP for MULTI_GPU-like distributed types only) although torch's fully_shard runs on
CPU tensors over gloo. TUNEWISE_FSDP_ON_CPU=1 is the test path that runs real FSDP2 over CPU processes: the
trainer tells accelerate its gloo group is a multi-device group (allow_on_cpu). Nothing else uses it.

Only light imports at module level: the Streamlit process checks settings with `check`.
"""

import os
from pathlib import Path

import yaml

from engine.spec import STAGE_NAMES, RunSpec, SpecError

CPU_TEST_ENV = "TUNEWISE_FSDP_ON_CPU"
LAUNCHED_ENV = "TUNEWISE_LAUNCHED"  # set for the launched ranks: a rank never launches again
FSDP_STAGES = ("pt", "sft", "dpo", "rm")  # GRPO generates with the policy: not wired for sharded weights yet


def on_cpu_test_path() -> bool:
    return os.environ.get(CPU_TEST_ENV) == "1"


def check(spec: RunSpec, gpus: int) -> None:
    """Refuse a run whose processes cannot start as asked, before any weights load (gpus: GPUs visible here)."""
    n = spec.num_processes
    if spec.fsdp_offload and spec.distributed != "fsdp":
        raise SpecError(
            "fsdp_offload moves sharded weights and optimizer state to CPU memory, which only FSDP does; this run "
            f"uses {spec.distributed}. Set distributed: fsdp, or turn fsdp_offload off."
        )
    if spec.distributed != "fsdp":
        if gpus and n > gpus:
            raise SpecError(
                f"This run asks for {n} GPUs but {gpus} are visible here. Lower the number of GPUs "
                f"(num_processes) to {gpus} or fewer."
            )
        return
    if n < 2:
        raise SpecError(
            "FSDP shards the model across several GPUs, and this run has one process (num_processes 1). "
            "Give num_processes 2 or more (one per GPU), or train on one GPU without FSDP (distributed: ddp)."
        )
    if spec.stage not in FSDP_STAGES:
        raise SpecError(
            f"FSDP is not available for {STAGE_NAMES[spec.stage]} yet (it generates answers with the sharded "
            "policy). Use distributed: ddp, or one GPU with LoRA or QLoRA."
        )
    if not gpus:
        if on_cpu_test_path():
            return
        raise SpecError(
            "FSDP shards a model across GPUs, and this computer has no NVIDIA GPU (accelerate shards only across "
            "GPUs). Train here with one process (num_processes 1, distributed: ddp), or on a machine with GPUs."
        )
    if n > gpus:
        raise SpecError(
            f"This run asks FSDP for {n} GPUs but {gpus} are visible here. Lower num_processes to {gpus} or "
            "fewer (one process per GPU)."
        )


def layer_classes(model_path: str) -> list[str]:
    """The decoder-layer classes FSDP wraps one unit each (the model class's `_no_split_modules`), or a sentence
    when the model class has none. Reads config.json only; no weights load."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    cls = causal_lm_class(config)
    if cls is None:
        raise SpecError(
            f"FSDP cannot shard {model_path}: transformers has no causal-LM class for model type "
            f"'{config.model_type}'. Use distributed: ddp, or a model of a family transformers knows."
        )
    layers = list(getattr(cls, "_no_split_modules", None) or [])
    if not layers:
        raise SpecError(
            f"FSDP cannot shard {cls.__name__}: the class does not name its decoder layers (_no_split_modules), "
            "so there is no unit to gather one at a time. Use distributed: ddp for this model."
        )
    return layers


def causal_lm_class(config):
    """The class AutoModelForCausalLM builds for this config, or None when transformers has none."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        return None


def fsdp_settings(spec: RunSpec, layers: list[str]) -> dict:
    """accelerate's fsdp_config for this run (the keys `accelerate config` writes)."""
    return {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": ",".join(layers),
        "fsdp_reshard_after_forward": True,
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_sync_module_states": True,  # accelerate requires it with CPU-RAM-efficient loading
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",  # checkpoints stay sharded; final/ is gathered
        "fsdp_offload_params": bool(spec.fsdp_offload),
        "fsdp_activation_checkpointing": bool(spec.gradient_checkpointing),  # FSDP's own, per wrapped layer
    }


def environment(settings: dict) -> dict[str, str]:
    """The FSDP_* variables accelerate's launcher sets from an fsdp_config (accelerate/utils/launch.py
    prepare_multi_gpu_env), so every process builds the same FullyShardedDataParallelPlugin."""
    env = {"ACCELERATE_USE_FSDP": "true"}
    names = {
        "fsdp_version": "FSDP_VERSION",
        "fsdp_auto_wrap_policy": "FSDP_AUTO_WRAP_POLICY",
        "fsdp_transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP",
        "fsdp_reshard_after_forward": "FSDP_RESHARD_AFTER_FORWARD",
        "fsdp_cpu_ram_efficient_loading": "FSDP_CPU_RAM_EFFICIENT_LOADING",
        "fsdp_sync_module_states": "FSDP_SYNC_MODULE_STATES",
        "fsdp_state_dict_type": "FSDP_STATE_DICT_TYPE",
        "fsdp_offload_params": "FSDP_OFFLOAD_PARAMS",
        "fsdp_activation_checkpointing": "FSDP_ACTIVATION_CHECKPOINTING",
    }
    for key, name in names.items():
        value = settings[key]
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def write_accelerate_config(run_dir: Path, spec: RunSpec, settings: dict) -> Path:
    """RUN/accelerate_fsdp.yaml: `accelerate launch --config_file RUN/accelerate_fsdp.yaml -m engine.train
    --config RUN/config.yaml` starts the same processes by hand."""
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "FSDP",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": spec.num_processes,
        "mixed_precision": "no",  # engine.train sets bf16 itself through TrainingArguments
        "fsdp_config": settings,
    }
    path = Path(run_dir) / "accelerate_fsdp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def launch(spec: RunSpec, argv: list[str], python: str) -> tuple[list[str], dict[str, str]]:
    """(command, extra environment) that starts `engine.train argv` once per process."""
    # --multi_gpu: accelerate's torchrun launcher, one process per rank (on a CPU they join a gloo group; without
    # the flag accelerate's simple launcher would start one process that is no rank of anything)
    cmd = [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(spec.num_processes)]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # no warnings per rank
    env: dict[str, str] = {}
    if spec.distributed == "fsdp":
        model = _model_path(spec)
        settings = fsdp_settings(spec, layer_classes(model))
        env = environment(settings)
        if spec.output_dir:
            Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
            write_accelerate_config(Path(spec.output_dir), spec, settings)
    env[LAUNCHED_ENV] = "1"
    return [*cmd, "-m", "engine.train", *argv], env


def allow_on_cpu() -> None:
    """The CPU test path (see the module docstring): before TrainingArguments builds accelerate's state, name this
    gloo process group a multi-device group so AcceleratorState keeps the FSDP plugin the environment asks for."""
    if not (on_cpu_test_path() and os.environ.get("ACCELERATE_USE_FSDP") == "true"):
        return
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True)
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU


def _model_path(spec: RunSpec) -> str:
    """The directory whose config.json names the model class (an earlier run's final/ has its base's config)."""
    from engine import models

    if spec.init_from:
        final = Path(spec.init_from).expanduser() / "final"
        adapter = final / "adapter_config.json"
        if adapter.is_file():
            import json

            return models.resolve(json.loads(adapter.read_text()).get("base_model_name_or_path", ""))
        return str(final)
    return models.resolve(spec.model_name_or_path)
