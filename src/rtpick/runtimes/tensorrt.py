"""tensorrt: NVIDIA TensorRT 10 through its Python API (ONNX parser, builder, ``execute_async_v3``).

Written to TensorRT 10's documented Python API and not yet run by the project: the project's GPU machine cannot
install TensorRT (see the README). `TensorRT.verified` is False so listings and results say so.

What it does, and why:
- Precision is the builder's choice under flags (TensorRT 10's "weak typing"): fp32 clears the TF32 flag that
  TensorRT sets by default, tf32 keeps it, fp16/bf16 set FP16/BF16. Network inputs and outputs keep the ONNX
  model's types, so callers feed and receive fp32 at every precision.
- int8 is explicit quantisation: the model is first turned into a QDQ model (`rtpick.quantize.quantize_int8`)
  and TensorRT follows its Q/DQ nodes. The calibrator interfaces (IInt8EntropyCalibrator2 and friends) are
  deprecated since TensorRT 10.1 in favour of explicit quantisation, so rtpick does not use them.
- Dynamic dims get one optimisation profile built from the shapes asked for (min = opt = max), or a batch range
  with the options ``min_batch``/``max_batch``.
- Engines are slow to build, so serialized engines are cached under ``cache_dir()/tensorrt/engines`` by a key of
  everything that changes them (model hash, precision, profile, TensorRT version, GPU name and compute
  capability, builder settings); the builder's timing cache is kept beside them, one file per TensorRT version
  and GPU.
- Execution: `execute_async_v3` on torch-allocated device buffers, on the session's own CUDA stream, ordered
  against the caller's current stream with stream waits (no device-wide syncs). Optional CUDA-graph capture of
  the enqueue, recaptured when the input shapes change.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rtpick.errors import BuildError, RtpickError
from rtpick.files import atomic_write_bytes, file_sha256
from rtpick.model import Model, TensorSpec
from rtpick.runtimes.base import Availability, Option, Runtime, Session
from rtpick.settings import cache_dir

SUPPORTED_MAJOR = 10
INSTALL_HINT = (
    "pip install 'tensorrt>=10,<11' (its real wheels download from NVIDIA's own package index, "
    "so the machine must reach it)"
)
# Bump when what rtpick asks of the builder changes, so engines built by an older recipe are not reused.
ENGINE_RECIPE = "rtpick-trt-v1"

# precision -> (BuilderFlag names to set, BuilderFlag names to clear). TF32 is on by default in TensorRT.
_FLAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fp32": ((), ("TF32",)),
    "tf32": (("TF32",), ()),
    "fp16": (("FP16",), ()),
    "bf16": (("BF16",), ()),
    "int8": (("INT8", "FP16"), ()),
}

# TensorRT DataType member name -> torch dtype name.
_TORCH_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
    "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}


# ------------------------------------------------------------------------------------------ pure helpers


def precision_flags(precision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The builder flags to set and to clear for `precision` (names of ``tensorrt.BuilderFlag`` members)."""
    try:
        return _FLAGS[precision]
    except KeyError:
        raise RtpickError(f"tensorrt does not support {precision}; it supports {', '.join(_FLAGS)}") from None


