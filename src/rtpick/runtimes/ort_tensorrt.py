"""ort-tensorrt: ONNX Runtime's TensorRT execution provider, on `rtpick.runtimes.ort`'s session class.

Written to ONNX Runtime's documented provider options and labelled unverified: TensorRT cannot run on the
project's GPU machine, so no figure of it is ever printed that TensorRT did not measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rtpick.errors import BuildError
from rtpick.model import Model
from rtpick.runtimes._gpu import gpu_availability, nvinfer_availability, nvinfer_version
from rtpick.runtimes.base import COST_MINUTES, Availability, Option, Session, Variant
from rtpick.runtimes.ort import OrtRuntime, _ort
from rtpick.settings import cache_dir


class OrtTensorRT(OrtRuntime):
    """ONNX Runtime's TensorRT provider, with its engine and timing caches in rtpick's cache.

    Written to ONNX Runtime's documented provider options; not yet run by the project (no TensorRT on its GPU
    machine). Precisions, and why they are named so:

    - tf32, not fp32: TensorRT allows TF32 for fp32 layers by default and the provider documents no option to
      turn that off, so the closest it gets to fp32 is "fp32 with TF32 tensor cores" (the native ``tensorrt``
      runtime has a true fp32).
    - fp16: ``trt_fp16_enable``; inputs and outputs stay fp32.
    - int8: an explicitly quantised (QDQ) model with ``trt_int8_enable`` (and fp16 for the layers outside Q/DQ
      pairs). No calibration table: ONNX Runtime's documentation says a QDQ model must not be given one.

    Nodes TensorRT cannot take run on the CUDA provider, as ONNX Runtime's documentation recommends.
    """

    name = "ort-tensorrt"
    device = "cuda"
    provider = "TensorrtExecutionProvider"
    precisions = ("tf32", "fp16", "int8")
    verified = False
    compiled = True  # TensorRT builds an engine for each subgraph it takes
    # cuda_graph needs torch tensors on the GPU (see OrtCuda), so the defaults are the only search variant
    variants: ClassVar[tuple[Variant, ...]] = (Variant(cost=COST_MINUTES),)
    install_hint = "pip install 'rtpick[gpu]' and TensorRT 10 (pip install 'tensorrt>=10,<11')"
    options: ClassVar[dict[str, Option]] = {
        **OrtRuntime.options,
        "device_id": Option(0, "which GPU"),
        "workspace_mb": Option(4096, "TensorRT builder workspace, MiB"),
        "cuda_graph": Option(False, "capture a CUDA graph (static shapes, torch tensors on the GPU)"),
        "builder_optimization_level": Option(3, "TensorRT builder optimisation level (3 is TensorRT's default)",
                                             (0, 1, 2, 3, 4, 5)),
        "calibration": Option("", "int8: an .npz of calibration inputs (default: synthetic inputs, said so)"),
        "calibration_samples": Option(32, "int8: how many synthetic calibration samples when none are given"),
    }

    def _device_availability(self) -> Availability:
        state = gpu_availability()
        return state if not state.ok else nvinfer_availability()

    def _providers(self, precision: str, options: Mapping[str, Any], model: Model) -> list[Any]:
        # The provider's engine names carry the subgraph hash, precision and GPU architecture, not the ONNX
        # Runtime or TensorRT version, and its documentation says to clear the cache when either changes: keep
        # one directory per (ONNX Runtime, TensorRT) pair instead.
        versions = f"ort{_ort().__version__}-trt{nvinfer_version() or 'unknown'}"
        engines = cache_dir() / "ort-trt" / versions / model.spec.sha256[:32]
        engines.mkdir(parents=True, exist_ok=True)
        trt_options = {
            "device_id": int(options["device_id"]),
            "trt_max_workspace_size": int(options["workspace_mb"]) << 20,
            "trt_fp16_enable": precision in ("fp16", "int8"),
            "trt_int8_enable": precision == "int8",
            "trt_builder_optimization_level": int(options["builder_optimization_level"]),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engines.parent),
            "trt_cuda_graph_enable": bool(options["cuda_graph"]),
        }
        cuda_options = {"device_id": str(options["device_id"])}
        return [(self.provider, trt_options), ("CUDAExecutionProvider", cuda_options)]

    def _model_file(self, model: Model, precision: str, shapes: Mapping[str, tuple[int, ...]],
                    options: Mapping[str, Any]) -> tuple[str, list[str]]:
        if precision != "int8":
            return str(model.onnx_path()), []
        from rtpick.quantize import quantize_int8
        from rtpick.runtimes.tensorrt_plan import qdq_zero_point_problem

        path, note = quantize_int8(model, shapes, options["calibration"] or None, options["calibration_samples"],
                                   recipe="tensorrt")
        problem = qdq_zero_point_problem(path)
        if problem:
            raise BuildError(f"{self.name}:int8: the int8 QDQ model cannot be built by TensorRT: {problem}")
        return str(path), [note]

    def _build(self, model: Model, precision: str, shapes: dict[str, tuple[int, ...]],
               options: dict[str, Any]) -> Session:
        session = super()._build(model, precision, shapes, options)
        if precision == "tf32":
            session.info.notes.append("fp32 layers may use TF32 (TensorRT's default; the provider cannot turn it off)")
        session.info.notes.append("nodes TensorRT does not support run on the CUDA provider")
        return session
