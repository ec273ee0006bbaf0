"""What we train on: NVIDIA GPUs detected through NVML, or a preset from assets/gpus.yaml to plan for.

    python -m engine.hardware            # what this computer has
    python -m engine.hardware --json     # the same, for scripts
    python -m engine.hardware --presets  # the machines you can plan for

No NVIDIA driver is a normal case (a laptop, a Mac, CI): detection then returns no GPUs and says why.
"""

import argparse
import functools
import json
import os
import platform
import re
import sys
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from engine.paths import ASSETS

PRESETS_FILE = ASSETS / "gpus.yaml"
KINDS = ("cuda", "mps", "cpu")
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere; older cards (T4, V100) train in fp16 instead
GIB = 1024**3


class HardwareError(ValueError):
    """A preset or hardware setting a person got wrong; the message says which and what to do."""


@dataclass(frozen=True)
class Hardware:
    """The machine a plan is for. Every figure is per GPU; `count` says how many (total_* multiply)."""

    name: str
    vram_gib: float  # memory of one GPU; for Apple / CPU the machine's (unified) RAM
    count: int = 1  # GPUs used together (data parallel: each holds a full copy of the model)
    bf16: bool = True  # can train in bfloat16; if not, fp16 mixed precision (cuda) or fp32 (cpu)
    tflops_bf16: float = 0.0  # peak dense 16-bit tensor TFLOP/s of one GPU; 0 = unknown
    usd_per_hour: float | None = None  # indicative price of one GPU per hour; None = owned / not rented
    kind: str = "cuda"  # cuda | mps | cpu
    detected: bool = False  # True = read from this computer, False = a preset or a what-if
    preset: str = ""  # key in gpus.yaml this came from or matched; "" = none

    def __post_init__(self):
        if self.kind not in KINDS:
            raise HardwareError(f"Hardware kind '{self.kind}' is unknown. Use one of: {', '.join(KINDS)}.")
        if not 0 < self.vram_gib < 100_000:
            raise HardwareError(f"Memory of {self.vram_gib} GiB makes no sense; give the GPU memory in GiB, e.g. 24.")
        if not 1 <= self.count <= 1024:
            raise HardwareError(f"GPU count {self.count} makes no sense; give a whole number from 1 to 1024.")

    @property
    def total_vram_gib(self) -> float:
        return self.vram_gib * self.count

    @property
    def total_usd_per_hour(self) -> float | None:
        return None if self.usd_per_hour is None else self.usd_per_hour * self.count

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    kind: str
    vram_gib: float
    bf16: bool
    tflops_bf16: float
    usd_per_hour: float | None
    match: tuple = ()

    def hardware(self, count: int = 1) -> Hardware:
        return Hardware(
            name=self.name,
            vram_gib=self.vram_gib,
            count=count,
            bf16=self.bf16,
            tflops_bf16=self.tflops_bf16,
            usd_per_hour=self.usd_per_hour,
            kind=self.kind,
            detected=False,
            preset=self.key,
        )


@functools.lru_cache(maxsize=4)
def load_presets(path: Path = PRESETS_FILE) -> dict[str, Preset]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise HardwareError(f"Could not read the GPU presets in {path}: {e}. Restore the file from git.") from None
    presets = {}
    for key, values in raw.items():
        try:
            presets[key] = Preset(
                key=key,
                name=str(values["name"]),
                kind=values["kind"],
                vram_gib=float(values["vram_gib"]),
                bf16=bool(values["bf16"]),
                tflops_bf16=float(values["tflops_bf16"]),
                usd_per_hour=None if values.get("usd_per_hour") is None else float(values["usd_per_hour"]),
                match=tuple(values.get("match") or ()),
            )
            presets[key].hardware()  # validates kind and memory
        except (KeyError, TypeError, ValueError) as e:
            raise HardwareError(
                f"Preset '{key}' in {path} is incomplete or wrong ({e}). Every preset needs name, "
                "kind, vram_gib, bf16, tflops_bf16 and usd_per_hour (null if not rented)."
            ) from None
    return presets