def version_major(version: str) -> int:
    """The major number of a version string ("10.9.0.34" -> 10); 0 when it has none."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else 0


Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def profile_for(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    min_batch: int = 0,
    max_batch: int = 0,
) -> Profile:
    """(min, opt, max) shapes for every input with a symbolic dim; static inputs need none.

    opt is the shape asked for. Without a batch range min = opt = max (the fastest engine for that one shape).
    ``min_batch``/``max_batch`` (0: unset) widen the leading axis of inputs whose leading dim is symbolic.
    """
    if min_batch < 0 or max_batch < 0:
        raise RtpickError("min_batch and max_batch must be 0 (unset) or positive")
    if (min_batch or max_batch) and not any(spec.shape and isinstance(spec.shape[0], str) for spec in inputs):
        raise RtpickError("min_batch/max_batch need an input whose leading (batch) dim is dynamic; this model's "
                          f"inputs are {', '.join(spec.describe() for spec in inputs)}")
    profile: Profile = {}
    for spec in inputs:
        if spec.is_static:
            continue
        shape = shapes.get(spec.name)
        if shape is None:
            raise RtpickError(
                f"tensorrt needs a concrete shape for input {spec.name!r} ({spec.describe()}) to build its "
                "optimisation profile; pass shapes= or batch="
            )
        opt = tuple(int(d) for d in shape)
        if len(opt) != len(spec.shape):
            raise RtpickError(f"shape {list(opt)} for {spec.describe()} has the wrong number of dims")
        low, high = list(opt), list(opt)
        if opt and isinstance(spec.shape[0], str) and (min_batch or max_batch):
            low[0] = min_batch or opt[0]
            high[0] = max_batch or opt[0]
            if not low[0] <= opt[0] <= high[0]:
                raise RtpickError(
                    f"the batch asked for ({opt[0]}) is outside min_batch..max_batch ({low[0]}..{high[0]}) "
                    f"for input {spec.name!r}"
                )
        profile[spec.name] = (tuple(low), opt, tuple(high))
    return profile


def engine_cache_key(
    model_sha256: str,
    precision: str,
    profile: Profile,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    build_options: Mapping[str, Any] | None = None,
) -> str:
    """A hex key naming one engine: anything that changes the engine changes the key.

    TensorRT engines are specific to the TensorRT version and the GPU model, and to the network, precision
    flags, profile and builder settings they were built with (TensorRT's documentation: plans are not portable).
    """
    payload = {
        "recipe": ENGINE_RECIPE,
        "model": model_sha256,
        "precision": precision,
        "profile": {name: [list(d) for d in dims] for name, dims in sorted(profile.items())},
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "sm": list(compute_capability),
        "build": dict(sorted((build_options or {}).items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def describe_parser_errors(errors: Sequence[Mapping[str, Any]], limit: int = 3) -> str:
    """One line for the ONNX parser's errors: each with its node name and operator when the parser gives them."""
    parts = []
    for error in errors[:limit]:
        where = []
        if error.get("node_name"):
            where.append(f"node {error['node_name']!r}")
        elif error.get("node", -1) is not None and error.get("node", -1) >= 0:
            where.append(f"node #{error['node']}")
        if error.get("operator"):
            where.append(f"({error['operator']})")
        prefix = " ".join(where)
        desc = str(error.get("desc", "")).strip().splitlines()
        parts.append(f"{prefix}: {desc[0] if desc else 'unknown error'}" if prefix else (desc[0] if desc else "?"))
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def qdq_zero_point_problem(path: Path) -> str:
    """Why TensorRT would refuse this QDQ model's quantisation, or "" if it would not.

    TensorRT quantises symmetrically: every QuantizeLinear/DequantizeLinear zero point must be a signed int8 zero.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {init.name: init for init in proto.graph.initializer}
    constants = {
        node.output[0]: attr.t for node in proto.graph.node if node.op_type == "Constant"
        for attr in node.attribute if attr.name == "value"
    }
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3 or not node.input[2]:
            continue
        tensor = initializers.get(node.input[2]) or constants.get(node.input[2])
        if tensor is None:
            continue
        zero_point = numpy_helper.to_array(tensor)
        if zero_point.dtype != np.int8:
            return (f"{node.op_type} {node.name or node.output[0]!r} uses {zero_point.dtype} zero points; "
                    "TensorRT needs signed int8")
        if np.any(zero_point != 0):
            return (f"{node.op_type} {node.name or node.output[0]!r} has a non-zero zero point (asymmetric "
                    "quantisation); TensorRT quantises symmetrically (zero point 0)")
    return ""


# ------------------------------------------------------------------------------------------ availability


def _trt() -> Any:
    import tensorrt

    return tensorrt


def library_availability() -> tuple[Availability, str]:
    """Whether the real TensorRT 10 Python library imports and its libnvinfer loads; and its version."""
    if importlib.util.find_spec("tensorrt") is None:
        return Availability(False, f"the tensorrt package is not installed; {INSTALL_HINT}"), ""
    try:
        trt = _trt()
    except Exception as exc:  # noqa: BLE001 - a missing libnvinfer is an ImportError or OSError, among others
        text = str(exc).strip().splitlines()
        return Availability(
            False, f"tensorrt is installed but does not load ({type(exc).__name__}: {text[0] if text else ''}); "
            f"its library libnvinfer is missing or broken; reinstall: {INSTALL_HINT}"
        ), ""
    version = str(getattr(trt, "__version__", ""))
    if not hasattr(trt, "Builder") or not version:
        return Availability(
            False, "the installed tensorrt package is a stub without the library (no tensorrt.Builder): "
            "the PyPI package only downloads the real wheels from NVIDIA's index, and that download did not "
            f"happen; reinstall on a machine that reaches it: {INSTALL_HINT}"
        ), version
    if version_major(version) != SUPPORTED_MAJOR:
        return Availability(
            False, f"TensorRT {version} is installed; rtpick's tensorrt runtime is written for TensorRT "
            f"{SUPPORTED_MAJOR} (11 removed the precision builder flags it uses): pip install 'tensorrt>=10,<11'"
        ), version
    return Availability(True), version


def _torch_cuda_availability() -> Availability:
    if importlib.util.find_spec("torch") is None:
        return Availability(False, "the tensorrt runtime uses torch for device buffers and its CUDA stream; "
                            "install a CUDA build of torch (pip install torch)")
    import torch

    if torch.version.cuda is None:
        return Availability(False, f"the tensorrt runtime uses torch for device buffers and its CUDA stream, and "
                            f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build")
    if not torch.cuda.is_available():
        return Availability(False, "torch sees no usable CUDA GPU (driver or CUDA version mismatch?)")
    return Availability(True)


# ------------------------------------------------------------------------------------------ build helpers


@cache
def _logger() -> Any:
    """One logger for the process (TensorRT wants a single logger); keeps the warnings and errors of the last
    build so a failure can be reported with TensorRT's own words."""
    trt = _trt()

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def _last_errors(logger: Any) -> str:
    errors = [e for e in logger.errors if e]
    return errors[-1].splitlines()[0] if errors else "no error message from TensorRT"


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path, config: str) -> tuple[Any, Any]:
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            errors.append({
                "desc": error.desc(),
                "node": error.node(),
                "node_name": error.node_name() if hasattr(error, "node_name") else "",
                "operator": error.node_operator() if hasattr(error, "node_operator") else "",
            })
        raise BuildError(f"{config}: TensorRT's ONNX parser failed: {describe_parser_errors(errors)}")
    return network, parser


