"""What each runtime is in Triton Inference Server's terms: platform or backend, artifact, accelerators.

These are facts about the runtimes, so they live beside them (``rtpick.export`` never compares a runtime name).
`triton_facts(runtime, precision, options)` answers how one configuration maps onto a Triton model: which
platform loads it, which file it needs, which options Triton can express, and, where Triton cannot express an
option rtpick measured with (CUDA graphs captured by rtpick, conv fusion, torch.compile), that the configuration
runs in Triton's ``python`` backend through an rtpick Session instead, with the reason. A runtime missing from
`PLATFORMS` has no Triton equivalent, and exporting it is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import RtpickError

# Artifact kinds the exporter knows how to produce (what goes into <model>/1/).
# The four ONNX kinds are each the file the ONNX Runtime configuration loads (`OrtRuntime.onnx_file`):
ONNX = "onnx"  # the model's ONNX file (for ort-cpu fp32, its verified fused copy where there is one)
ONNX_FP16 = "onnx-fp16"  # the fp16 conversion ort-cuda builds (inputs and outputs stay fp32)
ONNX_INT8 = "onnx-int8"  # the int8 model ort-cpu builds (the variant its int8 search chose)
ONNX_INT8_TENSORRT = "onnx-int8-tensorrt"  # the int8 QDQ model built with TensorRT's recipe
PLAN = "plan"  # a serialized TensorRT engine
TORCHSCRIPT = "torchscript"  # a traced model.pt, inputs INPUT__i, outputs OUTPUT__i
PYTHON = "python"  # a generated model.py that builds an rtpick Session from a copied deploy file

# runtime -> (platform, default artifact). Platform names are Triton's (model_config.proto, `platform`).
PLATFORMS: dict[str, tuple[str, str]] = {
    "ort-cpu": ("onnxruntime_onnx", ONNX),
    "ort-cuda": ("onnxruntime_onnx", ONNX),
    "ort-tensorrt": ("onnxruntime_onnx", ONNX),
    "tensorrt": ("tensorrt_plan", PLAN),
    "torch-cpu": ("pytorch_libtorch", TORCHSCRIPT),
    "torch-cuda": ("pytorch_libtorch", TORCHSCRIPT),
    "torch-compile-cpu": ("", PYTHON),
    "torch-compile-cuda": ("", PYTHON),
}

# Options whose value changes what runs and that Triton's own backend for the runtime cannot express: any of
# them away from its neutral value sends the configuration to the python backend (value -> neutral value).
RTPICK_ONLY: dict[str, dict[str, Any]] = {
    "ort-cuda": {"cuda_graph": False},
    "torch-cpu": {"channels_last": False},
    "torch-cuda": {"channels_last": False, "cuda_graph": False, "fuse_conv": False, "cudnn_benchmark": False},
}

# precision -> torch compute dtype of a traced (libtorch) model; tf32 never gets here (python backend)
TORCH_COMPUTE_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# ONNX Runtime graph optimisation level -> the Triton ORT backend's `optimization.graph.level` (None: its default,
# which is "all"); documented in triton-inference-server/onnxruntime_backend's README.
ORT_GRAPH_LEVELS = {"all": None, "extended": 1, "basic": -1, "disable": 2}


@dataclass(frozen=True)
class Accelerator:
    """One entry of ``optimization.execution_accelerators.gpu_execution_accelerator``."""

    name: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TritonFacts:
    """How one runtime:precision:options configuration becomes a Triton model."""

    platform: str  # "" when `backend` is set instead
    backend: str  # "python" for configurations only an rtpick Session can run
    artifact: str  # one of the artifact kinds above
    gpu: bool
    device_id: int = 0
    accelerators: tuple[Accelerator, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)  # ModelConfig.parameters (string values)
    graph_level: int | None = None
    cuda_graphs: bool = False  # optimization.cuda.graphs (TensorRT backend)
    compute_dtype: str = ""  # torch dtype name a traced model computes in
    reasons: tuple[str, ...] = ()  # why the python backend, when it is
    notes: tuple[str, ...] = ()

    @property
    def python_backend(self) -> bool:
        return self.backend == "python"


def has_triton_equivalent(runtime: str) -> bool:
    return runtime in PLATFORMS


def triton_facts(runtime: str, precision: str, options: Mapping[str, Any]) -> TritonFacts:
    """The Triton form of a configuration; `RtpickError` for a runtime Triton has no equivalent of."""
    if runtime not in PLATFORMS:
        raise RtpickError(f"runtime {runtime!r} has no Triton Inference Server equivalent; export one of "
                          f"{', '.join(PLATFORMS)} (rtpick recommend -r ...)")
    from rtpick.runtimes.registry import get_runtime

    device = get_runtime(runtime).device
    gpu = device == "cuda"
    device_id = int(options.get("device_id", 0) or 0)
    platform, artifact = PLATFORMS[runtime]
    reasons = [f"{option}={options[option]!r} is an rtpick option that Triton's {platform} backend cannot express"
               for option, neutral in RTPICK_ONLY.get(runtime, {}).items()
               if option in options and options[option] != neutral]
    if not platform:
        reasons.insert(0, f"{runtime} (torch.compile) has no Triton backend of its own")
    if platform == "pytorch_libtorch" and precision == "tf32":
        reasons.append("tf32 is a process-wide torch setting that Triton's libtorch backend does not expose")
    if reasons:
        return TritonFacts(platform="", backend="python", artifact=PYTHON, gpu=gpu, device_id=device_id,
                           reasons=tuple(reasons))
    if platform == "onnxruntime_onnx":
        return _ort_facts(runtime, precision, options, gpu, device_id)
    if platform == "tensorrt_plan":
        notes = ["the plan holds the precision, workspace and batch profile it was built with"]
        if not (int(options.get("min_batch") or 0) and int(options.get("max_batch") or 0)):
            notes.append("the plan accepts only the deploy file's batch (min_batch/max_batch were not set), so "
                         "Triton refuses the smaller batches its dynamic batcher forms; save the deploy file "
                         "with min_batch=1,max_batch=N to serve every batch up to N")
        return TritonFacts(platform=platform, backend="", artifact=PLAN, gpu=True, device_id=device_id,
                           cuda_graphs=bool(options.get("cuda_graph")), notes=tuple(notes))
    # the dtype the weights are cast to before tracing (the runtime's compute dtype for this precision)
    return TritonFacts(platform=platform, backend="", artifact=TORCHSCRIPT, gpu=gpu, device_id=device_id,
                       compute_dtype=TORCH_COMPUTE_DTYPES[precision],
                       parameters={"INFERENCE_MODE": "true", "DISABLE_OPTIMIZED_EXECUTION": "false"},
                       notes=(f"traced at {precision}: inputs are cast to it and outputs back inside model.pt",))


def _ort_facts(runtime: str, precision: str, options: Mapping[str, Any], gpu: bool, device_id: int) -> TritonFacts:
    parameters: dict[str, str] = {}
    threads = int(options.get("threads", 0) or 0)
    if threads:
        parameters["intra_op_thread_count"] = str(threads)
    level = ORT_GRAPH_LEVELS.get(str(options.get("graph_optimization", "all")))
    accelerators: tuple[Accelerator, ...] = ()
    notes: list[str] = []
    artifact = ONNX
    if runtime == "ort-cpu":
        artifact = ONNX_INT8 if precision == "int8" else ONNX
    elif runtime == "ort-cuda":
        artifact = ONNX_FP16 if precision == "fp16" else ONNX
        cuda = {"cudnn_conv_algo_search": str(options.get("cudnn_conv_algo_search", "EXHAUSTIVE")),
                "use_tf32": "1" if precision == "tf32" else "0"}
        if options.get("prefer_nhwc"):
            cuda["prefer_nhwc"] = "1"
        accelerators = (Accelerator("cuda", cuda),)
    else:  # ort-tensorrt
        artifact = ONNX_INT8_TENSORRT if precision == "int8" else ONNX
        mode = {"tf32": "FP32", "fp16": "FP16", "int8": "INT8"}[precision]
        trt = {"precision_mode": mode,
               "max_workspace_size_bytes": str(int(options.get("workspace_mb", 4096)) << 20),
               "trt_builder_optimization_level": str(int(options.get("builder_optimization_level", 3))),
               "trt_engine_cache_enable": "1",
               "trt_engine_cache_path": "/tmp/rtpick-ort-trt-engines",
               "trt_timing_cache_enable": "1"}
        if options.get("cuda_graph"):
            trt["trt_cuda_graph_enable"] = "1"
        accelerators = (Accelerator("tensorrt", trt),)
        notes.append("engine cache in /tmp/rtpick-ort-trt-engines inside the server container: built on the first "
                     "load, reused after (the precision mode and TensorRT version are part of each engine)")
    return TritonFacts(platform="onnxruntime_onnx", backend="", artifact=artifact, gpu=gpu, device_id=device_id,
                       accelerators=accelerators, parameters=parameters, graph_level=level, notes=tuple(notes))
