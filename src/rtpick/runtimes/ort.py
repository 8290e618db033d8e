"""ONNX Runtime: ort-cpu, ort-cuda (IO binding, fp16); ort-tensorrt (TensorRT execution provider) is in
`rtpick.runtimes.ort_tensorrt`.

All three are one session class over different execution providers. A session that ONNX Runtime silently
placed on a different provider than the one asked for is refused at build time: rtpick never falls back to
another device without saying so.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rtpick.errors import BuildError
from rtpick.files import atomic_write_bytes
from rtpick.model import Model
from rtpick.runtimes._gpu import gpu_availability
from rtpick.runtimes.base import (
    COST_SECONDS,
    Availability,
    Option,
    Runtime,
    Session,
    Variant,
    is_torch,
)
from rtpick.settings import cache_dir

GRAPH_LEVELS = ("disable", "basic", "extended", "all")


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _session_options(options: Mapping[str, Any]) -> Any:
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options["graph_optimization"]]
    if options.get("threads", 0):
        so.intra_op_num_threads = int(options["threads"])
    # fatal only: warnings about unused initializers are noise, and an error is raised as an exception, which
    # rtpick says in one line (logged too, it printed the same failure twice)
    so.log_severity_level = 4
    return so


@dataclass(eq=False)
class _BindingPlan:
    """What one feed signature's IO binding needs, worked out once: where the tensors live, the element types
    ONNX Runtime is told, and each output's (name, shape, torch dtype, element type)."""

    device: Any
    device_type: str
    device_id: int
    input_types: list[Any]
    outputs: list[tuple[str, tuple[int, ...], Any, Any]] = field(default_factory=list)


