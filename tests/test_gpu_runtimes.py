"""The CUDA runtimes (torch-cuda, torch-compile-cuda, ort-cuda) against ort-cpu fp32, on a real GPU.

Each test skips itself, with the reason, where its runtime cannot run (no GPU, a CPU-only torch, no
onnxruntime-gpu). On a GPU machine: ``PYTHONPATH=src python -m pytest tests/test_gpu_runtimes.py`` (about a
minute or two, most of it torch.compile).

For every precision each runtime declares: fresh inputs (never the seed-0 feeds a build warms up with, and two
different batches per session, so a stale CUDA-graph replay or a cached output cannot pass), outputs judged by
`rtpick.compare`'s tolerance policy against ort-cpu fp32, NaN never passing; numpy in -> numpy out; torch CUDA
tensors in -> torch CUDA tensors out on the same device, with no host copies in a steady-state call (checked with
the CUDA profiler, which sees every library's copies, ONNX Runtime's included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import residual_cnn, small_cnn

import rtpick
from rtpick.comparison.metrics import check_output
from rtpick.comparison.policy import tolerance_for
from rtpick.errors import MissingRuntime, RtpickError
from rtpick.model import Model
from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime

# The GPU runtimes the project has run (unverified ones, written to documentation only, have their own tests).
GPU_RUNTIMES = tuple(name for name in RUNTIMES if get_runtime(name).device == "cuda" and get_runtime(name).verified)
BATCH = 32


def _skip_mark(runtime: str) -> pytest.MarkDecorator:
    state = availability(runtime)
    return pytest.mark.skipif(not state.ok, reason=f"{runtime} is not available here: {state.reason}")


def _cases() -> list[Any]:
    """(runtime, precision, model) for every precision each runtime declares. torch.compile runs on the bundled
    model only, to keep compile time (one compile per precision) within the suite's budget."""
    cases = []
    for runtime in GPU_RUNTIMES:
        models = ("digits",) if get_runtime(runtime).compiled else ("digits", "cnn")
        for precision in get_runtime(runtime).precisions:
            for model in models:
                cases.append(pytest.param(runtime, precision, model, marks=_skip_mark(runtime),
                                          id=f"{runtime}-{precision}-{model}"))
    return cases


# ------------------------------------------------------------------------------------------ models and feeds


class Case:
    """A model, the feeds every configuration gets, and ort-cpu fp32's answers to them."""

    def __init__(self, model: Model, batches: list[dict[str, np.ndarray]], labels: np.ndarray | None) -> None:
        self.model = model
        self.batches = batches
        self.labels = labels
        self.input = model.spec.inputs[0].name
        self.output = model.spec.outputs[0].name
        shapes = {self.input: batches[0][self.input].shape}
        with rtpick.load(model, "ort-cpu", "fp32", shapes=shapes) as reference:
            self.expected = [reference.run(feeds)[self.output] for feeds in batches]
        assert all(np.isfinite(e).all() for e in self.expected)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {self.input: self.batches[0][self.input].shape}


@pytest.fixture(scope="module")
def digits() -> Case:
    """The bundled trained model: held-out digits (so top-1 agreement means something), then random images."""
    from rtpick.sources import assets_dir, load_model

    model = load_model("rtpick:digits")
    with np.load(assets_dir() / "digits_eval.npz") as data:
        images, labels = data["image"][:BATCH], data["label"][:BATCH]
    noise = np.random.default_rng(202).uniform(0, 1, images.shape).astype(np.float32)
    return Case(model, [{"image": images}, {"image": noise}], labels)


@pytest.fixture(scope="module")
def cnn() -> Case:
    """A small random-weight conv net (conv, BatchNorm, ReLU, strided conv, pooling, linear) from torch."""
    from rtpick.sources import load_model

    model = load_model(small_cnn(), input_specs={"x": (2, 3, 32, 32)})
    rng = np.random.default_rng(303)
    batches = [{"x": rng.uniform(0, 1, (BATCH, 3, 32, 32)).astype(np.float32)} for _ in range(2)]
    return Case(model, batches, None)


