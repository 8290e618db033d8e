"""PyTorch: torch-cpu and torch-cuda (eager, optional CUDA graphs); torch_compile.py adds Inductor's two.

Reduced precision casts the whole module (``module.to(torch.float16)``), as an engine would, while inputs and
outputs keep the model's declared dtypes: callers always feed and receive fp32, whatever the precision.
tf32 is PyTorch's matmul/cuDNN switch, and cuDNN's algorithm search (option ``cudnn_benchmark``) another; both
are set for each run so that sessions in one process keep their own (an fp32 session next to a tf32 one stays
true fp32).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from rtpick.errors import BuildError, RtpickError
from rtpick.model import Model
from rtpick.runtimes._gpu import torch_cuda_availability
from rtpick.runtimes.base import COST_SECONDS, Availability, Option, Runtime, Session, Variant

# fp8: Linear layers in FP8 (runtimes/fp8.py), everything else in bf16
_DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "bfloat16"}


# What a CUDA build of torch says on a machine without a GPU (or without its driver) when torch.compile or a
# device query touches CUDA. rtpick reports a missing GPU itself (`rtpick runtimes`: "torch sees no CUDA GPU"),
# so on such a machine these only alarm a CPU user; on a machine with a GPU they are left alone.
_NO_GPU_WARNINGS = (r"CUDA initialization: .*", r".*[Ff]ound no NVIDIA driver.*", r".*CUDA driver.*",
                    r".*[Nn]o CUDA runtime is found.*", r".*libcuda\.so.*")


def _torch() -> Any:
    import torch

    _quiet_without_gpu()
    return torch


def _quiet_without_gpu() -> None:
    """Filter the warnings again on each call (build time only; adding a filter twice keeps one): a caller's
    ``warnings.catch_warnings()`` block may have dropped the filters set earlier."""
    import warnings

    if _cuda_device_count_quietly() == 0:
        for pattern in _NO_GPU_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)


@functools.cache
def _cuda_device_count_quietly() -> int:
    """GPUs NVIDIA's driver sees, asked without initialising CUDA in torch (and so without its warning)."""
    from rtpick.runtimes._gpu import nvidia_gpu_count

    return nvidia_gpu_count()


def _set_cuda_flags(torch: Any, allow_tf32: bool, cudnn_benchmark: bool) -> None:
    """PyTorch's process-wide CUDA switches, set for each run so that sessions in one process do not leak theirs
    into each other (an fp32 session next to a tf32 one stays true fp32)."""
    if torch.backends.cuda.matmul.allow_tf32 != allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    if torch.backends.cudnn.allow_tf32 != allow_tf32:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    if torch.backends.cudnn.benchmark != cudnn_benchmark:
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _step_marker(torch: Any) -> Any:
    """The function that tells torch.compile's CUDA graphs a new inference step begins.

    ``torch.compiler.cudagraph_mark_step_begin`` re-imports its module on every call, which costs more than the
    step marker itself (about 15 us on a 2-core host, 2% of a 0.6 ms ResNet-50 call); resolving the function it
    forwards to once, where that module exists, keeps the per-call cost to a counter decrement.
    """
    try:
        from torch._inductor.cudagraph_trees import mark_step_begin
    except ImportError:  # pragma: no cover - layouts of other torch versions
        return torch.compiler.cudagraph_mark_step_begin
    return mark_step_begin