def preset_hardware(key: str, count: int = 1) -> Hardware:
    presets = load_presets()
    if key not in presets:
        raise HardwareError(f"Unknown hardware preset '{key}'. Valid presets: {', '.join(presets)}.")
    return presets[key].hardware(count)


# ----------------------------------------------------------------------------------------------- NVML detection
@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_gib: float
    free_gib: float
    used_gib: float
    compute_capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        return tuple(self.compute_capability) >= BF16_MIN_COMPUTE_CAPABILITY


@dataclass(frozen=True)
class Detection:
    gpus: tuple[GpuInfo, ...] = ()
    driver_version: str = ""
    cuda_version: str = ""  # the newest CUDA the driver supports, e.g. "12.4"
    note: str = ""  # why no GPU was found, in plain words; "" when GPUs were found
    detail: str = ""  # the library's own message behind the note, for a "Details" section

    @property
    def count(self) -> int:
        return len(self.gpus)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["count"] = self.count
        for gpu, info in zip(d["gpus"], self.gpus):
            gpu["compute_capability"] = f"{info.compute_capability[0]}.{info.compute_capability[1]}"
            gpu["bf16"] = info.bf16
        return d


_detect_lock = threading.Lock()  # Streamlit serves each browser tab from its own thread


def detect_gpus(refresh: bool = False) -> Detection:
    """Every NVIDIA GPU NVML sees. Cached: the first call costs ~100 ms, later ones nothing; refresh re-reads
    (free memory changes while other programs run)."""
    with _detect_lock:
        if refresh:
            _read_nvml.cache_clear()
        return _read_nvml()


@functools.lru_cache(maxsize=1)
def _read_nvml() -> Detection:
    try:
        import pynvml
    except ImportError:
        return Detection(
            note="GPUs cannot be detected: a library the app needs for it is missing.",
            detail="The NVML library (nvidia-ml-py) is not installed. Install it with "
            "`pip install nvidia-ml-py`, or pick a preset.",
        )
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return Detection(
            note="No NVIDIA GPU was found on this computer.",
            detail=f"The NVIDIA driver is not available ({e}). That is normal on a laptop, a Mac or a "
            "server without a GPU.",
        )
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    total_gib=round(memory.total / GIB, 2),
                    free_gib=round(memory.free / GIB, 2),
                    used_gib=round(memory.used / GIB, 2),
                    compute_capability=(int(major), int(minor)),
                )
            )
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040 = CUDA 12.4
        return Detection(
            gpus=tuple(gpus),
            driver_version=driver,
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
            note="" if gpus else "The NVIDIA driver is installed but reports no GPU.",
        )
    except pynvml.NVMLError as e:
        return Detection(
            note="The NVIDIA driver did not answer properly, so no GPU can be used right now.",
            detail=f"NVML error: {e}. Try `nvidia-smi` in a terminal; until it works, pick a preset.",
        )
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def match_preset(gpu_name: str, vram_gib: float) -> Preset | None:
    """The preset a detected card is (for its TFLOP/s and price); whole words, closest memory wins."""
    candidates = [
        p
        for p in load_presets().values()
        if p.kind == "cuda"
        and any(re.search(rf"(?<![A-Za-z0-9]){re.escape(m)}(?![A-Za-z0-9])", gpu_name, re.IGNORECASE) for m in p.match)
    ]
    return min(candidates, key=lambda p: abs(p.vram_gib - vram_gib), default=None)


def detected_hardware(detection: Detection) -> Hardware | None:
    """The detected GPUs as one Hardware: the first GPU's model, the smallest memory (each GPU holds a copy)."""
    if not detection.gpus:
        return None
    first = detection.gpus[0]
    vram_gib = min(g.total_gib for g in detection.gpus)
    preset = match_preset(first.name, vram_gib)
    return Hardware(
        name=first.name,
        vram_gib=vram_gib,
        count=detection.count,
        bf16=all(g.bf16 for g in detection.gpus),
        tflops_bf16=preset.tflops_bf16 if preset else 0.0,
        usd_per_hour=preset.usd_per_hour if preset else None,
        kind="cuda",
        detected=True,
        preset=preset.key if preset else "",
    )


