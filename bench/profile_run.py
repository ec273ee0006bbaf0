"""Where a training step's time goes: `python -m engine.train` (or the plain TRL script of bench/throughput.py) with
torch.profiler over a few steps after warm-up, printing the kernels that take the GPU's time and how busy the GPU
was over those steps' wall time (a GPU busy well under 100 % means the step is bound by the host: Python and
kernel launches, not FLOPs).

    python bench/profile_run.py [--steps 6,9] -- --stage sft --method qlora --model DIR --dataset FILE ...
    python bench/profile_run.py --plain CFG_JSON --model-dir DIR --data FILE --out DIR   # the plain script
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def profiler_callback(first: int, last: int, label: str):
    import torch
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        prof = None
        started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == first - 1 and self.prof is None:  # global_step counts finished steps
                torch.cuda.is_available() and torch.cuda.synchronize()
                self.prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                )
                self.prof.__enter__()
                self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == last and self.prof is not None:
                torch.cuda.is_available() and torch.cuda.synchronize()
                wall = time.perf_counter() - self.started
                self.prof.__exit__(None, None, None)
                events = self.prof.key_averages()
                kernels = [e for e in self.prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
                gpu = sum(e.time_range.elapsed_us() for e in kernels) / 1e6  # kernel time, each kernel once
                launches = sum(
                    e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")
                )
                steps = last - first + 1
                print(
                    json.dumps(
                        {
                            "profile": label,
                            "steps": steps,
                            "wall_s_per_step": wall / steps,
                            "gpu_busy_s_per_step": gpu / steps,
                            "gpu_busy": gpu / wall,
                            "launches_per_step": launches / steps,
                        }
                    ),
                    flush=True,
                )
                print(
                    events.table(
                        sort_by="self_device_time_total" if kernels else "self_cpu_time_total",
                        row_limit=25,
                        max_name_column_width=60,
                    ),
                    flush=True,
                )
                self.prof = None

    return Profile()


def with_profiler(first: int, last: int, label: str):
    """Make every Trainer this process builds carry the profiler callback."""
    with_callback(lambda: profiler_callback(first, last, label))


def with_callback(make) -> None:
    """Make every Trainer this process builds carry the callback make() returns (bench/memory_snapshot.py too)."""
    from transformers import Trainer

    original = Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(make())

    Trainer.__init__ = init


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="6,9", help="first,last step profiled (1-based, inclusive)")
    p.add_argument("--label", default="app")
    p.add_argument("--plain", help="profile bench/throughput.py's plain TRL script for this config (JSON)")
    p.add_argument("--model-dir")
    p.add_argument("--data")
    p.add_argument("--out")
    args, rest = p.parse_known_args()
    first, last = (int(x) for x in args.steps.split(","))
    with_profiler(first, last, args.label)
    if args.plain:
        from bench import throughput

        return (
            throughput.plain(argparse.Namespace(cfg=args.plain, model_dir=args.model_dir, data=args.data, out=args.out))
            or 0
        )
    from engine.train.__main__ import main as train

    return train([a for a in rest if a != "--"])


if __name__ == "__main__":
    sys.exit(main())
