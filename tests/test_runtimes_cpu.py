"""The CPU runtimes keep the Session contract and agree with each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_torch, small_cnn

import rtpick
from rtpick.errors import MissingRuntime, RtpickError
from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime, parse_configs
from rtpick.sources import load_model


def test_parse_configs() -> None:
    assert parse_configs("ort-cpu:fp32, ort-cpu:int8,ort-cpu") == [
        ("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("ort-cpu", "fp32")]
    for bad, message in (("nope:fp32", "unknown runtime"), ("ort-cpu:fp64", "unknown precision"),
                         ("ort-cpu:fp16", "does not support fp16"), ("", "no configuration")):
        with pytest.raises(RtpickError, match=message):
            parse_configs(bad)


def test_ort_cpu_runs_and_validates_feeds(small_onnx: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with rtpick.load(small_onnx, "ort-cpu", threads=1, graph_optimization="basic") as session:
        out = session.run({"x": x})
        assert set(out) == {"y"} and out["y"].shape == (5, 4) and out["y"].dtype == np.float32
        assert np.isfinite(out["y"]).all()
        with pytest.raises(RtpickError, match="missing"):
            session.run({"z": x})
        with pytest.raises(RtpickError, match="dtype float64"):
            session.run({"x": x.astype(np.float64)})
        with pytest.raises(RtpickError, match="shape"):
            session.run({"x": x[:, :4]})
        with pytest.raises(RtpickError, match="numpy array or a torch tensor"):
            session.run({"x": x.tolist()})
    with pytest.raises(RtpickError, match="closed"):
        session.run({"x": x})


def test_unknown_options_and_precisions_are_user_errors(small_onnx: Path) -> None:
    with pytest.raises(RtpickError, match="no option 'warp'"):
        rtpick.load(small_onnx, "ort-cpu", warp=9)
    with pytest.raises(RtpickError, match="must be one of"):
        rtpick.load(small_onnx, "ort-cpu", graph_optimization="max")
    with pytest.raises(RtpickError, match="does not support bf16"):
        rtpick.load(small_onnx, "ort-cpu", "bf16")
    with pytest.raises(RtpickError, match="unknown runtime"):
        rtpick.load(small_onnx, "ort-gpu")


def test_unavailable_runtime_says_why(small_onnx: Path) -> None:
    missing = [name for name in RUNTIMES if not availability(name).ok]
    if not missing:
        pytest.skip("every runtime is available on this machine")
    name = missing[0]
    precision = get_runtime(name).precisions[0]
    with pytest.raises(MissingRuntime, match=f"{name} is not available here"):
        rtpick.load(small_onnx, name, precision)


@needs_torch
def test_torch_runtime_needs_a_torch_source(small_onnx: Path) -> None:
    with pytest.raises(RtpickError, match="ONNX only"):
        rtpick.load(small_onnx, "torch-cpu")


@needs_torch
@pytest.mark.parametrize(("runtime", "precision", "tolerance", "options"), [
    ("ort-cpu", "fp32", 1e-5, {}),
    ("torch-cpu", "fp32", 1e-5, {}),
    ("torch-cpu", "bf16", 5e-2, {}),
    ("torch-compile-cpu", "fp32", 1e-4, {}),
    ("torch-compile-cpu", "fp32", 1e-4, {"freezing": True}),  # batch-norm folded into the conv at compile time
])
def test_cpu_runtimes_agree_with_eager_fp32_on_fresh_inputs(runtime: str, precision: str, tolerance: float,
                                                            options: dict[str, object]) -> None:
    import torch

    if not availability(runtime).ok:
        pytest.skip(f"{runtime}: {availability(runtime).reason}")
    module = small_cnn().eval()
    model = load_model(module, input_specs={"image": (1, 3, 16, 16)})
    x = np.random.default_rng(7).random((4, 3, 16, 16), dtype=np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    with rtpick.load(model, runtime, precision, batch=4, **options) as session:
        graphs_at_build = _compiled_graphs()
        out = session.run({"image": x})["output"]
        assert out.dtype == np.float32 and not np.isnan(out).any()
        error = np.linalg.norm(out - expected) / np.linalg.norm(expected)
        assert error < tolerance, f"{runtime}:{precision} relative error {error:.2e}"
        tensors = session.run({"image": torch.from_numpy(x)})
        assert isinstance(tensors["output"], torch.Tensor)
        np.testing.assert_allclose(tensors["output"].numpy(), out, rtol=1e-6, atol=1e-6)
        assert session.info.build_time_s > 0
        # the build compiled for both kinds of feed: numpy and a caller's torch tensor compile nothing more
        assert _compiled_graphs() == graphs_at_build, "the first calls after the build compiled again"


def _compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (Dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@needs_torch
def test_dynamic_batch_on_torch_and_ort() -> None:
    model = load_model(small_cnn(), input_specs={"image": (1, 3, 16, 16)})
    for runtime in ("torch-cpu", "ort-cpu"):
        with rtpick.load(model, runtime) as session:
            for batch in (1, 3):
                out = session.run({"image": np.random.default_rng(batch).random((batch, 3, 16, 16),
                                                                               dtype=np.float32)})
                assert out["output"].shape == (batch, 10)


@needs_torch
def test_cuda_switches_are_set_per_session_and_the_step_marker_is_cheap() -> None:
    """The process-wide flags a torch CUDA session sets before each run, and the CUDA-graph step marker it
    resolves once; both can be checked without a GPU (the flags are plain process state)."""
    import torch

    from rtpick.runtimes.torch import _set_cuda_flags, _step_marker

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        _set_cuda_flags(torch, allow_tf32=True, cudnn_benchmark=True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark
        _set_cuda_flags(torch, allow_tf32=False, cudnn_benchmark=False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before
    marker = _step_marker(torch)
    from torch._inductor.cudagraph_trees import MarkStepBox

    counter = MarkStepBox.mark_step_counter
    marker()
    assert MarkStepBox.mark_step_counter == counter - 1  # the same effect as torch.compiler's public function


def test_ort_cuda_provider_options_follow_the_session_options(small_onnx: Path) -> None:
    """What ort-cuda hands ONNX Runtime's CUDA provider; checked without a GPU (nothing is built)."""
    from rtpick.runtimes.ort import OrtCuda
    from rtpick.sources import load_model

    runtime = OrtCuda()
    defaults = {name: option.default for name, option in runtime.options.items()}
    (provider, plain), = runtime._providers("fp32", defaults, load_model(small_onnx))
    assert provider == "CUDAExecutionProvider"
    assert plain["use_tf32"] == "0" and plain["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert "prefer_nhwc" not in plain  # only sent when asked: older providers reject unknown keys
    (_, nhwc), = runtime._providers("tf32", {**defaults, "prefer_nhwc": True}, load_model(small_onnx))
    assert nhwc["prefer_nhwc"] == "1" and nhwc["use_tf32"] == "1"
