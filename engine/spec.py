"""RunSpec: the one typed description of a training run, and its config.yaml.

Field names follow TRL's own config classes (SFTConfig / DPOConfig / ModelConfig / ScriptArguments) where TRL has
one, so a config.yaml written here reads naturally next to TRL's tooling. Every default lives in this file; the
estimator reads the same ones, so what we predict is what `engine.train` launches.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

STAGES = ("pt", "sft", "dpo", "rm", "rl")
METHODS = ("full", "lora", "qlora")
STAGE_NAMES = {
    "pt": "continued pretraining",
    "sft": "supervised fine-tuning",
    "dpo": "DPO (preferences)",
    "rm": "reward model",
    "rl": "RL (GRPO)",
}

# Learning rates by stage and method. Full fine-tuning moves every weight, so it takes small steps; LoRA adapters
# start at zero and need ~10x larger ones (the QLoRA paper used 2e-4; TRL's SFT LoRA examples likewise).
# Preference stages (DPO, RL) start from a model that already behaves, so they nudge gently (DPO paper: 5e-7 full,
# TRL's DPO LoRA examples 5e-6..5e-5). The reward model learns a fresh head, so it can move faster.
LEARNING_RATES = {
    ("pt", "full"): 2e-5,
    ("pt", "lora"): 2e-4,
    ("pt", "qlora"): 2e-4,
    ("sft", "full"): 2e-5,
    ("sft", "lora"): 2e-4,
    ("sft", "qlora"): 2e-4,
    ("dpo", "full"): 5e-7,
    ("dpo", "lora"): 5e-5,
    ("dpo", "qlora"): 5e-5,
    ("rm", "full"): 1e-5,
    ("rm", "lora"): 1e-4,
    ("rm", "qlora"): 1e-4,
    ("rl", "full"): 1e-6,
    ("rl", "lora"): 1e-5,
    ("rl", "qlora"): 1e-5,
}

# The embedded 135M model with a fresh LoRA adapter learns a fixed format (the Task API JSON) in tens of steps at
# 1e-3 and ~5x slower at 2e-4 (bench/showcase.py: loss 1.86 -> 0.33 in 6 steps of 8). Small models take larger
# steps; the generic rates above are for the 1B-70B models people usually adapt.
SMALL_MODEL_LORA_LR = 1e-3


# A run on the CPU (the Hardware page's plan when there is no GPU): the embedded model's LoRA SFT on the bundled Task
# API set reaches the seed's targets in this many steps of 8, ~4.5 minutes on 2 cores (bench/showcase.py); one
# held-out pass at the end (a CPU eval pass costs as much as ~10 steps), a checkpoint half-way for resume, and no
# LoRA dropout (RunSpec's default; its input copies were 17 % of a CPU step; 100 steps of a fresh adapter do not
# overfit), kept here so a plan that set one gets the CPU path's setting back.
CPU_RUN = {"max_steps": 100, "eval_steps": 100, "save_steps": 50, "lora_dropout": 0.0}

# Experiment trackers, by transformers' report_to names (engine/tracking.py says where each one writes)
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")

# How the processes of a several-GPU run share the model (engine/distributed.py)
DISTRIBUTED = ("ddp", "fsdp")
DISTRIBUTED_NAMES = {"ddp": "A whole copy on each (DDP)", "fsdp": "Sharded across them (FSDP)"}  # as pages say it

SCHEDULERS = (
    "linear",
    "constant",
    "constant_with_warmup",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "warmup_stable_decay",
)


def _fresh_small_adapter(stage: str, method: str, model: str) -> bool:
    """A new LoRA/QLoRA adapter on the embedded 135M model learning text or a format: the short runs the two
    defaults below are tuned for."""
    return model == "embedded" and method in ("lora", "qlora") and stage in ("pt", "sft")


def default_lr_scheduler(stage: str, method: str, model: str) -> str:
    """A fresh adapter on the small embedded model trains for tens of steps: a rate decaying linearly to zero
    spends half of them at under half the rate (held-out priority accuracy after 80 steps: 78 % linear, 90 %
    constant; bench/showcase.py). Everything else keeps TRL's linear decay."""
    return "constant" if _fresh_small_adapter(stage, method, model) else "linear"


