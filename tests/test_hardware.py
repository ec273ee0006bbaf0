"""NVML detection against a faked NVML (the one place a fake is right: no GPU here), presets, the CLI."""

import json
import subprocess
import sys
import threading
from types import SimpleNamespace

import pynvml
import pytest

from engine import hardware
from engine.hardware import (
    Hardware,
    HardwareError,
    detect_gpus,
    detected_hardware,
    load_presets,
    match_preset,
    preset_hardware,
    this_computer,
)
from engine.paths import REPO

MIB = 1024**2


@pytest.fixture
def fake_nvml(monkeypatch):
    """Installs a fake NVML serving `gpus` [(name, total MiB, used MiB, (major, minor))]; counts nvmlInit calls."""
    state = SimpleNamespace(gpus=[], inits=0, shutdowns=0, init_error=None, count_error=None)

    def init():
        state.inits += 1
        if state.init_error is not None:
            raise pynvml.NVMLError(state.init_error)

    def count():
        if state.count_error is not None:
            raise pynvml.NVMLError(state.count_error)
        return len(state.gpus)

    def memory(handle):
        _, total, used, _ = state.gpus[handle]
        return SimpleNamespace(total=total * MIB, used=used * MIB, free=(total - used) * MIB)

    monkeypatch.setattr(pynvml, "nvmlInit", init)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: setattr(state, "shutdowns", state.shutdowns + 1))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", count)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: state.gpus[h][0])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCudaComputeCapability", lambda h: state.gpus[h][3])
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: b"550.54.15")  # older bindings give bytes
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040)
    hardware._read_nvml.cache_clear()  # forget any earlier (real) reading
    yield state
    hardware._read_nvml.cache_clear()


def test_two_h200s_are_detected_with_memory_capability_driver_and_cuda(fake_nvml):
    fake_nvml.gpus = [("NVIDIA H200", 143771, 1024, (9, 0)), ("NVIDIA H200", 143771, 0, (9, 0))]
    found = detect_gpus()
    assert found.count == 2 and found.note == ""
    first = found.gpus[0]
    assert first.name == "NVIDIA H200" and first.total_gib == pytest.approx(140.4, abs=0.05)
    assert first.used_gib == 1.0 and first.free_gib == pytest.approx(139.4, abs=0.05)
    assert first.compute_capability == (9, 0) and first.bf16
    assert (found.driver_version, found.cuda_version) == ("550.54.15", "12.4")
    hw = detected_hardware(found)
    assert (hw.count, hw.kind, hw.detected, hw.preset, hw.tflops_bf16) == (2, "cuda", True, "h200", 989.0)
    assert this_computer() == hw
    assert fake_nvml.shutdowns == 1


def test_a_t4_has_no_bf16(fake_nvml):
    fake_nvml.gpus = [("Tesla T4", 15360, 0, (7, 5))]
    hw = detected_hardware(detect_gpus())
    assert not detect_gpus().gpus[0].bf16 and not hw.bf16
    assert hw.preset == "t4" and hw.vram_gib == 15.0


def test_no_nvidia_driver_is_a_normal_case_not_an_error(fake_nvml):
    fake_nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    found = detect_gpus()
    assert found.count == 0 and found.note == "No NVIDIA GPU was found on this computer."
    assert "driver is not available" in found.detail  # the library's words go to a Details section
    assert detected_hardware(found) is None
    assert this_computer().kind in ("cpu", "mps") and this_computer().detected


def test_a_driver_error_while_reading_is_reported_in_words(fake_nvml):
    fake_nvml.count_error = pynvml.NVML_ERROR_UNKNOWN
    found = detect_gpus()
    assert found.count == 0 and "driver did not answer" in found.note and "nvidia-smi" in found.detail
    assert fake_nvml.shutdowns == 1


