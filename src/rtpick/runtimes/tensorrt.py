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

Layout: this module is the runtime (availability, build); `tensorrt_plan` holds the pure builder rules (flags,
profiles, cache key, QDQ check) that ort-tensorrt shares, and `tensorrt_session` the session and the logger.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from rtpick.errors import BuildError, RtpickError
from rtpick.files import atomic_write_bytes, file_sha256
from rtpick.model import Model
from rtpick.runtimes._gpu import gpu_availability, torch_cuda_availability
from rtpick.runtimes.base import COST_MINUTES, Availability, Option, Runtime, Session, Variant
from rtpick.runtimes.tensorrt_plan import (
    Profile,
    describe_parser_errors,
    engine_cache_key,
    precision_flags,
    profile_for,
    qdq_zero_point_problem,
    version_major,
)
from rtpick.runtimes.tensorrt_session import TensorRTSession, last_errors, trt_logger, trt_module
from rtpick.settings import cache_dir

SUPPORTED_MAJOR = 10
INSTALL_HINT = (
    "pip install 'tensorrt>=10,<11' (its real wheels download from NVIDIA's own package index, "
    "so the machine must reach it)"
)


# ------------------------------------------------------------------------------------------ availability


def _trt() -> Any:
    return trt_module()


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


# ------------------------------------------------------------------------------------------ runtime


class TensorRT(Runtime):
    """NVIDIA TensorRT 10: an engine built from the ONNX model, cached, run with ``execute_async_v3``."""

    name = "tensorrt"
    device = "cuda"
    engine = "tensorrt"
    precisions = ("fp32", "tf32", "fp16", "bf16", "int8")
    needs_source = "onnx"
    verified = False
    compiled = True  # the builder times kernels for each layer
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
    variants: ClassVar[tuple[Variant, ...]] = (
        Variant(cost=COST_MINUTES),
        Variant({"cuda_graph": True}, COST_MINUTES, why="one graph launch per call instead of one per layer"),
    )

    def availability(self) -> Availability:
        """Installed (package metadata) and a GPU (NVML) first: neither imports anything, so a machine without
        either answers at once; only then does the library load and torch get asked about CUDA."""
        if importlib.util.find_spec("tensorrt") is None:
            return Availability(False, f"the tensorrt package is not installed; {INSTALL_HINT}")
        state = gpu_availability()
        if not state.ok:
            return state
        state, _ = library_availability()
        if not state.ok:
            return state
        return torch_cuda_availability("the tensorrt runtime uses torch for device buffers and its CUDA stream")

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
            logger = trt_logger()
            logger.errors.clear()
            runtime = trt.Runtime(logger)
            engine = None
            if options["engine_cache"] and engine_path.exists():
                engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
                if engine is None:
                    notes.append(f"cached engine {engine_path.name} did not load ({last_errors(logger)}); rebuilt")
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
                                     f"{last_errors(logger)}")
            context = engine.create_execution_context()
            if context is None:
                raise BuildError(f"{config}: TensorRT could not create an execution context (out of GPU memory?): "
                                 f"{last_errors(logger)}")
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
            raise BuildError(f"{config}: TensorRT could not build the engine: {last_errors(logger)}")
        if options["timing_cache"]:
            atomic_write_bytes(timing_path, bytes(memoryview(builder_config.get_timing_cache().serialize())))
            notes.append(f"builder timing cache: {timing_path}")
        return bytes(memoryview(plan))
