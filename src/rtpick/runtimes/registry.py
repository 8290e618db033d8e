"""Runtime names -> runtime classes, imported on demand so that listing runtimes imports nothing heavy."""

from __future__ import annotations

import importlib
from functools import cache

from rtpick.errors import RtpickError
from rtpick.runtimes.base import PRECISIONS, Availability, Runtime

# name -> "module:Class". The order is the order of listings and of `rtpick demo`: CPU first, then GPU.
RUNTIMES: dict[str, str] = {
    "ort-cpu": "rtpick.runtimes.ort:OrtCpu",
    "torch-cpu": "rtpick.runtimes.torch:TorchCpu",
    "torch-compile-cpu": "rtpick.runtimes.torch_compile:TorchCompileCpu",
    "torch-cuda": "rtpick.runtimes.torch:TorchCuda",
    "torch-compile-cuda": "rtpick.runtimes.torch_compile:TorchCompileCuda",
    "ort-cuda": "rtpick.runtimes.ort:OrtCuda",
    "tensorrt": "rtpick.runtimes.tensorrt:TensorRT",
    "ort-tensorrt": "rtpick.runtimes.ort_tensorrt:OrtTensorRT",
}


@cache
def get_runtime(name: str) -> Runtime:
    """The runtime called `name`; an unknown name is the user's mistake, answered with the known ones."""
    target = RUNTIMES.get(name)
    if target is None:
        raise RtpickError(f"unknown runtime {name!r}; the runtimes are: {', '.join(RUNTIMES)}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


@cache
def availability(name: str) -> Availability:
    """Whether `name` runs here, checked once per process (it may import the runtime's library)."""
    try:
        return get_runtime(name).availability()
    except RtpickError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken install is a fact to report, not a crash
        return Availability(False, f"checking it failed: {type(exc).__name__}: {exc}")


def available_runtimes() -> list[str]:
    return [name for name in RUNTIMES if availability(name).ok]


def parse_config(text: str) -> tuple[str, str]:
    """``runtime[:precision]`` -> (runtime, precision); precision defaults to fp32."""
    runtime, _, precision = text.strip().partition(":")
    precision = precision or "fp32"
    if runtime not in RUNTIMES:
        raise RtpickError(f"unknown runtime {runtime!r} in {text!r}; the runtimes are: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise RtpickError(f"unknown precision {precision!r} in {text!r}; precisions are: {', '.join(PRECISIONS)}")
    supported = get_runtime(runtime).precisions
    if precision not in supported:
        raise RtpickError(f"{runtime} does not support {precision}; it supports {', '.join(supported)}")
    return runtime, precision


def parse_configs(text: str) -> list[tuple[str, str]]:
    configs = [parse_config(part) for part in text.split(",") if part.strip()]
    if not configs:
        raise RtpickError("no configuration given; use -r runtime:precision[,runtime:precision...]")
    return configs