def default_learning_rate(stage: str, method: str, model: str) -> float:
    return SMALL_MODEL_LORA_LR if _fresh_small_adapter(stage, method, model) else LEARNING_RATES[stage, method]


class SpecError(ValueError):
    """A setting a person got wrong; the message says which and what to do."""


@dataclass
class RunSpec:
    stage: str = "sft"  # pt | sft | dpo | rm | rl
    method: str = "lora"  # full | lora | qlora (4-bit NF4 base + LoRA, bitsandbytes; CPU works, slower)
    model_name_or_path: str = "embedded"  # "embedded" = SmolLM2-135M-Instruct shipped with the app
    dataset_name: str = ""  # a data file; empty = the stage's bundled set
    output_dir: str = ""  # the run directory; empty = a new one under TUNEWISE_HOME/runs
    init_from: str = ""  # an earlier run directory whose final/ this stage starts from
    max_steps: int = -1  # > 0 overrides num_train_epochs
    num_train_epochs: float = 1.0
    learning_rate: float = 0.0  # 0 = default_learning_rate(stage, method, model)
    lr_scheduler_type: str = ""  # "" = default_lr_scheduler(stage, method, model); TRL's names
    max_length: int = 512  # tokens per example; longer ones are truncated
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False  # trades ~30% more compute for much less activation memory
    # With checkpointing on: checkpoint every n-th decoder layer only (1: all), the others keep their activations,
    # and/or keep the checkpointed layers' inputs in CPU memory (offload). engine.train picks them itself when it
    # turns checkpointing on for a GPU that is short of memory (engine.estimate.checkpointing_choice).
    checkpoint_every: int = 1
    checkpoint_offload: bool = False
    optim: str = "adamw_torch_fused"  # one fused kernel, no extra copy of the weights per step (transformers' own
    # default for torch >= 2.8); adamw_8bit / paged_adamw_8bit save memory
    lora_r: int = 16  # higher = more capacity and memory; 8-64 is usual
    lora_alpha: int = 32  # scale of the adapter's update; 2 x r is the common choice
    lora_dropout: float = 0.0  # PEFT's default. 0.05 (QLoRA paper, TRL's docs) adds a dropout of
    # every adapted layer's input: 17 % of a CPU step (py-spy), ~5 % of a
    # GPU step's kernel time (bench/profile_run.py), and its memory
    lora_target_modules: str = "all-linear"  # every linear layer but the LM head (QLoRA paper: best quality)
    seed: int = 42
    logging_steps: int = 1  # every step, so the live chart moves; costs nothing measurable
    save_steps: int = 50  # checkpoints, so a stopped run can resume
    eval_steps: int = 50  # held-out loss every N steps (and at the end); a CPU eval pass is slow
    num_processes: int = 1  # > 1: started through `accelerate launch`, one per GPU
    distributed: str = "ddp"  # with num_processes > 1: ddp (a whole copy per GPU) | fsdp (FSDP2: sharded);
    # engine/distributed.py
    fsdp_offload: bool = False  # fsdp only: parameters and optimizer state wait in CPU memory between uses
    report_to: str = "none"  # also log to tensorboard | mlflow | wandb (offline); off by default
    extra: dict = field(default_factory=dict)  # stage-specific TRL fields (e.g. beta for DPO), passed through

    def __post_init__(self):
        if self.stage not in STAGES:
            raise SpecError(f"Unknown stage '{self.stage}'. Choose one of: {', '.join(STAGES)}.")
        if self.method not in METHODS:
            raise SpecError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")
        _positive(self, "max_length", 16, 131072)
        _positive(self, "per_device_train_batch_size", 1, 4096)
        _positive(self, "gradient_accumulation_steps", 1, 4096)
        _positive(self, "lora_r", 1, 1024)
        _positive(self, "lora_alpha", 1, 4096)
        _positive(self, "logging_steps", 1, 10**6)
        _positive(self, "save_steps", 1, 10**6)
        _positive(self, "eval_steps", 1, 10**6)
        _positive(self, "num_processes", 1, 1024)
        _positive(self, "checkpoint_every", 1, 1024)
        if self.max_steps == 0 or self.max_steps < -1:
            raise SpecError(
                f"max_steps is {self.max_steps}; give a positive number of steps, or -1 to train for num_train_epochs."
            )
        if self.max_steps == -1 and not 0 < self.num_train_epochs <= 1000:
            raise SpecError(f"num_train_epochs is {self.num_train_epochs}; give a number between 0 and 1000.")
        if not 0 <= self.learning_rate < 1:
            raise SpecError(
                f"learning_rate is {self.learning_rate}; usual values are 1e-6 to 1e-3 "
                "(0 picks the default for the stage and method)."
            )
        if not 0 <= self.lora_dropout < 1:
            raise SpecError(f"lora_dropout is {self.lora_dropout}; give a value in [0, 1).")
        if self.distributed not in DISTRIBUTED:
            raise SpecError(
                f"Unknown distributed mode '{self.distributed}'. Choose ddp (a whole copy of the model per GPU) "
                "or fsdp (the model sharded across the GPUs)."
            )
        if self.report_to not in REPORT_TO:
            raise SpecError(f"Unknown experiment tracker '{self.report_to}'. Choose one of: {', '.join(REPORT_TO)}.")
        if self.lr_scheduler_type and self.lr_scheduler_type not in SCHEDULERS:
            raise SpecError(
                f"Unknown learning-rate schedule '{self.lr_scheduler_type}'. Choose one of: "
                f"{', '.join(SCHEDULERS)} (or leave it empty for the default)."
            )
        if not self.learning_rate:
            self.learning_rate = default_learning_rate(self.stage, self.method, self.model_name_or_path)
        if not self.lr_scheduler_type:
            self.lr_scheduler_type = default_lr_scheduler(self.stage, self.method, self.model_name_or_path)

    @property
    def uses_peft(self) -> bool:
        return self.method in ("lora", "qlora")

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SpecError(f"Unknown setting(s) {', '.join(unknown)}. Known settings: {', '.join(known)}.")
        clean = {}
        for name, value in values.items():
            kind = type(getattr(cls(), name))
            clean[name] = _coerce(name, value, kind)
        return cls(**clean)

    @classmethod
    def load(cls, path: Path) -> "RunSpec":
        return cls.from_dict(cls.read_settings(path))

    @classmethod
    def read_settings(cls, path: Path) -> dict:
        """The settings a config file sets, checked, without the defaults of those it leaves out: a caller that
        adds flags (`--config part.yaml --method full`) must get the defaults of the run it ends with (the
        learning rate of full fine-tuning, not the one resolved for the file's own defaults)."""
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SpecError(f"Config file {path} does not exist.") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SpecError(f"Config file {path} is not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise SpecError(f"Config file {path} must hold settings as `name: value` lines.")
        checked = cls.from_dict(values)
        return {name: getattr(checked, name) for name in values}


def _positive(spec, name, low, high):
    value = getattr(spec, name)
    if not low <= value <= high:
        raise SpecError(f"{name} is {value}; give a whole number from {low} to {high}.")


def _coerce(name, value, kind):
    """YAML and form values into the field's type, with a sentence when that is impossible."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "on"):
            return True
        if str(value).lower() in ("false", "no", "0", "off"):
            return False
    elif kind is dict:
        if isinstance(value, dict):
            return value
    else:
        try:
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise SpecError(f"{name} must be {kind.__name__}, not {value!r}.")