def _check_network_inputs(network: Any, profile: Profile, config: str) -> None:
    """Every dynamic network input must have a profile entry (shape-tensor inputs are not supported)."""
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.is_shape_tensor:
            raise BuildError(f"{config}: input {tensor.name!r} is a shape tensor, which rtpick does not support")
        if any(d < 0 for d in tuple(tensor.shape)) and tensor.name not in profile:
            raise BuildError(f"{config}: input {tensor.name!r} has dynamic dims {tuple(tensor.shape)} the model's "
                             "declared inputs do not show; give its shape with shapes=")


def _device_facts(torch: Any, device: Any) -> tuple[str, tuple[int, int]]:
    return str(torch.cuda.get_device_name(device)), tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


# ------------------------------------------------------------------------------------------ session


class TensorRTSession(Session):
    """A deserialized engine and one execution context, run on the session's own CUDA stream."""

    def __init__(self, model: Model, precision: str, *, runtime: Any, engine: Any, context: Any,
                 torch_device: Any, cuda_graph: bool, options: Mapping[str, Any]) -> None:
        super().__init__("tensorrt", precision, model.spec.inputs, model.spec.outputs, "cuda", options)
        import torch

        trt = _trt()
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
            tensor = torch.from_numpy(np.ascontiguousarray(value)) if host else value
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
            raise RtpickError(f"{self.config}: TensorRT execution failed: {_last_errors(_logger())}")

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