def this_computer() -> Hardware:
    """What to plan for when nobody chose: the detected GPUs, else this Mac's GPU (MPS), else this CPU."""
    gpus = detected_hardware(detect_gpus())
    if gpus is not None:
        return gpus
    ram_gib = round(_ram_bytes() / GIB, 1) or 16.0
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        apple = load_presets()["apple-m-64"]
        return replace(
            apple.hardware(),
            name=f"This Mac (Apple GPU, {ram_gib:g} GiB unified memory)",
            vram_gib=ram_gib,
            detected=True,
        )
    cpu = load_presets()["cpu"]
    cores = os.cpu_count() or 1
    return replace(
        cpu.hardware(),
        name=f"This computer (CPU only, {cores} cores, {ram_gib:g} GiB RAM)",
        vram_gib=ram_gib,
        tflops_bf16=round(cores * CPU_TFLOPS_PER_CORE, 3),
        detected=True,
    )


# fp32 peak with AVX2 FMA: 2 FMA units x 8 lanes x 2 FLOPs x ~3 GHz = 0.096 TFLOP/s a core
CPU_TFLOPS_PER_CORE = 0.096


def peak_tflops(device_name: str, memory_gib: float) -> float:
    """Dense bf16 peak of a CUDA device by its name (the matching preset), or this CPU's fp32 peak for "cpu";
    0 when unknown."""
    if device_name == "cpu":
        return (os.cpu_count() or 1) * CPU_TFLOPS_PER_CORE
    preset = match_preset(device_name, memory_gib)
    return preset.tflops_bf16 if preset else 0.0


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def custom_gpu(vram_gib: float, count: int = 1) -> Hardware:
    """A what-if NVIDIA GPU of a given size (no speed or price known)."""
    return Hardware(
        name=f"A GPU with {vram_gib:g} GiB",
        vram_gib=vram_gib,
        count=count,
        bf16=True,
        tflops_bf16=0.0,
        usd_per_hour=None,
        kind="cuda",
        detected=False,
    )


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.hardware", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--presets", action="store_true", help="list the presets you can plan for")
    parser.add_argument("--refresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.presets:
        presets = load_presets()
        if args.json:
            print(json.dumps({k: asdict(p) for k, p in presets.items()}, indent=2))
        else:
            for key, p in presets.items():
                price = f"${p.usd_per_hour:g}/h" if p.usd_per_hour is not None else "owned"
                print(
                    f"{key:11} {p.name:58} {p.vram_gib:6.1f} GiB  bf16={'yes' if p.bf16 else 'no ':3}  "
                    f"{p.tflops_bf16:6.1f} TFLOP/s  {price}"
                )
        return 0
    detection = detect_gpus()
    plan = this_computer()
    if args.json:
        print(json.dumps({**detection.to_dict(), "hardware": plan.to_dict()}, indent=2))
        return 0
    if not detection.gpus:
        print(detection.note, detection.detail)
    else:
        print(f"{detection.count} NVIDIA GPU(s), driver {detection.driver_version}, CUDA {detection.cuda_version}")
        for g in detection.gpus:
            cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}"
            print(
                f"  [{g.index}] {g.name}: {g.total_gib:.1f} GiB total, {g.free_gib:.1f} free, {g.used_gib:.1f} used;"
                f" compute capability {cc} (bf16 {'yes' if g.bf16 else 'no'})"
            )
    print(
        f"Planning for: {plan.name} x{plan.count}, {plan.vram_gib:g} GiB each, "
        f"{plan.tflops_bf16:g} TFLOP/s peak" + (f" (preset {plan.preset})" if plan.preset else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


def gpu_usage() -> list[dict]:
    """Each GPU's memory in use and utilisation right now, from NVML (the instructor's view samples this); [] where
    there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001  no driver, no GPUs: nothing to show
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                {
                    "gpu": i,
                    "used_gib": round(memory.used / GIB, 2),
                    "total_gib": round(memory.total / GIB, 2),
                    "util_percent": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                }
            )
        return out
    finally:
        pynvml.nvmlShutdown()
