"""GPU probes shared by the CUDA runtimes (ORT, torch, TensorRT), answered without importing torch.

Listing runtimes must be fast on a machine without a GPU, and importing torch to learn there is none costs
seconds. So the questions are asked of the cheapest source that knows:

- is there an NVIDIA GPU? NVML (through pynvml when installed, else ``libnvidia-ml.so.1`` by ctypes), else the
  driver API (``libcuda.so.1``). On a machine without the driver each library fails to load in microseconds.
  NVML is asked first because it creates no CUDA context (a parent process that initialised CUDA cannot fork
  a child that uses it).
- is torch installed, and is it a CUDA build? `importlib.util.find_spec` and torch's own ``version.py``, read as
  text, never imported.
- does TensorRT's library load? ``libnvinfer`` by ctypes.

torch is imported only where a GPU exists and a CUDA build is installed, to ask whether torch itself can use it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
from functools import cache
from pathlib import Path

from rtpick.runtimes.base import Availability

NO_GPU = "no NVIDIA GPU is visible on this machine"


@cache
def nvidia_gpu_count() -> int:
    """GPUs the NVIDIA driver sees (0 when there is no driver), asked once per process."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return 0  # every GPU hidden from CUDA, so from every runtime here
    for probe in (_nvml_count_pynvml, _nvml_count_ctypes, _cuda_driver_count):
        count = probe()
        if count is not None:
            return count
    return 0


def _nvml_count_pynvml() -> int | None:
    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML library, or no driver: ask the next source
        return None


def _nvml_count_ctypes() -> int | None:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
        try:
            count = ctypes.c_uint(0)
            return int(count.value) if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 else None
        finally:
            nvml.nvmlShutdown()
    except AttributeError:
        return None


def _cuda_driver_count() -> int | None:
    """The driver API's count; initialises CUDA in this process, so it is the last resort."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        return int(count.value) if cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0
    except AttributeError:
        return None


def gpu_availability() -> Availability:
    """Whether an NVIDIA GPU is visible, with the reason when not."""
    return Availability(True) if nvidia_gpu_count() > 0 else Availability(False, NO_GPU)


# ---------------------------------------------------------------------------------------------------- torch


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


@cache
def torch_build() -> tuple[str, str | None] | None:
    """(torch version, its CUDA version or None for a CPU-only build), read from torch's ``version.py`` without
    importing torch; None when torch is not installed or the file does not say."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    return parse_torch_version_file(text)


def parse_torch_version_file(text: str) -> tuple[str, str | None] | None:
    """(``__version__``, ``cuda``) from the text of torch's ``version.py``; None when it does not say."""
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    cuda = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*(None|['\"]([^'\"]*)['\"])\s*$", text, re.M)
    if version is None or cuda is None:
        return None
    return version.group(1), cuda.group(2) if cuda.group(1) != "None" else None


def torch_cuda_availability(needs: str = "") -> Availability:
    """Whether torch can use a CUDA GPU here. `needs` prefixes the reason when torch serves another runtime
    ("the tensorrt runtime uses torch for device buffers").

    A machine without a GPU is answered without importing torch; where the build is CPU-only that is said too.
    """
    prefix = f"{needs}, and " if needs else ""
    if not torch_installed():
        return Availability(False, f"{prefix}torch is not installed (pip install 'rtpick[torch]'; a CUDA build)")
    build = torch_build()
    cpu_only = build is not None and build[1] is None
    cpu_only_words = f"this torch ({build[0]}) is a CPU-only build; install a CUDA build" if cpu_only else ""
    gpu = gpu_availability()
    if not gpu.ok:
        return Availability(False, gpu.reason + (f" (and {cpu_only_words})" if cpu_only else ""))
    if cpu_only:
        return Availability(False, prefix + cpu_only_words)
    import torch

    if torch.version.cuda is None:
        return Availability(False, f"{prefix}this torch ({torch.__version__}) is a CPU-only build; "
                            "install a CUDA build")
    if not torch.cuda.is_available():
        return Availability(False, f"{prefix}torch sees no usable CUDA GPU (driver or CUDA version mismatch?)")
    return Availability(True)


# ---------------------------------------------------------------------------------------------------- TensorRT


def nvinfer_availability() -> Availability:
    """TensorRT's runtime library must load for the TensorRT provider to do anything but fall back."""
    return Availability(True) if nvinfer_version() else Availability(
        False, "TensorRT's library libnvinfer.so.10 does not load (install TensorRT 10: "
        "pip install 'tensorrt>=10,<11', on a machine that reaches NVIDIA's package index)")


def nvinfer_version() -> str:
    """The version of the libnvinfer that loads here ("100900" for 10.9.0), or "" when none loads.

    ``getInferLibVersion`` is part of TensorRT's C API; asking the library keeps torch and tensorrt unimported.
    TensorRT's pip wheels put their libraries in the ``tensorrt_libs`` package, off the loader's path: those are
    loaded by full path into the global namespace first, so that the provider's own ``dlopen`` by name finds them.
    """
    _preload_pip_tensorrt()
    for candidate in ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"):
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        try:
            lib.getInferLibVersion.restype = ctypes.c_int32
            return str(int(lib.getInferLibVersion()))
        except AttributeError:
            return "unknown"
    return ""


def _preload_pip_tensorrt() -> None:
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations)))
    for stem in ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser"):
        for path in sorted(folder.glob(f"{stem}.so.*")):
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                break
            except OSError:
                continue
