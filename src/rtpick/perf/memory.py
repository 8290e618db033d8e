"""Peak host and GPU memory of this process, and GPU clock/temperature during a measurement.

GPU memory is read from NVML's list of compute processes, filtered to our pid, because that counts every
allocator in the process (ONNX Runtime's arena, TensorRT's, torch's caching allocator) — torch's own
`max_memory_allocated` sees only torch and is reported beside it as a second figure. Without pynvml or a GPU
each figure says "not measured (why)"; nothing here ever raises into a benchmark.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
from typing import Any

CLOCK_DROP_WARN = 0.10  # warn when the SM clock falls more than 10% below its level at the start


def _nvml() -> tuple[Any, str]:
    """(pynvml module initialised, "") or (None, reason)."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVML raises its own error types; all mean "no GPU data"
        return None, f"NVML did not start: {exc}"
    return pynvml, ""


def _device_index(cuda_index: int = 0) -> int:
    """NVML's index for CUDA device `cuda_index` of this process (CUDA_VISIBLE_DEVICES renumbers them)."""
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    entry = visible[cuda_index] if cuda_index < len(visible) else ""
    return int(entry) if entry.isdigit() else cuda_index


def nvml_device(cuda_index: int = 0) -> tuple[Any, Any, str]:
    """(pynvml initialised, handle of CUDA device `cuda_index`, "") or (None, None, reason): the one NVML lookup
    every GPU tracker here uses (memory and clocks in `Monitor`, energy and clock events in `perf.energy`)."""
    nvml, reason = _nvml()
    if nvml is None:
        return None, None, reason
    try:
        return nvml, nvml.nvmlDeviceGetHandleByIndex(_device_index(cuda_index)), ""
    except Exception as exc:  # noqa: BLE001
        return None, None, f"NVML has no handle for the device: {exc}"


def process_gpu_bytes(nvml: Any, handle: Any, pid: int) -> int | None:
    """GPU memory NVML attributes to `pid` on `handle`; None when NVML cannot say (e.g. inside a container)."""
    try:
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001
        return None
    for proc in procs:
        if proc.pid == pid and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory)
    return None


def peak_rss_bytes() -> int:
    """The process's lifetime peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class Monitor:
    """A sampling thread for one measurement: host RSS, this process's GPU memory, SM clock and temperature.

    Use as a context manager around the measured loop; `report()` gives the figures with how they were taken.
    Sampling every 20 ms costs well under 1% of one core.
    """

    def __init__(self, gpu: bool, interval_s: float = 0.02) -> None:
        self.gpu = gpu
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rss_peak = 0
        self.gpu_peak: int | None = None
        self.clocks: list[int] = []
        self.temps: list[int] = []
        self.gpu_reason = "" if gpu else "the configuration runs on the CPU"
        self._nvml: Any = None
        self._handle: Any = None
        self._pid = os.getpid()

    def __enter__(self) -> Monitor:
        import psutil

        self._proc = psutil.Process(self._pid)
        if self.gpu:
            self._nvml, self._handle, reason = nvml_device()
            if self._nvml is None:
                self.gpu_reason = reason
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rtpick-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        with contextlib.suppress(Exception):  # a failed sample is skipped; the peak stays a lower bound
            self.rss_peak = max(self.rss_peak, int(self._proc.memory_info().rss))
        if self._nvml is None:
            return
        nvml = self._nvml
        used = process_gpu_bytes(nvml, self._handle, self._pid)
        if used is not None:
            self.gpu_peak = max(self.gpu_peak or 0, used)
        try:
            self.clocks.append(int(nvml.nvmlDeviceGetClockInfo(self._handle, nvml.NVML_CLOCK_SM)))
            self.temps.append(int(nvml.nvmlDeviceGetTemperature(self._handle, nvml.NVML_TEMPERATURE_GPU)))
        except Exception:  # noqa: BLE001, S110
            pass

    def report(self) -> dict[str, Any]:
        """Figures with units and method; `warnings` lists clock drops worth a reader's attention."""
        out: dict[str, Any] = {
            "host_rss_peak_mb": self.rss_peak / 2**20,
            "host_rss_method": "psutil RSS sampled every 20 ms during the measurement",
            "process_rss_peak_mb": peak_rss_bytes() / 2**20,
            "warnings": [],
        }
        if self._nvml is None:
            out["gpu_memory"] = f"not measured ({self.gpu_reason})"
            out["gpu_clock"] = f"not measured ({self.gpu_reason})"
            return out
        out["gpu_memory_peak_mb"] = None if self.gpu_peak is None else self.gpu_peak / 2**20
        if self.gpu_peak is None:
            out["gpu_memory"] = "not measured (NVML does not list this process, e.g. inside a container)"
        out["gpu_memory_method"] = "NVML per-process used memory sampled every 20 ms (all allocators)"
        torch_peak = _torch_peak_mb()
        if torch_peak is not None:
            out["torch_max_allocated_mb"] = torch_peak
        if self.clocks:
            first, low = self.clocks[0], min(self.clocks)
            out.update(sm_clock_mhz_start=first, sm_clock_mhz_min=low, sm_clock_mhz_max=max(self.clocks))
            if first > 0 and (first - low) / first > CLOCK_DROP_WARN:
                out["warnings"].append(
                    f"GPU SM clock dropped from {first} MHz to {low} MHz during measurement "
                    f"({(first - low) / first:.0%}); thermal or power throttling makes these figures pessimistic"
                )
        if self.temps:
            out.update(gpu_temp_c_start=self.temps[0], gpu_temp_c_max=max(self.temps))
        return out


def _torch_peak_mb() -> float | None:
    """torch's own peak allocation, only if torch is already in use here (never imported for this)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001
        return None


def gpu_inventory() -> dict[str, Any]:
    """GPUs, driver and memory for the results' environment; a reason instead when NVML is not there."""
    nvml, reason = _nvml()
    if nvml is None:
        return {"gpus": [], "driver": None, "reason": f"not measured ({reason})"}
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append({
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_mb": mem.total / 2**20,
            })
        return {"gpus": gpus, "driver": driver.decode() if isinstance(driver, bytes) else driver}
    except Exception as exc:  # noqa: BLE001
        return {"gpus": [], "driver": None, "reason": f"not measured (NVML query failed: {exc})"}
