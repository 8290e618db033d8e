"""torch.compile with Inductor: torch-compile-cpu and torch-compile-cuda, the eager runtimes plus a compile step.

Everything about running a module (casts, CUDA graphs, sessions) is the eager runtimes' (`runtimes/torch.py`);
this module adds what compiling needs: Inductor's caches in rtpick's cache dir, a time limit on a compile, one
static graph per input shape unless `dynamic`, freezing, and fp8 (Inductor fuses the activations' FP8
quantisation into the kernel before each GEMM, which eager torch-cuda cannot).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from rtpick.errors import BuildError, RtpickError
from rtpick.model import Model
from rtpick.runtimes._gpu import torch_cuda_availability
from rtpick.runtimes.base import COST_COMPILE, COST_MINUTES, Availability, Option, SpeedRule, Variant
from rtpick.runtimes.torch import _CUDNN_BENCHMARK, TF32_COVERS_FP32, TorchCuda, TorchRuntime, TorchSession, _torch
from rtpick.settings import cache_dir

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _use_rtpick_compile_caches() -> None:
    """Keep Inductor's and Triton's caches under rtpick's cache dir, so a second build of a configuration is
    fast and a user can find (or delete) them; an explicit user setting wins."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir() / "triton"))


@contextlib.contextmanager
def _time_limit(seconds: float, what: str) -> Iterator[None]:
    """Abort a compile that runs past `seconds` (main thread on POSIX only; elsewhere bench's process limit)."""
    usable = seconds > 0 and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} exceeded its time limit of {seconds:g} s (option compile_timeout_s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compiler_availability() -> Availability:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not compiler:
        return Availability(False, "torch.compile on the CPU needs a C++ compiler (install g++)")
    return Availability(True)


STATIC_GRAPHS_PER_FUNCTION = 64  # e.g. every batch size 1..64 that a dynamic batcher can form


def _allow_graphs_per_shape(torch: Any, count: int) -> None:
    """Raise Dynamo's per-function recompile limit (8 by default, after which it silently runs eager) so that a
    static compile can hold one graph per batch size. Only ever raised, never lowered: it is process-wide."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    if getattr(config, name) < count:
        setattr(config, name, count)


class _Compiled:
    """Mixin: wrap the module in torch.compile with Inductor, its caches in rtpick's cache dir."""

    compiled = True
    name: str

    def _wrap(self, module: Any, options: Mapping[str, Any]) -> Any:
        _use_rtpick_compile_caches()
        torch = _torch()
        with contextlib.suppress(Exception):
            import torch._inductor.config as inductor_config

            inductor_config.fx_graph_cache = True
        # dynamic=False, not None: None lets Dynamo turn the batch dim symbolic at the second batch size it sees
        # ("automatic dynamic shapes"), so the option's "one static graph per shape" would silently stop being
        # true behind a dynamic batcher. Static means one graph per shape, so allow enough of them.
        dynamic = bool(options["dynamic"])
        if not dynamic:
            _allow_graphs_per_shape(torch, STATIC_GRAPHS_PER_FUNCTION)
        extra = dict(options.get("inductor_config") or {})  # a precision's own Inductor settings (fp8)
        if not options.get("freezing") and not extra:
            return torch.compile(module, mode=options["mode"], dynamic=dynamic, fullgraph=False)
        from torch._inductor import list_mode_options

        if not options.get("freezing"):  # a mode or an options dict, not both: the mode spelled out as options
            settings = {**list_mode_options(options["mode"], dynamic), **extra}
            return torch.compile(module, options=settings, dynamic=dynamic, fullgraph=False)
        # torch.compile takes a mode or an options dict, not both: spell the mode out as its options, plus
        # freezing (weights become constants: conv+batch-norm folded, weight layouts chosen once at compile).
        # Inductor freezes the weights of the module it is given, not those of a module nested in it: compiled
        # inside the IOCast wrapper, ResNet-50's weights stayed graph inputs and lost their "static" mark, so
        # under CUDA graphs all 269 were copied into the graph before every replay (3.4 ms a batch-1 call
        # instead of 1.3: results/h100/README.md). So the model itself is compiled, and the casts around it
        # run eagerly.
        settings = {**list_mode_options(options["mode"], dynamic), "freezing": True, **extra}
        module.inner = torch.compile(module.inner, options=settings, dynamic=dynamic, fullgraph=False)
        return module

    def _warm_up(self, session: TorchSession, model: Model, shapes: Mapping[str, tuple[int, ...]],
                 options: Mapping[str, Any]) -> None:
        what = f"{self.name} compile"
        try:
            with _time_limit(float(options["compile_timeout_s"]), what):
                TorchRuntime._warm_up(self, session, model, shapes, options)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise BuildError(str(exc)) from exc
        except RtpickError:
            raise
        except Exception as exc:  # noqa: BLE001 - Dynamo/Inductor raise many types; each is a failed build
            first = str(exc).strip().splitlines()
            raise BuildError(f"{what} failed: {type(exc).__name__}: {first[0] if first else ''}") from exc


_COMPILE_OPTIONS = {
    "dynamic": Option(False, "compile one graph with symbolic shapes (otherwise one static graph per input shape, "
                             f"up to {STATIC_GRAPHS_PER_FUNCTION})"),
    "compile_timeout_s": Option(600.0, "abort a compile that takes longer than this"),
    "freezing": Option(False, "Inductor freezing: weights as constants, conv+batch-norm folded at compile time"),
}

class TorchCompileCpu(_Compiled, TorchRuntime):
    """torch.compile with Inductor on the CPU (C++/OpenMP kernels)."""

    name = "torch-compile-cpu"
    device = "cpu"
    precisions = ("fp32", "bf16")
    options: ClassVar[dict[str, Option]] = {
        **TorchRuntime.options,
        "mode": Option("default", "torch.compile mode", ("default", "max-autotune-no-cudagraphs")),
        **_COMPILE_OPTIONS,
    }
    # Freezing is tried only where the default fails: built by rtpick, the two ran within a few % of each other
    # on the CPU (ResNet-50 on a 16-core AMX host, three small models on 2 cores: the unfrozen one as fast or a
    # little faster; benchmarks/results/cpu_compile_freezing*.md), and each costs one compile per batch size of
    # an offline sweep (3-4 s each for the demo model on 2 cores, half of a cold throughput search's probing).
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(cost=COST_COMPILE),
        Variant({"freezing": True}, COST_COMPILE, why="weights as constants: conv+BN folded, packed once",
                fallback_for={}, fallback_why="the two measured within a few % of each other on CPUs, the "
                "unfrozen one as fast or faster (benchmarks/results/cpu_compile_freezing*.md)"),
    )

    def _extra_availability(self) -> Availability:
        return _compiler_availability()

    def _wrap(self, module: Any, options: Mapping[str, Any]) -> Any:
        """Inductor's per-process instruction-set checks are answered from an earlier process on this machine
        where they passed (`rtpick.runtimes.inductor_isa`: 45 s of a warm ResNet-50 compile on a 16-core AMX
        host)."""
        from rtpick.runtimes import inductor_isa

        inductor_isa.remember_checks(_torch())
        return super()._wrap(module, options)


