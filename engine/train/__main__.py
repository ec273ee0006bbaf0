"""Train one stage of the lesson's spectrum and write a run directory.

    python -m engine.train --output-dir runs/demo                      # LoRA SFT of the embedded model, bundled data
    python -m engine.train --stage sft --method lora --max-steps 50 --output-dir runs/demo
    python -m engine.train --config runs/demo/config.yaml              # what the app starts
    python -m engine.train --output-dir runs/demo --resume             # continue from the last checkpoint
    python -m engine.train --num-processes 2 ...                       # several GPUs, through `accelerate launch`
    python -m engine.train --num-processes 2 --distributed fsdp ...    # the model sharded across them (FSDP2)

Exit codes: 0 completed or stopped on request, 1 failed while training, 2 a setting, model or dataset is wrong.
"""

import importlib
import os
import sys
import traceback

from engine import distributed, rundir
from engine.spec import SpecError
from engine.train import common


class _Tee:
    """From a shell, everything printed also lands in train.log (the app redirects it there itself)."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep what a training step frees for the next step. By default it hands blocks of a few
    MiB back to the kernel (mmap/munmap, heap trimming), and the next step's tensors of the same sizes fault every
    page in again, zeroed: on the embedded model's CPU steps, 1.1 M page faults and 5.6 s of kernel time over eight
    steps and the load, 0.45 M and 2.5 s with this (`perf`: clear_page_erms). Host memory only; a no-op elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl)
        return
    mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: blocks under 32 MiB (the most it allows) come from the heap
    mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never give the top of the heap back
    mallopt(-2, 256 * 2**20)  # M_TOP_PAD: grow the heap in 256 MiB steps


def unfragmented_gpu_memory() -> None:
    """Let torch's CUDA allocator grow its segments in place (expandable_segments) unless the person set
    PYTORCH_CUDA_ALLOC_CONF. With fixed segments, a big block freed mid-step (the LM head's fp32 weight gradient, a
    checkpointed layer's rebuild) leaves a hole later tensors cannot all use: up to 2.3 GiB reserved but free at the
    peak (Qwen2.5-1.5B full DPO 512 x 2; bench/results/memory_snapshot.jsonl). torch's own out-of-memory message
    recommends this setting; it is read when CUDA first allocates, so it must be set before."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def skip_bitsandbytes(spec) -> None:
    """On a machine without an NVIDIA GPU, a run that neither quantises (QLoRA) nor uses an 8-bit or paged optimizer
    has no use for bitsandbytes, and PEFT imports it (with torch's inductor behind it) as soon as it is installed:
    2.4-3.4 s of every CPU run's start here. Marked missing in sys.modules, find_spec reports it absent, so PEFT,
    transformers and TRL leave it alone. Only in a process of its own: a caller may need it later."""
    needs = spec.method == "qlora" or any(k in spec.optim for k in ("8bit", "bnb", "paged"))
    if not needs and not os.path.exists("/dev/nvidiactl"):
        sys.modules.setdefault("bitsandbytes", None)


def main(argv=None) -> int:
    own_process = argv is None  # `python -m engine.train`, not a caller in its own process (tests, benchmarks)
    argv = sys.argv[1:] if argv is None else argv
    if own_process:  # process-wide settings: not for a caller's process
        keep_freed_memory()
        unfragmented_gpu_memory()
    try:
        spec, resume = common.parse(argv)
    except SpecError as e:
        return common.fail(None, str(e), 2)
    if own_process:
        skip_bitsandbytes(spec)
    if spec.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        if os.environ.get(distributed.LAUNCHED_ENV):
            return common.fail(None, "accelerate started this process without a rank (LOCAL_RANK is not set).", 1)
        # One process per GPU, started by accelerate (DDP or FSDP2); the same flags reach every process.
        from engine.models import ModelError

        if not spec.output_dir:  # one name for every rank (each would otherwise stamp its own)
            spec.output_dir = str(common.new_run_dir(spec))
            argv = [*argv, "--output-dir", spec.output_dir]
        try:
            distributed.check(spec, common.gpu_count())
            cmd, env = distributed.launch(spec, argv, sys.executable)
        except (SpecError, ModelError) as e:
            return common.fail(None, str(e), 2)
        os.environ.update(env)
        os.execvp(cmd[0], cmd)
    try:
        run_dir = common.prepare_run_dir(spec, resume)
    except SpecError as e:
        return common.fail(None, str(e), 2)
    if not os.environ.get("TUNEWISE_LOG_REDIRECTED") and common.is_main_process():
        log = open(run_dir / "train.log", "a", buffering=1)
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    if common.is_main_process():
        rundir.write_status(run_dir, "running", pid=os.getpid(), error=None)
    print(f"run directory: {run_dir}", flush=True)
    common.StopRequested.install(run_dir)
    from engine.data import DataError
    from engine.models import ModelError

    try:
        stage = importlib.import_module(f"engine.train.{spec.stage}")
        return stage.main(spec, run_dir, resume)
    except (SpecError, ModelError, DataError) as e:
        return common.fail(run_dir, str(e), 2)
    except Exception as e:  # noqa: BLE001  (the traceback goes to train.log, a sentence to status.json)
        traceback.print_exc()
        return common.fail(run_dir, common.explain_failure(e), 1)


if __name__ == "__main__":
    sys.exit(main())