class OrtSession(Session):
    """An ONNX Runtime InferenceSession; numpy feeds go through `run`, torch tensors through IO binding."""

    def __init__(self, model: Model, precision: str, runtime: str, device: str, ort_session: Any,
                 options: Mapping[str, Any]) -> None:
        super().__init__(runtime, precision, model.spec.inputs, model.spec.outputs, device, options)
        self._session = ort_session
        self._plans: dict[tuple[Any, ...], _BindingPlan] = {}

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        first = next(iter(feeds.values()), None)  # None: a model without inputs (a constant generator)
        if first is not None and is_torch(first):
            return self._run_torch(feeds)
        results = self._session.run(None, feeds)
        return dict(zip(self._output_names, results))

    def _run_torch(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """IO binding on the tensors' own memory: inputs and outputs stay where they are (no host copies).

        Everything that depends only on the feeds' shapes and device (element types, output shapes and dtypes) is
        worked out on the first call with that signature and kept: at batch 1 the call is launch-bound, so each
        microsecond of Python before the run shows in the latency.
        """
        import torch

        first = next(iter(feeds.values()))
        signature = (first.device, *[feeds[name].shape for name in self._input_names])
        plan = self._plans.get(signature)
        if plan is None:
            plan = self._plans[signature] = self._plan(feeds)
        binding = self._bind_inputs(feeds, plan)
        outputs = {}
        for name, shape, dtype, element_type in plan.outputs:
            out = torch.empty(shape, dtype=dtype, device=plan.device)
            binding.bind_output(name, plan.device_type, plan.device_id, element_type, shape, out.data_ptr())
            outputs[name] = out
        self._run_bound(binding)
        return outputs

    def _plan(self, feeds: Mapping[str, Any]) -> _BindingPlan:
        """Device, element types and output shapes for one feed signature; the output shapes come from one run
        into outputs ONNX Runtime allocates on the device (so results never pass through the host)."""
        import torch

        device = next(iter(feeds.values())).device
        plan = _BindingPlan(device=device, device_type="cuda" if device.type == "cuda" else "cpu",
                            device_id=device.index or 0,
                            input_types=[np.dtype(spec.dtype) for spec in self.inputs])
        binding = self._bind_inputs(feeds, plan)
        for name in self._output_names:
            binding.bind_output(name, plan.device_type, plan.device_id)
        self._run_bound(binding)
        shapes = [tuple(value.shape()) for value in binding.get_outputs()]
        plan.outputs = [(spec.name, shape, getattr(torch, spec.dtype), np.dtype(spec.dtype))
                        for spec, shape in zip(self.outputs, shapes)]
        return plan

    def _bind_inputs(self, feeds: Mapping[str, Any], plan: _BindingPlan) -> Any:
        binding = self._session.io_binding()
        for name, element_type in zip(self._input_names, plan.input_types):
            tensor = feeds[name].contiguous()
            binding.bind_input(name, plan.device_type, plan.device_id, element_type, tensor.shape,
                               tensor.data_ptr())
        return binding

    def _run_bound(self, binding: Any) -> None:
        """Run a complete binding, with ONNX Runtime's own waits around it.

        ONNX Runtime computes on its own CUDA stream, so whatever produced the inputs (kernels still queued on
        torch's stream, say) must be done before it reads them. `synchronize_inputs` is that wait: the CUDA
        provider implements it as a device-wide synchronisation (``cudaDeviceSynchronize``), which covers every
        stream, torch's included; a check of torch's stream of our own cost 7.5 us more per call on the H100 host
        (results/h100/call-overhead-before.json), and tests/test_gpu_runtimes.py checks the wait with an input still
        being written on a side stream. `synchronize_outputs` makes the outputs readable on any stream on return.
        On the CPU provider both are no-ops.
        """
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    def _release(self) -> None:
        self._session = None


class OrtRuntime(Runtime):
    """What the three ONNX Runtime flavours share; each subclass names its provider and precisions."""

    engine = "onnxruntime"
    provider: ClassVar[str]
    install_hint = "pip install onnxruntime"
    options: ClassVar[dict[str, Option]] = {
        "graph_optimization": Option("all", "ONNX Runtime graph optimisation level", GRAPH_LEVELS),
        "threads": Option(0, "intra-op threads (0: ONNX Runtime's default, one per physical core)"),
    }

    def availability(self) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, f"onnxruntime is not installed ({self.install_hint})")
        providers = _ort().get_available_providers()
        if self.provider not in providers:
            return Availability(
                False, f"this onnxruntime build has no {self.provider} (it has {', '.join(providers)}); "
                f"{self.install_hint}"
            )
        return self._device_availability()

    def _device_availability(self) -> Availability:
        return Availability(True)

    def _providers(self, precision: str, options: Mapping[str, Any], model: Model) -> list[Any]:
        return [self.provider]

    def _model_file(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                    options: Mapping[str, Any]) -> tuple[str, list[str]]:
        """The ONNX file to load for this precision (converted, fused or quantised copies live in the cache) and
        notes saying what was done to it (the session's notes, and `onnx_file`'s)."""
        return str(model.onnx_path()), []

    def onnx_file(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                  options: Mapping[str, Any]) -> tuple[Path, list[str]]:
        """The ONNX file a session of this configuration loads (the model as given, or the converted, fused or
        quantised copy rtpick made and measured) and what was done to it: `rtpick export` ships this file, so
        the deployed model is the one measured, not the one before rtpick's changes."""
        path, notes = self._model_file(model, precision, dict(shapes), self.check_options(dict(options)))
        return Path(path), [note for note in notes if note]

    def _build(self, model: Model, precision: str, shapes: dict[str, tuple[int, ...]],
               options: dict[str, Any]) -> Session:
        ort = _ort()
        if self.device == "cuda" and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu finds CUDA and cuDNN from NVIDIA's pip packages this way (documented, 1.21+).
            ort.preload_dlls()
        path, notes = self._model_file(model, precision, shapes, options)
        providers = self._providers(precision, options, model)
        try:
            session = ort.InferenceSession(path, sess_options=_session_options(options), providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types per failure
            newer = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", str(exc))
            if newer:  # a newer onnx wrote it: say what to do, not where in ORT's source it stopped
                raise BuildError(f"{self.name}:{precision}: the model is ONNX IR version {newer[1]} and this "
                                 f"onnxruntime ({ort.__version__}) reads up to {newer[2]}; upgrade onnxruntime, or "
                                 f"save the model with ir_version {newer[2]} or lower") from exc
            raise BuildError(f"{self.name}:{precision} failed to build: {_first_line(exc)}") from exc
        used = session.get_providers()[0]
        if used != self.provider:
            raise BuildError(
                f"{self.name}:{precision}: ONNX Runtime placed the model on {used}, not {self.provider} "
                "(rtpick does not fall back silently); check that the provider's libraries load"
            )
        built = OrtSession(model, precision, self.name, self.device, session, options)
        built.info.notes.extend(note for note in notes if note)
        return built


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class OrtCpu(OrtRuntime):
    """ONNX Runtime's CPU provider: fp32, and int8 where it is measurably faster (`rtpick.quantize_search`):
    the fastest accurate variant of static (or, for MatMul-heavy models, dynamic) quantisation, calibrated on
    the user's inputs or synthetic ones, or a one-line refusal with the measured ratio when int8 is slower."""

    name = "ort-cpu"
    device = "cpu"
    provider = "CPUExecutionProvider"
    precisions = ("fp32", "int8")
    options: ClassVar[dict[str, Option]] = {
        **OrtRuntime.options,
        "calibration": Option("", "int8: an .npz of calibration inputs or a folder of images (default: synthetic "
                                  "inputs, said so)"),
        "calibration_samples": Option(32, "int8: how many synthetic calibration samples when none are given"),
        "int8_min_speedup": Option(1.10, "int8: refuse int8 unless it measured at least this much faster than fp32 "
                                         "at batch 1 (0: keep the fastest accurate int8 variant anyway)"),
    }
    # One intra-op thread can beat one per core for a small model (no fork/join per operator) and leaves the
    # other cores to the rest of the process; which one wins depends on the model and the machine.
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(),
        Variant({"threads": 1}, COST_SECONDS, why="no thread pool fork/join per operator (small models)"),
    )

    def builds_without_shapes(self, precision: str) -> bool:
        """fp32 runs any shape the feeds bring (ONNX Runtime resolves symbolic dims per call); int8 calibrates on
        concrete shapes first."""
        return precision == "fp32"

    def _model_file(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                    options: Mapping[str, Any]) -> tuple[str, list[str]]:
        if precision != "int8":
            if options["graph_optimization"] == "disable":  # the model exactly as given, as asked
                return str(model.onnx_path()), []
            from rtpick.fused_model import fp32_model  # decomposed HardSwish fused, in a verified cached copy

            path, note = fp32_model(model, shapes)
            return str(path), [note]
        from rtpick.quantize_search import choose_int8

        path, notes = choose_int8(model, shapes, options["calibration"] or None, options["calibration_samples"],
                                  threads=int(options.get("threads") or 0),
                                  min_speedup=float(options["int8_min_speedup"]))
        return str(path), list(notes)