def test_detection_is_cached_thread_safe_and_refreshable(fake_nvml):
    fake_nvml.gpus = [("NVIDIA GeForce RTX 4090", 24564, 0, (8, 9))]
    threads = [threading.Thread(target=detect_gpus) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_nvml.inits == 1
    fake_nvml.gpus[0] = ("NVIDIA GeForce RTX 4090", 24564, 20000, (8, 9))
    assert detect_gpus().gpus[0].used_gib == 0  # cached
    assert detect_gpus(refresh=True).gpus[0].used_gib == pytest.approx(19.5, abs=0.05)
    assert fake_nvml.inits == 2


@pytest.mark.parametrize(
    "name, gib, key",
    [
        ("NVIDIA A100-SXM4-40GB", 40, "a100-40"),
        ("NVIDIA A100-SXM4-80GB", 80, "a100-80"),
        ("NVIDIA A100 80GB PCIe", 80, "a100-80"),
        ("NVIDIA L4", 22.5, "l4"),
        ("NVIDIA L40S", 44.4, None),
        ("NVIDIA H100 80GB HBM3", 79.6, "h100"),
        ("NVIDIA H100 PCIe", 79.6, "h100-pcie"),
        ("NVIDIA GeForce RTX 3060", 12, "rtx-3060"),
        ("NVIDIA A10G", 22.5, "a10g"),
        ("NVIDIA A10", 22.5, None),
    ],
)
def test_detected_names_match_the_right_preset(name, gib, key):
    preset = match_preset(name, gib)
    assert (preset.key if preset else None) == key


def test_presets_cover_the_issue_list_with_sane_figures():
    presets = load_presets()
    expected_gib = {
        "rtx-3060": 12,
        "rtx-4090": 24,
        "t4": 16,
        "l4": 24,
        "a10g": 24,
        "a100-40": 40,
        "a100-80": 80,
        "h100": 80,
        "h200": 141,
        "apple-m-64": 64,
        "cpu": None,
    }
    for key, box_gb in expected_gib.items():
        p = presets[key]
        if box_gb:
            assert box_gb * 0.9 <= p.vram_gib <= box_gb, key  # GiB as nvidia-smi reports, under the box's GB
        assert p.tflops_bf16 > 0
    assert presets["t4"].bf16 is False and presets["cpu"].kind == "cpu" and presets["apple-m-64"].kind == "mps"
    assert presets["h200"].tflops_bf16 == presets["h100"].tflops_bf16 == 989  # dense, not the 1,979 sparse
    assert presets["a100-80"].tflops_bf16 == 312
    assert presets["rtx-3060"].usd_per_hour is None and presets["a100-80"].usd_per_hour > 0


def test_preset_hardware_and_its_errors():
    hw = preset_hardware("a100-80", count=4)
    assert hw.total_vram_gib == 320 and hw.total_usd_per_hour == pytest.approx(4 * hw.usd_per_hour)
    with pytest.raises(HardwareError, match="Valid presets: rtx-3060"):
        preset_hardware("rtx-9090")
    with pytest.raises(HardwareError, match="GiB"):
        Hardware(name="x", vram_gib=0)
    with pytest.raises(HardwareError, match="cuda, mps, cpu"):
        Hardware(name="x", vram_gib=8, kind="tpu")


def test_a_broken_presets_file_names_the_file_and_the_fields(tmp_path):
    bad = tmp_path / "gpus.yaml"
    bad.write_text("mine:\n  name: My GPU\n  kind: cuda\n")
    with pytest.raises(HardwareError, match=r"Preset 'mine' in .*gpus.yaml.*vram_gib"):
        load_presets(bad)


def test_cli_prints_json_on_a_machine_without_a_gpu_as_well():
    out = subprocess.run(
        [sys.executable, "-m", "engine.hardware", "--json"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["count"] == len(found["gpus"])
    assert found["hardware"]["kind"] in ("cuda", "mps", "cpu")
    assert found["count"] > 0 or found["note"]


def _hardware_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/hardware.py").run()
    assert not at.exception
    return at


def test_the_page_on_a_computer_without_a_gpu_says_so_plainly(fake_nvml, monkeypatch):
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")  # a laptop without a GPU, even on a Mac
    fake_nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    at = _hardware_page()
    box = at.info[0].value
    assert box.startswith("No NVIDIA GPU was found on this computer. Training runs on the processor (CPU).")
    assert "NVML" not in box and "Library" not in box  # the library's words wait in Details
    details = next(e for e in at.expander if e.label == "Details")
    assert "NVML Shared Library Not Found" in details.markdown[0].value
    table = at.table[0].value
    assert list(table.index) == ["Fits in memory", "Trains 100 steps within an hour"]
    # memory would hold a multi-billion model with LoRA; time allows about a 1B one on these cores. Both are the
    # estimator's answers for the Estimate page's default run here, by model name, so the two pages agree
    from engine import catalog

    fits, in_an_hour = table.loc["Fits in memory", "LoRA"], table.loc["Trains 100 steps within an hour", "LoRA"]
    assert fits in catalog.names() and in_an_hour in catalog.names()
    from engine.estimate import EstimateRequest, estimate_run

    assert estimate_run(EstimateRequest(model=fits)).params > estimate_run(EstimateRequest(model=in_an_hour)).params
    assert table.loc["Trains 100 steps within an hour", "QLoRA"] == "not offered here"
    assert any("far too long to be useful" in c.value for c in at.caption)


def test_the_page_with_a_gpu_lists_it_and_sizes_by_memory(fake_nvml):
    fake_nvml.gpus = [("NVIDIA GeForce RTX 4090", 24564, 0, (8, 9))]
    at = _hardware_page()
    assert "Found 1 NVIDIA GPU" in at.success[0].value
    assert not any(e.label == "Details" for e in at.expander)
    table = at.table[0].value
    assert list(table.index) == ["Largest catalog model"]
    from engine import catalog

    assert table.loc["Largest catalog model", "LoRA"] in catalog.names(), "the estimator's answer, a real model"