# ------------------------------------------------------------------------------------------ runtime


class TensorRT(Runtime):
    """NVIDIA TensorRT 10: an engine built from the ONNX model, cached, run with ``execute_async_v3``."""

    name = "tensorrt"
    device = "cuda"
    engine = "tensorrt"
    precisions = ("fp32", "tf32", "fp16", "bf16", "int8")
    needs_source = "onnx"
    verified = False
    install_hint = INSTALL_HINT
    options: ClassVar[dict[str, Option]] = {
        "workspace_mb": Option(4096, "builder workspace limit, MiB (set_memory_pool_limit WORKSPACE)"),
        "cuda_graph": Option(False, "capture the enqueue in a CUDA graph (recaptured when input shapes change)"),
        "min_batch": Option(0, "smallest batch the engine accepts (0: only the batch asked for)"),
        "max_batch": Option(0, "largest batch the engine accepts (0: only the batch asked for)"),
        "calibration": Option("", "int8: an .npz of calibration inputs (default: synthetic inputs, said so)"),
        "calibration_samples": Option(32, "int8: how many synthetic calibration samples when none are given"),
        "builder_optimization_level": Option(3, "TensorRT builder optimisation level (3 is TensorRT's default)",
                                             (0, 1, 2, 3, 4, 5)),
        "timing_cache": Option(True, "keep the builder's timing cache in rtpick's cache directory"),
        "engine_cache": Option(True, "reuse a serialized engine built before with the same key"),
        "device_id": Option(0, "which GPU"),
    }

    def availability(self) -> Availability:
        state, _ = library_availability()
        if not state.ok:
            return state
        from rtpick.runtimes.ort import gpu_availability

        state = gpu_availability()
        if not state.ok:
            return state
        return _torch_cuda_availability()

    def _source(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                options: Mapping[str, Any]) -> tuple[Path, str, list[str]]:
        """The ONNX file to build from, its content hash and notes about it."""
        if precision != "int8":
            return model.onnx_path(), model.spec.sha256, []
        from rtpick.quantize import quantize_int8

        path, note = quantize_int8(model, shapes, options["calibration"] or None, options["calibration_samples"],
                                   recipe="tensorrt")
        problem = qdq_zero_point_problem(path)
        if problem:
            raise BuildError(f"tensorrt:int8: the int8 QDQ model cannot be built by TensorRT: {problem}")
        return path, file_sha256(path), [
            note,
            "int8 by explicit quantisation (a QDQ model, TensorRT 10's documented way; its calibrator "
            "interfaces are deprecated since 10.1); layers outside Q/DQ pairs may run in fp16 (INT8 and FP16 flags)",
        ]

    def _build(self, model: Model, precision: str, shapes: dict[str, tuple[int, ...]],
               options: dict[str, Any]) -> Session:
        import torch

        trt = _trt()
        config = f"tensorrt:{precision}"
        device = torch.device("cuda", int(options["device_id"]))
        profile = profile_for(model.spec.inputs, shapes, int(options["min_batch"]), int(options["max_batch"]))
        if options["cuda_graph"] and any(low != high for low, _, high in profile.values()):
            raise RtpickError(f"{config}: cuda_graph needs static shapes; drop min_batch/max_batch or cuda_graph")
        with torch.cuda.device(device):
            source, digest, notes = self._source(model, precision, shapes, options)
            gpu_name, capability = _device_facts(torch, device)
            build_options = {k: options[k] for k in ("workspace_mb", "builder_optimization_level")}
            key = engine_cache_key(digest, precision, profile, trt.__version__, gpu_name, capability, build_options)
            engine_path = cache_dir() / "tensorrt" / "engines" / f"{key[:40]}.engine"
            logger = _logger()
            logger.errors.clear()
            runtime = trt.Runtime(logger)
            engine = None
            if options["engine_cache"] and engine_path.exists():
                engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
                if engine is None:
                    notes.append(f"cached engine {engine_path.name} did not load ({_last_errors(logger)}); rebuilt")
                else:
                    notes.append(f"engine loaded from rtpick's cache ({engine_path})")
            if engine is None:
                plan = self._build_plan(trt, logger, source, precision, profile, options, gpu_name, capability,
                                        config, notes)
                if options["engine_cache"]:
                    atomic_write_bytes(engine_path, plan)
                engine = runtime.deserialize_cuda_engine(plan)
                if engine is None:
                    raise BuildError(f"{config}: the engine TensorRT built does not deserialize: "
                                     f"{_last_errors(logger)}")
            context = engine.create_execution_context()
            if context is None:
                raise BuildError(f"{config}: TensorRT could not create an execution context (out of GPU memory?): "
                                 f"{_last_errors(logger)}")
            session = TensorRTSession(model, precision, runtime=runtime, engine=engine, context=context,
                                      torch_device=device, cuda_graph=bool(options["cuda_graph"]), options=options)
        session.info.notes.extend(notes)
        if shapes:  # run once so first-call work (shape setting, graph capture) is part of the build
            from rtpick.data import synthetic_feeds

            session.run({k: torch.from_numpy(v).to(device) for k, v in
                         synthetic_feeds(model.spec.inputs, shapes, seed=0).items()})
            session.synchronize()
        return session

    def _build_plan(self, trt: Any, logger: Any, source: Path, precision: str, profile: Profile,
                    options: Mapping[str, Any], gpu_name: str, capability: tuple[int, int], config: str,
                    notes: list[str]) -> bytes:
        """Parse, configure and build: the serialized engine."""
        logger.errors.clear()
        builder = trt.Builder(logger)
        network, _parser = _parse(trt, builder, logger, source, config)
        _check_network_inputs(network, profile, config)
        builder_config = builder.create_builder_config()
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options["workspace_mb"]) << 20)
        to_set, to_clear = precision_flags(precision)
        for flag in to_set:
            builder_config.set_flag(getattr(trt.BuilderFlag, flag))
        for flag in to_clear:
            builder_config.clear_flag(getattr(trt.BuilderFlag, flag))
        builder_config.builder_optimization_level = int(options["builder_optimization_level"])
        if profile:
            optimisation_profile = builder.create_optimization_profile()
            for name, (low, opt, high) in profile.items():
                optimisation_profile.set_shape(name, low, opt, high)
            builder_config.add_optimization_profile(optimisation_profile)
        sm = f"{capability[0]}{capability[1]}"
        timing_path = cache_dir() / "tensorrt" / f"timing-{trt.__version__}-{_slug(gpu_name)}-sm{sm}.cache"
        if options["timing_cache"]:
            blob = timing_path.read_bytes() if timing_path.exists() else b""
            timing = builder_config.create_timing_cache(blob)
            builder_config.set_timing_cache(timing, False)  # ignore_mismatch=False: never another GPU's timings
        plan = builder.build_serialized_network(network, builder_config)
        if plan is None:
            raise BuildError(f"{config}: TensorRT could not build the engine: {_last_errors(logger)}")
        if options["timing_cache"]:
            atomic_write_bytes(timing_path, bytes(memoryview(builder_config.get_timing_cache().serialize())))
            notes.append(f"builder timing cache: {timing_path}")
        return bytes(memoryview(plan))