def fp16_model(model: Model) -> Path:
    """An fp16 copy of the model that keeps fp32 inputs and outputs, cached by the source hash."""
    target = cache_dir() / "onnx" / f"{model.spec.sha256[:32]}-fp16.onnx"
    if target.exists():
        return target
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(model.onnx_path()))
    converted = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    atomic_write_bytes(target, converted.SerializeToString())
    return target


class OrtCuda(OrtRuntime):
    """ONNX Runtime's CUDA provider, IO binding for device tensors, fp16 by model conversion."""

    name = "ort-cuda"
    device = "cuda"
    provider = "CUDAExecutionProvider"
    precisions = ("fp32", "tf32", "fp16")
    install_hint = ("pip uninstall -y onnxruntime && pip install 'rtpick[gpu]' (onnxruntime-gpu provides the same "
                    "module, so the CPU build must go first)")
    options: ClassVar[dict[str, Option]] = {
        **OrtRuntime.options,
        "cudnn_conv_algo_search": Option("EXHAUSTIVE", "cuDNN convolution algorithm search",
                                         ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")),
        "cuda_graph": Option(False, "capture a CUDA graph (static shapes, torch tensors on the GPU)"),
        "prefer_nhwc": Option(False, "run convolutions in NHWC layout (tensor cores; inputs stay NCHW: the "
                                     "provider inserts the transposes)"),
        "device_id": Option(0, "which GPU"),
    }
    # cuda_graph is not a search variant: it needs torch tensors already on the GPU, and the search measures
    # with host feeds (bench's default io).
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(),
        Variant({"prefer_nhwc": True}, COST_SECONDS, ("fp16", "tf32"), "NHWC convolutions on tensor cores"),
    )

    def _device_availability(self) -> Availability:
        return gpu_availability()

    def _providers(self, precision: str, options: Mapping[str, Any], model: Model) -> list[Any]:
        provider_options = {
            "device_id": str(options["device_id"]),
            "cudnn_conv_algo_search": options["cudnn_conv_algo_search"],
            "use_tf32": "1" if precision == "tf32" else "0",
            "enable_cuda_graph": "1" if options["cuda_graph"] else "0",
        }
        if options["prefer_nhwc"]:  # only when asked: older providers reject keys they do not know
            provider_options["prefer_nhwc"] = "1"
        return [(self.provider, provider_options)]

    def _model_file(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                    options: Mapping[str, Any]) -> tuple[str, list[str]]:
        return (str(fp16_model(model)) if precision == "fp16" else str(model.onnx_path())), []