class TorchCompileCuda(_Compiled, TorchCuda):
    """torch.compile with Inductor on an NVIDIA GPU (Triton kernels; CUDA graphs in reduce-overhead).

    fp8 is offered here and not on eager torch-cuda: only Inductor fuses the activations' FP8 quantisation into
    the kernel before each GEMM; eager would run it as a separate cast per layer, measured slower than fp16.
    """

    name = "torch-compile-cuda"
    precisions = ("fp32", "tf32", "fp16", "bf16", "fp8")
    options: ClassVar[dict[str, Option]] = {
        "channels_last": Option(True, "channels_last memory format for 4-D inputs and weights"),
        "mode": Option("default", "torch.compile mode", COMPILE_MODES),
        "cudnn_benchmark": _CUDNN_BENCHMARK,
        "device_id": Option(0, "which GPU"),
        **_COMPILE_OPTIONS,
    }
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(cost=COST_COMPILE, fallback_for={"mode": "reduce-overhead"}),
        Variant({"mode": "reduce-overhead"}, COST_COMPILE, why="Inductor kernels replayed in CUDA graphs"),
        Variant({"mode": "reduce-overhead", "freezing": True}, COST_COMPILE,
                why="CUDA graphs with frozen weights (no weight copies into the graph)"),
        Variant({"mode": "max-autotune"}, COST_MINUTES, why="autotuned GEMM/conv kernels and CUDA graphs"),
    )

    precision_fallbacks: ClassVar[dict[str, tuple[str, str]]] = {"fp32": ("tf32", TF32_COVERS_FP32)}

    def _extra_availability(self) -> Availability:
        state = torch_cuda_availability()
        if state.ok and importlib.util.find_spec("triton") is None:
            return Availability(False, "torch.compile on CUDA needs triton (pip install triton)")
        return state

    def precision_availability(self, precision: str) -> Availability:
        if precision != "fp8":
            return Availability(True)
        from rtpick.runtimes.fp8 import device_support

        reason = device_support()
        return Availability(not reason, reason)

    def speed_rule(self, precision: str) -> SpeedRule | None:
        """fp8 is chosen for speed only where it beat this runtime's best fp16/bf16 (the never-slower rule)."""
        if precision != "fp8":
            return None
        from rtpick.runtimes.fp8 import fp8_speed_verdicts

        return fp8_speed_verdicts