@pytest.fixture(scope="module")
def residual() -> Case:
    """A small ResNet-style net with non-trivial batch norm statistics (for the conv fusion pass)."""
    from rtpick.sources import load_model

    model = load_model(residual_cnn(), input_specs={"x": ("batch", 3, 16, 16)})
    rng = np.random.default_rng(404)
    batches = [{"x": rng.uniform(0, 1, (BATCH, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    return Case(model, batches, None)


def _judge(case: Case, index: int, out: np.ndarray, precision: str, config: str) -> None:
    assert isinstance(out, np.ndarray), f"{config}: numpy in gave {type(out).__name__} out"
    assert out.dtype == np.float32, f"{config}: output dtype {out.dtype}, the model declares float32"
    assert np.isfinite(out).all(), f"{config}: non-finite outputs"
    labels = case.labels if index == 0 else None
    check = check_output(case.output, out, case.expected[index], tolerance_for(precision), labels)
    assert check.ok, f"{config} batch {index}: {check.reason}"
    if labels is not None:  # real held-out images: the answer must not change
        assert check.top1_agreement is not None and check.top1_agreement >= 0.99, (
            f"{config}: top-1 agreement {check.top1_agreement} with fp32 on held-out digits")


def _host_copies(session: Any, feeds: dict[str, Any]) -> list[str]:
    """The host<->device copies the CUDA profiler sees during one call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        session.run(feeds)
        session.synchronize()
    names = [event.name for event in prof.events()]
    assert names, "the CUDA profiler recorded no GPU activity, so host copies cannot be checked here"
    return [name for name in names if "HtoD" in name or "DtoH" in name]


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(("runtime", "precision", "model_name"), _cases())
def test_runtime_at_precision(runtime: str, precision: str, model_name: str, request: pytest.FixtureRequest) -> None:
    import torch

    case: Case = request.getfixturevalue(model_name)
    config = f"{runtime}:{precision} on {model_name}"
    if precision == "fp8":  # the bundled model is conv-bound: fp8 is refused with why (its GEMMs: test_fp8.py)
        with pytest.raises(MissingRuntime, match="FP8-capable Linear layers do"):
            rtpick.load(case.model, runtime, precision, shapes=case.shapes)
        return
    with rtpick.load(case.model, runtime, precision, shapes=case.shapes) as session:
        assert session.device == "cuda" and session.precision == precision
        if runtime == "ort-cuda":  # never a silent fall back to the CPU provider
            assert session.providers[0] == "CUDAExecutionProvider", session.providers
        # numpy in -> numpy out, two fresh batches
        for index, feeds in enumerate(case.batches):
            _judge(case, index, session.run(feeds)[case.output], precision, config)
        # torch CUDA tensors in -> torch CUDA tensors out, same device
        device = torch.device("cuda", 0)
        on_device = [{k: torch.from_numpy(v).to(device) for k, v in feeds.items()} for feeds in case.batches]
        for index, feeds in enumerate(on_device):
            out = session.run(feeds)[case.output]
            assert isinstance(out, torch.Tensor), f"{config}: torch in gave {type(out).__name__} out"
            assert out.device == device, f"{config}: output on {out.device}, input on {device}"
            assert out.dtype == torch.float32
            session.synchronize()
            _judge(case, index, out.cpu().numpy(), precision, config)
        # a steady-state call with device tensors makes no host copies
        copies = _host_copies(session, on_device[1])
        assert not copies, f"{config}: device tensors in, yet the call copied through the host: {copies}"


@_skip_mark("ort-cuda")
def test_ort_cuda_refuses_rather_than_falls_back_to_cpu() -> None:
    """A CUDA provider that cannot start (a GPU that does not exist) is an error, not a CPU session."""
    with pytest.raises(RtpickError, match="ort-cuda:fp32"):
        rtpick.load("rtpick:digits", "ort-cuda", "fp32", device_id=99)


@_skip_mark("torch-cuda")
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["eager", "cuda-graph"])
@pytest.mark.parametrize("precision", get_runtime("torch-cuda").precisions)
def test_torch_cuda_fuse_conv(precision: str, cuda_graph: bool, residual: Case) -> None:
    """Folded batch norms and cuDNN's fused conv+bias(+residual)+ReLU calls, against ort-cpu fp32 on the unfused
    model: numpy and device tensors, two fresh batches each, at every precision, eager and replayed."""
    import torch

    config = f"torch-cuda:{precision} fuse_conv=True cuda_graph={cuda_graph}"
    with rtpick.load(residual.model, "torch-cuda", precision, shapes=residual.shapes, fuse_conv=True,
                     cuda_graph=cuda_graph) as session:
        assert any(note.startswith("fuse_conv: 6 batch norms folded") for note in session.info.notes), (
            session.info.notes)
        for index, feeds in enumerate(residual.batches):
            _judge(residual, index, session.run(feeds)[residual.output], precision, config)
            on_device = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
            out = session.run(on_device)[residual.output]
            session.synchronize()
            _judge(residual, index, out.cpu().numpy(), precision, config)


@pytest.mark.parametrize("options", [
    pytest.param(("ort-cuda", {}), marks=_skip_mark("ort-cuda"), id="ort-cuda"),
    pytest.param(("torch-cuda", {}), marks=_skip_mark("torch-cuda"), id="torch-cuda"),
    pytest.param(("torch-cuda", {"cuda_graph": True}), marks=_skip_mark("torch-cuda"), id="torch-cuda-graph"),
])
def test_device_input_still_being_written_is_waited_for(options: tuple[str, dict[str, Any]], cnn: Case) -> None:
    """A device input whose producing kernels are still queued (on a side stream the caller made current) must be
    read only once they finish. ONNX Runtime computes on a stream of its own, so this checks that rtpick's run
    waits for the caller's stream (ONNX Runtime's `synchronize_inputs`); torch's sessions queue behind it."""
    import torch

    runtime, extra = options
    with rtpick.load(cnn.model, runtime, "fp32", shapes=cnn.shapes, **extra) as session:
        ready = torch.from_numpy(cnn.batches[0][cnn.input]).cuda()
        pending = torch.zeros_like(ready)
        busy = torch.rand(4096, 4096, device="cuda")
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            for _ in range(40):  # tens of milliseconds of matrix products queued ahead of the input's copy
                busy = busy @ busy / 4096
            pending.copy_(ready)
            assert not side.query(), "the side stream finished before the call; the test would prove nothing"
            out = session.run({cnn.input: pending})[cnn.output]
            session.synchronize()
        _judge(cnn, 0, out.cpu().numpy(), "fp32", f"{runtime} {extra} with a pending input")
