"""The native tensorrt runtime's session: a deserialized engine and one execution context, run with
``execute_async_v3`` on torch-allocated device buffers on the session's own CUDA stream, ordered against the
caller's stream with stream waits (no device-wide syncs); optionally a CUDA graph of the enqueue, recaptured
when the input shapes change. Also the process's one TensorRT logger, which keeps the last errors for messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from rtpick.errors import BuildError, RtpickError
from rtpick.model import Model
from rtpick.runtimes.base import Session

# TensorRT DataType member name -> torch dtype name.
_TORCH_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


def trt_module() -> Any:
    """The tensorrt module, imported when first asked for (listing runtimes never imports it)."""
    import tensorrt

    return tensorrt


@cache
def trt_logger() -> Any:
    """One logger for the process (TensorRT wants a single logger); keeps the warnings and errors of the last
    build so a failure can be reported with TensorRT's own words."""
    trt = trt_module()

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def last_errors(logger: Any) -> str:
    errors = [e for e in logger.errors if e]
    return errors[-1].splitlines()[0] if errors else "no error message from TensorRT"


class TensorRTSession(Session):
    """A deserialized engine and one execution context, run on the session's own CUDA stream."""

    def __init__(self, model: Model, precision: str, *, runtime: Any, engine: Any, context: Any,
                 torch_device: Any, cuda_graph: bool, options: Mapping[str, Any]) -> None:
        super().__init__("tensorrt", precision, model.spec.inputs, model.spec.outputs, "cuda", options)
        import torch

        trt = trt_module()
        self._torch = torch
        self._trt_runtime = runtime
        self._engine = engine
        self._context = context
        self._device = torch_device
        self._stream = torch.cuda.Stream(device=torch_device)
        self._cuda_graph = cuda_graph
        self._shapes: tuple[tuple[int, ...], ...] | None = None
        self._output_shapes: list[tuple[int, ...]] = []
        self._graph: Any = None
        self._graph_inputs: list[Any] = []
        self._graph_outputs: list[Any] = []
        self._engine_dtypes: dict[str, Any] = {}
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        for spec in (*self.inputs, *self.outputs):
            if spec.name not in names:
                raise BuildError(f"tensorrt:{precision}: the engine has no tensor {spec.name!r} "
                                 f"(its tensors: {sorted(names)})")
            trt_dtype = engine.get_tensor_dtype(spec.name)
            self._engine_dtypes[spec.name] = getattr(torch, _TORCH_DTYPES.get(trt_dtype.name, "float32"))
        for spec in self.inputs:
            if engine.get_tensor_mode(spec.name) != trt.TensorIOMode.INPUT:
                raise BuildError(f"tensorrt:{precision}: engine tensor {spec.name!r} is not an input")

    # -- shapes and buffers

    def _set_shapes(self, tensors: list[Any]) -> None:
        shapes = tuple(tuple(t.shape) for t in tensors)
        if shapes == self._shapes:
            return
        for spec, shape in zip(self.inputs, shapes):
            if not self._context.set_input_shape(spec.name, shape):
                low, opt, high = (tuple(d) for d in self._engine.get_tensor_profile_shape(spec.name, 0))
                raise RtpickError(
                    f"{self.config}: input {spec.name!r} of shape {list(shape)} is outside the engine's profile "
                    f"(min {list(low)}, max {list(high)}); build with that shape, or with min_batch/max_batch"
                )
        outputs = []
        for spec in self.outputs:
            shape = tuple(self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise RtpickError(f"{self.config}: output {spec.name!r} has a data-dependent shape {shape}, "
                                  "which rtpick's tensorrt runtime does not support")
            outputs.append(shape)
        self._shapes, self._output_shapes = shapes, outputs
        self._graph = None  # a captured graph holds the old shapes: capture again

    def _device_inputs(self, feeds: Mapping[str, Any], host: bool) -> list[Any]:
        torch = self._torch
        tensors = []
        for spec in self.inputs:
            value = feeds[spec.name]
            tensor = torch.from_numpy(np.asarray(value, order="C")) if host else value
            if tensor.device.type == "cuda" and tensor.device != self._device:
                raise RtpickError(f"{self.config}: feed {spec.name!r} is on {tensor.device}, the session on "
                                  f"{self._device}; move it or build with device_id={tensor.device.index}")
            tensor = tensor.to(device=self._device, dtype=self._engine_dtypes[spec.name])
            tensors.append(tensor.contiguous())
        return tensors

    # -- running

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        first = next(iter(feeds.values()))
        host = isinstance(first, np.ndarray)
        on_cpu = host or first.device.type == "cpu"
        with torch.cuda.device(self._device):
            current = torch.cuda.current_stream(self._device)
            inputs = self._device_inputs(feeds, host)
            self._set_shapes(inputs)
            outputs = [torch.empty(shape, dtype=self._engine_dtypes[spec.name], device=self._device)
                       for spec, shape in zip(self.outputs, self._output_shapes)]
            self._stream.wait_stream(current)  # inputs were written on the caller's stream
            with torch.cuda.stream(self._stream):
                if self._cuda_graph:
                    self._replay(inputs, outputs)
                else:
                    self._enqueue(inputs, outputs)
            for tensor in (*inputs, *outputs):  # used on our stream: keep the allocator from reusing them early
                tensor.record_stream(self._stream)
            current.wait_stream(self._stream)
            results = {}
            for spec, out in zip(self.outputs, outputs):
                wanted = getattr(torch, spec.dtype)
                if out.dtype != wanted:
                    out = out.to(wanted)
                results[spec.name] = out
        if host:
            return {name: out.cpu().numpy() for name, out in results.items()}
        if on_cpu:
            return {name: out.cpu() for name, out in results.items()}
        return results

    def _bind(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        for spec, tensor in zip(self.inputs, inputs):
            self._context.set_tensor_address(spec.name, tensor.data_ptr())
        for spec, tensor in zip(self.outputs, outputs):
            self._context.set_tensor_address(spec.name, tensor.data_ptr())

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RtpickError(f"{self.config}: TensorRT execution failed: {last_errors(trt_logger())}")

    def _enqueue(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        self._bind(inputs, outputs)
        self._execute()

    def _replay(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
        """CUDA graph of the enqueue on fixed buffers: copy inputs in, replay, copy outputs out."""
        torch = self._torch
        if self._graph is None:
            self._graph_inputs = [torch.empty_like(t) for t in inputs]
            self._graph_outputs = [torch.empty_like(t) for t in outputs]
            for static, tensor in zip(self._graph_inputs, inputs):
                static.copy_(tensor)
            self._bind(self._graph_inputs, self._graph_outputs)
            # TensorRT's documentation: enqueue once before capturing, so that work deferred after a shape
            # change is done outside the graph.
            self._execute()
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._execute()
            self._graph = graph
        for static, tensor in zip(self._graph_inputs, inputs):
            static.copy_(tensor, non_blocking=True)
        self._graph.replay()
        for out, static in zip(outputs, self._graph_outputs):
            out.copy_(static, non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()
        self._torch.cuda.current_stream(self._device).synchronize()

    def _release(self) -> None:
        # Free in reverse order of creation: the graph and context hold the engine's memory.
        self._graph = None
        self._graph_inputs, self._graph_outputs = [], []
        self._context = None
        self._engine = None
        self._trt_runtime = None
