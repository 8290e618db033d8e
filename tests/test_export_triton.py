"""Triton ModelConfig from a deploy file: golden config.pbtxt per runtime row, round trips, the serving policy."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")

from rtpick.deploy import DeployConfig  # noqa: E402
from rtpick.errors import RtpickError  # noqa: E402
from rtpick.export.triton import (  # noqa: E402
    model_config,
    model_config_json,
    parse_pbtxt,
    serving_policy,
    to_pbtxt,
)
from rtpick.model import ModelSpec, TensorSpec  # noqa: E402
from rtpick.runtimes.registry import RUNTIMES, get_runtime  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "triton"
SPEC = ModelSpec("net", (TensorSpec("image", "float32", ("batch", 3, 8, 8)),),
                 (TensorSpec("logits", "float32", ("batch", 10)), TensorSpec("index", "int64", ("batch",))),
                 "torch", "ab" * 32)
MEASURED = {"p99_ms": 2.0, "p50_ms": 1.5, "throughput": 800.0, "budget": "p99 <= 10 ms (single-stream)",
            "method": "single-stream, 200 queries"}

# row name -> (runtime, precision, options given on top of the runtime's defaults)
ROWS = {
    "ort-cpu-fp32": ("ort-cpu", "fp32", {"threads": 4, "graph_optimization": "extended"}),
    "ort-cpu-int8": ("ort-cpu", "int8", {}),
    "ort-cuda-fp16": ("ort-cuda", "fp16", {}),
    "ort-cuda-tf32-nhwc": ("ort-cuda", "tf32", {"prefer_nhwc": True, "device_id": 1}),
    "ort-tensorrt-fp16": ("ort-tensorrt", "fp16", {"workspace_mb": 2048}),
    "ort-tensorrt-int8": ("ort-tensorrt", "int8", {"cuda_graph": True}),
    "tensorrt-fp16": ("tensorrt", "fp16", {"cuda_graph": True}),
    "torch-cpu-fp32": ("torch-cpu", "fp32", {}),
    "torch-cuda-fp16-eager": ("torch-cuda", "fp16", {"channels_last": False}),
    "torch-cuda-tf32-eager": ("torch-cuda", "tf32", {"channels_last": False}),
    "torch-cuda-fp16-fused-graph": ("torch-cuda", "fp16", {"fuse_conv": True, "cuda_graph": True}),
    "torch-compile-cpu-fp32": ("torch-compile-cpu", "fp32", {}),
    "torch-compile-cuda-fp16": ("torch-compile-cuda", "fp16", {"mode": "max-autotune"}),
}


def deploy_for(runtime: str, precision: str, options: dict, measured: dict | None = None,
               batch: int = 8) -> DeployConfig:
    return DeployConfig("/models/net.onnx", SPEC.sha256, "net", runtime, precision,
                        get_runtime(runtime).check_options(options), batch=batch,
                        shapes={"image": [batch, 3, 8, 8]}, measured=dict(MEASURED if measured is None else measured),
                        created="2026-01-01T00:00:00Z")


@pytest.mark.parametrize("row", sorted(ROWS))
def test_golden_config_per_runtime_row(row: str) -> None:
    runtime, precision, options = ROWS[row]
    text = to_pbtxt(model_config(deploy_for(runtime, precision, options), SPEC), f"golden row {row}")
    path = GOLDEN / f"{row}.pbtxt"
    if os.environ.get("RTPICK_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with RTPICK_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text()


@pytest.mark.parametrize("row", sorted(ROWS))
def test_every_config_parses_back_and_round_trips(row: str) -> None:
    runtime, precision, options = ROWS[row]
    config = model_config(deploy_for(runtime, precision, options), SPEC)
    parsed = parse_pbtxt(to_pbtxt(config, "a header\nof two lines"))
    assert parsed == config
    assert to_pbtxt(parsed) == to_pbtxt(config)
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    assert json_format.ParseDict(model_config_json(deploy_for(runtime, precision, options), SPEC),
                                 model_config_pb2.ModelConfig()) == config


def test_golden_rows_cover_every_runtime() -> None:
    assert {runtime for runtime, _, _ in ROWS.values()} == set(RUNTIMES)


def test_rows_map_to_the_platforms_issue_15_lists() -> None:
    def kind(row: str) -> str:
        config = model_config(deploy_for(*ROWS[row]), SPEC)
        return config.platform or config.backend

    assert kind("ort-cpu-fp32") == kind("ort-cuda-fp16") == kind("ort-tensorrt-fp16") == "onnxruntime_onnx"
    assert kind("tensorrt-fp16") == "tensorrt_plan"
    assert kind("torch-cpu-fp32") == kind("torch-cuda-fp16-eager") == "pytorch_libtorch"
    for row in ("torch-cuda-fp16-fused-graph", "torch-cuda-tf32-eager", "torch-compile-cpu-fp32",
                "torch-compile-cuda-fp16"):
        assert kind(row) == "python"
    libtorch = model_config(deploy_for(*ROWS["torch-cpu-fp32"]), SPEC)
    assert [t.name for t in libtorch.input] == ["INPUT__0"]
    assert [t.name for t in libtorch.output] == ["OUTPUT__0", "OUTPUT__1"]
    trt = model_config(deploy_for(*ROWS["ort-tensorrt-int8"]), SPEC)
    accelerator = trt.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "INT8"
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    gpu = model_config(deploy_for(*ROWS["ort-cuda-tf32-nhwc"]), SPEC)
    assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU and list(gpu.instance_group[0].gpus) == [1]


def test_common_fields_follow_the_deploy_file() -> None:
    config = model_config(deploy_for("ort-cpu", "fp32", {}), SPEC)
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [3, 8, 8]  # the batch axis is left out
    assert list(config.output[1].dims) == []
    policy = config.dynamic_batching.default_queue_policy
    assert policy.timeout_action == policy.REJECT
    assert policy.default_timeout_microseconds == 8000  # 10 ms budget - 2 ms measured p99
    assert policy.max_queue_size == 8  # 800/s x 10 ms
    assert [w.batch_size for w in config.model_warmup] == [1, 8]
    assert list(config.model_warmup[1].inputs["image"].dims) == [3, 8, 8]


def test_a_model_without_a_batch_axis_gets_max_batch_size_0() -> None:
    spec = ModelSpec("fixed", (TensorSpec("x", "float32", (2, 4)),), (TensorSpec("y", "float32", (2, 3)),),
                     "onnx", "cd" * 32)
    deploy = DeployConfig("/m.onnx", spec.sha256, "fixed", "ort-cpu", "fp32", batch=1)
    config = model_config(deploy, spec)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [2, 4]
    assert not config.HasField("dynamic_batching")
    assert [w.batch_size for w in config.model_warmup] == [1]


def test_a_scalar_is_declared_dims_1_as_triton_requires() -> None:
    """Triton refuses a tensor without dims; its ONNX Runtime backend feeds a [1] tensor to a rank-0 model input.
    Silero VAD's sample rate is such a scalar."""
    spec = ModelSpec("vad", (TensorSpec("input", "float32", (1, 512)), TensorSpec("sr", "int64", ())),
                     (TensorSpec("prob", "float32", ()),), "onnx", "cd" * 32)
    deploy = DeployConfig("/m.onnx", spec.sha256, "vad", "ort-cpu", "fp32", batch=1)
    config = model_config(deploy, spec)
    assert config.max_batch_size == 0
    assert [list(t.dims) for t in config.input] == [[1, 512], [1]] and list(config.output[0].dims) == [1]
    assert list(config.model_warmup[0].inputs["sr"].dims) == [1]