def make_io_cast(module: Any, precision: str, channels_last: bool, output_dtypes: list[str]) -> Any:
    """Wrap `module` so that the casts between the caller's dtypes and the compute dtype happen inside it.

    Inside the module they are part of what torch.compile fuses and what a CUDA graph captures, instead of
    extra kernel launches around every call. Outputs come back flat, in the model's declared dtypes.
    """
    torch = _torch()
    from rtpick.model import flatten_outputs

    compute = getattr(torch, _DTYPES[precision])
    wanted = [getattr(torch, name) for name in output_dtypes]

    class IOCast(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> list[Any]:
            cast = []
            for tensor in inputs:
                if tensor.is_floating_point():
                    tensor = tensor.to(compute)
                    if channels_last and tensor.dim() == 4:
                        tensor = tensor.contiguous(memory_format=torch.channels_last)
                cast.append(tensor)
            flat = [out for _, out in flatten_outputs(self.inner(*cast))]
            return [out.to(dtype) if out.dtype != dtype else out for out, dtype in zip(flat, wanted)]

    return IOCast(module)


class TorchSession(Session):
    """A torch module on one device at one precision, optionally compiled or replayed from a CUDA graph."""

    def __init__(self, model: Model, precision: str, runtime: str, device: str, module: Any, *,
                 torch_device: Any, cuda_graph: bool, graph_steps: bool,
                 options: Mapping[str, Any]) -> None:
        super().__init__(runtime, precision, model.spec.inputs, model.spec.outputs, device, options)
        torch = _torch()
        self._torch = torch
        self._module = module
        self._device = torch_device
        self._is_cuda = torch_device.type == "cuda"
        self._allow_tf32 = precision == "tf32"
        self._cudnn_benchmark = bool(options.get("cudnn_benchmark", False))
        self._cuda_graph = cuda_graph
        self._graph_steps = graph_steps  # torch.compile with CUDA graphs: mark each call a new step
        self._mark_step = _step_marker(torch) if graph_steps else None
        self._graphs: dict[tuple[Any, ...], tuple[Any, list[Any], list[Any]]] = {}

    def _to_device(self, value: Any) -> Any:
        """A feed as a tensor on the session's device; dtype and layout are the wrapped module's business."""
        tensor = self._torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        if tensor.device != self._device:
            tensor = tensor.to(self._device, non_blocking=True)
        return tensor

    def _forward(self, tensors: list[Any]) -> list[Any]:
        return self._module(*tensors)

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if self._cuda_graph:
            return self._run_graph(feeds)
        torch = self._torch
        if self._is_cuda:
            _set_cuda_flags(torch, self._allow_tf32, self._cudnn_benchmark)
        # Converted outside inference mode, numpy feeds become ordinary tensors, like the ones a caller passes:
        # torch.compile guards on the kind of tensor it was given, and a build that warmed up on inference tensors
        # compiled again on the caller's first call (found on the H100: results/h100/README.md).
        tensors = [self._to_device(feeds[spec.name]) for spec in self.inputs]
        with torch.inference_mode():
            if self._mark_step is not None:
                self._mark_step()
            outputs = self._checked_outputs(self._forward(tensors))
            if self._graph_steps:  # torch.compile's CUDA graphs own that memory: the caller gets a copy
                outputs = [out.clone() for out in outputs]
        return self._package(feeds, outputs)

    def _run_graph(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Eager CUDA-graph mode: capture once per input signature, then copy inputs in, replay, copy outputs out.

        The steady state does only that, outside inference mode (every host microsecond before the first launch
        adds to a 0.4 ms batch-1 call, and entering inference mode costs one): the static inputs are ordinary
        tensors, so copying into them needs no inference mode, and nothing here records autograd history since
        nothing requires grad. The TF32 and cuDNN switches decide kernels while capturing and do nothing to a
        replay, so they are set for the capture alone.
        """
        tensors = [self._to_device(feeds[name]) for name in self._input_names]
        key = tuple([(t.shape, t.dtype) for t in tensors])
        entry = self._graphs.get(key)
        if entry is None:
            _set_cuda_flags(self._torch, self._allow_tf32, self._cudnn_benchmark)
            entry = self._graphs[key] = self._capture(tensors)
        graph, static_inputs, static_outputs = entry
        for static, tensor in zip(static_inputs, tensors):
            static.copy_(tensor, non_blocking=True)
        graph.replay()
        outputs = [out.clone() for out in static_outputs]  # the graph owns its outputs: the caller gets a copy
        return self._package(feeds, outputs)

    def _capture(self, tensors: list[Any]) -> tuple[Any, list[Any], list[Any]]:
        torch = self._torch
        static_inputs = [torch.empty_like(t).copy_(t) for t in tensors]  # ordinary tensors, even from inference ones
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.inference_mode():
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm up so cuDNN/cuBLAS choose their kernels outside the capture
                    self._forward(static_inputs)
            torch.cuda.current_stream(self._device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_outputs = self._checked_outputs(self._forward(static_inputs))
        return graph, static_inputs, static_outputs

    def _checked_outputs(self, outputs: list[Any]) -> list[Any]:
        if len(outputs) != len(self._output_names):
            raise RtpickError(
                f"{self.config}: the module returned {len(outputs)} outputs, the model declares "
                f"{len(self._output_names)}"
            )
        return outputs

    def _package(self, feeds: Mapping[str, Any], outputs: list[Any]) -> dict[str, Any]:
        """Outputs of the kind the feeds were: numpy for numpy, torch tensors (on the session's device) for torch."""
        if isinstance(next(iter(feeds.values())), np.ndarray):
            return {name: out.cpu().numpy() for name, out in zip(self._output_names, outputs)}
        return dict(zip(self._output_names, outputs))

    def synchronize(self) -> None:
        if self._is_cuda:
            self._torch.cuda.synchronize(self._device)

    def _release(self) -> None:
        self._graphs.clear()
        self._module = None
        if self._is_cuda:
            self._torch.cuda.empty_cache()


def _fuse_conv(module: Any, model: Model, shapes: Mapping[str, tuple[int, ...]], device: Any) -> tuple[Any, str]:
    """The module with batch norms folded and conv+bias(+residual)+ReLU fused (`conv_fusion`), and what changed.

    Folding happens in fp32, before any cast to a lower precision, so that the folded weights are as exact as the
    originals. The pass checks residual shapes on synthetic inputs of the shapes the session will run.
    """
    torch = _torch()
    from rtpick.data import synthetic_feeds
    from rtpick.model import resolve_shapes
    from rtpick.runtimes.conv_fusion import fuse_conv

    concrete = dict(shapes) or resolve_shapes(model.spec.inputs, batch=1)
    feeds = synthetic_feeds(model.spec.inputs, concrete, seed=0)
    module = module.to(device)
    examples = [torch.from_numpy(feeds[spec.name]).to(device) for spec in model.spec.inputs]
    fused, report = fuse_conv(module, examples)
    return fused, report.describe()


def _zeros_sample(model: Model, shapes: Mapping[str, tuple[int, ...]], device: Any) -> list[Any]:
    """The module's positional inputs as zeros of the build's shapes (floats in bf16, as the module is cast):
    enough to count FLOPs, and index 0 is in range for any embedding."""
    import numpy as np

    from rtpick.data import synthetic_feeds

    torch = _torch()
    feeds = synthetic_feeds(model.spec.inputs, shapes, seed=0)
    sample = []
    for spec in model.spec.inputs:
        tensor = torch.from_numpy(np.zeros_like(feeds[spec.name])).to(device)
        sample.append(tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor)
    return sample


class TorchRuntime(Runtime):
    """What the four torch runtimes share: load the module, cast, place, optionally compile, warm up."""

    engine = "torch"
    needs_source = "torch"
    install_hint = "pip install 'rtpick[torch]'"
    options: ClassVar[dict[str, Option]] = {
        "channels_last": Option(False, "channels_last memory format for 4-D inputs and weights"),
    }

    def availability(self) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, f"torch is not installed ({self.install_hint})")
        return self._extra_availability()

    def _extra_availability(self) -> Availability:
        return Availability(True)

    def model_availability(self, model: Model) -> Availability:
        if getattr(model, "torch_factory", None) is None:
            return Availability(False, f"needs a PyTorch source and {model.spec.name!r} is ONNX only (give a torch "
                                       "module, a .pt2 ExportedProgram or torchvision:<name>)")
        return Availability(True)

    def _torch_device(self, options: Mapping[str, Any]) -> Any:
        return _torch().device("cpu")

    def _build(self, model: Model, precision: str, shapes: dict[str, tuple[int, ...]],
               options: dict[str, Any]) -> Session:
        torch = _torch()
        device = self._torch_device(options)
        notes = []
        try:
            module = model.torch_module().eval()
            if options.get("fuse_conv"):
                try:
                    module, note = _fuse_conv(module, model, shapes, device)
                except BuildError as exc:
                    raise BuildError(f"{self.name}:{precision}: {exc}") from exc
                notes.append(note)
            module = module.to(device=device, dtype=getattr(torch, _DTYPES[precision]))
            if options.get("channels_last"):
                module = module.to(memory_format=torch.channels_last)
            inductor: dict[str, Any] = {}
            if precision == "fp8":  # after the bf16 cast, which would otherwise turn the FP8 weights to bf16
                from rtpick.runtimes.fp8 import INDUCTOR_CONFIG, swap_linear_layers

                module, swapped = swap_linear_layers(module, f"{self.name}:fp8",
                                                     sample=_zeros_sample(model, shapes, device) if shapes else None)
                notes.append(swapped.describe())
                inductor = dict(INDUCTOR_CONFIG)
        except RtpickError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise BuildError(f"{self.name}:{precision}: out of GPU memory loading the model") from exc
        wrapped = make_io_cast(module, precision, bool(options.get("channels_last")),
                               [t.dtype for t in model.spec.outputs])
        session = TorchSession(
            model, precision, self.name, self.device, self._wrap(wrapped, {**options, "inductor_config": inductor}),
            torch_device=device,
            cuda_graph=bool(options.get("cuda_graph")),
            graph_steps=self.compiled and options.get("mode") in ("reduce-overhead", "max-autotune"),
            options=options,
        )
        session.info.notes.extend(notes)
        if shapes:
            self._warm_up(session, model, shapes, options)
        return session

    def _wrap(self, module: Any, options: Mapping[str, Any]) -> Any:
        return module

    def _warm_up(self, session: TorchSession, model: Model, shapes: Mapping[str, tuple[int, ...]],
                 options: Mapping[str, Any]) -> None:
        """Run once so that compilation (or CUDA-graph capture) happens at build time and counts as such."""
        from rtpick.data import synthetic_feeds

        feeds = synthetic_feeds(model.spec.inputs, shapes, seed=0)
        session.run(feeds)
        session.synchronize()


class TorchCpu(TorchRuntime):
    """Eager PyTorch on the CPU, fp32 or bf16."""

    name = "torch-cpu"
    device = "cpu"
    precisions = ("fp32", "bf16")
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(),
        Variant({"channels_last": True}, COST_SECONDS, why="oneDNN's NHWC convolutions"),
    )


# Off by default, on measurement (ResNet-50 fp16 torch.compile, H100, benchmarks/results/h100/README.md): no
# difference at batch 256, batch 4 10% slower, and a 2-s server run at 300 q/s went from p50 7.9 ms to 774 ms:
# ATen keeps the algorithms it found in a thread_local cache, so the batcher's new thread searched all over
# again while queries queued.
_CUDNN_BENCHMARK = Option(False, "let cuDNN time its convolution algorithms for each new input shape (and thread) "
                                 "and keep the fastest (torch.backends.cudnn.benchmark)")


TF32_COVERS_FP32 = ("tf32 is fp32 with tensor-core (TF32) matmul and convolution kernels allowed too, about 8x the "
                    "fp32 arithmetic rate since Ampere, so fp32 is tried only where tf32 fails its check")


class TorchCuda(TorchRuntime):
    """Eager PyTorch on an NVIDIA GPU; fp32/tf32/fp16/bf16; optional CUDA-graph replay for static shapes."""

    name = "torch-cuda"
    device = "cuda"
    precisions = ("fp32", "tf32", "fp16", "bf16")
    options: ClassVar[dict[str, Option]] = {
        "channels_last": Option(True, "channels_last memory format for 4-D inputs and weights (tensor cores)"),
        "cuda_graph": Option(False, "capture a CUDA graph per input shape and replay it"),
        "fuse_conv": Option(False, "fold batch norm into convolutions and run conv+bias(+residual)+ReLU as single "
                                   "cuDNN calls (torch.fx rewrite; models torch.fx can trace)"),
        "cudnn_benchmark": _CUDNN_BENCHMARK,
        "device_id": Option(0, "which GPU"),
    }
    # fused conv and a CUDA graph are what take ResNet-50 at batch 1 under 1 ms on an H200 (issue 17): eager
    # batch-1 latency is launch-bound, so the variants that cut launches are the ones that can win
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(fallback_for={"cuda_graph": True}),
        Variant({"cuda_graph": True}, COST_SECONDS, why="one graph replay per call instead of one launch per op"),
        Variant({"fuse_conv": True}, COST_SECONDS, why="conv+BN+ReLU as single cuDNN calls",
                fallback_for={"fuse_conv": True, "cuda_graph": True}),
        Variant({"fuse_conv": True, "cuda_graph": True}, COST_SECONDS, why="both"),
    )
    precision_fallbacks: ClassVar[dict[str, tuple[str, str]]] = {"fp32": ("tf32", TF32_COVERS_FP32)}

    def _extra_availability(self) -> Availability:
        return torch_cuda_availability()

    def _torch_device(self, options: Mapping[str, Any]) -> Any:
        return _torch().device("cuda", int(options["device_id"]))