def test_absent_figures_fall_back_to_stated_defaults() -> None:
    deploy = deploy_for("ort-cpu", "fp32", {}, measured={})
    policy = serving_policy(deploy, 8)
    assert policy.max_queue_delay_us == 0 and policy.timeout_us == 0 and policy.instances == 1
    assert policy.max_queue_size == 32
    text = " ".join(policy.notes)
    for figure in ("max_queue_delay_microseconds", "max_queue_size", "default_timeout_microseconds",
                   "instance_group"):
        assert figure in text
    measured = deploy_for("ort-cpu", "fp32", {}, measured={"max_queue_delay_us": 250, "max_queue_size": 17,
                                                          "instances": 2, "budget_p99_ms": 4.0})
    policy = serving_policy(measured, 8)
    assert (policy.max_queue_delay_us, policy.max_queue_size, policy.instances, policy.timeout_us) == \
        (250, 17, 2, 4000)


def test_json_uses_triton_field_names_and_numbers() -> None:
    data = model_config_json(deploy_for("ort-cuda", "fp16", {}), SPEC)
    assert data["max_batch_size"] == 8
    assert data["input"][0]["dims"] == [3, 8, 8] and data["input"][0]["data_type"] == "TYPE_FP32"
    assert data["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"] == 8000
    assert data["instance_group"][0]["kind"] == "KIND_GPU"


def test_a_runtime_without_a_triton_equivalent_is_refused() -> None:
    deploy = deploy_for("ort-cpu", "fp32", {})
    deploy.runtime = "mystery-npu"
    with pytest.raises(RtpickError, match="no Triton"):
        model_config(deploy, SPEC)


def test_no_runtime_name_is_compared_outside_runtimes() -> None:
    root = Path(__file__).resolve().parents[1] / "src" / "rtpick"
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in RUNTIMES))
    for folder in ("export", "serve"):
        for path in (root / folder).glob("*.py"):
            assert not pattern.search(path.read_text()), f"{path} names a runtime"
