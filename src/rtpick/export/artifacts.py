"""The files that go into ``<model>/1/``, one producer per artifact kind the runtimes declare.

Each producer writes into the version folder of a repository being built in a temporary folder and returns
notes for the README. The kinds come from `rtpick.runtimes.triton_facts`; this module never asks which runtime
a deploy file names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes, file_sha256
from rtpick.runtimes import triton_facts as tf

if TYPE_CHECKING:
    from rtpick.deploy import DeployConfig
    from rtpick.model import Model

FILE_NAMES = {tf.ONNX: "model.onnx", tf.ONNX_FP16: "model.onnx", tf.ONNX_INT8: "model.onnx",
              tf.ONNX_INT8_TENSORRT: "model.onnx", tf.PLAN: "model.plan", tf.TORCHSCRIPT: "model.pt",
              tf.PYTHON: "model.py"}


def _shapes(deploy: DeployConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in deploy.shapes.items()}


def _copy(source: Path, target: Path) -> list[str]:
    shutil.copyfile(source, target)
    return []


def write_onnx(deploy: DeployConfig, model: Model, version: Path) -> list[str]:
    """The ONNX file the deploy file's ONNX Runtime configuration loads, as rtpick built and measured it: the
    model as given, or its verified fused copy (ort-cpu fp32), fp16 conversion, or int8 model (the variant the
    int8 search chose for ort-cpu; TensorRT's recipe for ort-tensorrt)."""
    from rtpick.runtimes.registry import get_runtime

    path, notes = get_runtime(deploy.runtime).onnx_file(model, deploy.precision, _shapes(deploy), deploy.options)
    _copy(path, version / "model.onnx")
    if path == Path(model.onnx_path()):
        return []
    return [f"model.onnx is the file {deploy.config} loads, not the model as given"
            + (f": {'; '.join(notes)}" if notes else "")]


def write_plan(deploy: DeployConfig, model: Model, version: Path) -> list[str]:
    """Build the engine exactly as the deploy file says, on this machine's GPU, and serialize it."""
    from rtpick.runtimes.registry import availability

    state = availability(deploy.runtime)
    if not state.ok:
        raise RtpickError(f"a TensorRT plan is built on the GPU and TensorRT version it will run on, and "
                          f"{deploy.runtime} cannot run here ({state.reason}); run rtpick export triton there")
    session = deploy.build(model)
    try:
        engine = getattr(session, "_engine", None)
        if engine is None:
            raise RtpickError(f"the {deploy.config} session holds no engine to serialize")
        atomic_write_bytes(version / "model.plan", bytes(memoryview(engine.serialize())))
    finally:
        session.close()
    return ["model.plan was built here; it loads only with the same TensorRT version on the same GPU model"]


def write_torchscript(deploy: DeployConfig, model: Model, version: Path) -> list[str]:
    """Trace the model (with rtpick's input/output casts) so that Triton's libtorch backend runs it.

    Inputs are positional ``INPUT__i`` and outputs ``OUTPUT__i``, in the model's order.
    """
    import warnings

    import torch

    from rtpick.data import synthetic_feeds
    from rtpick.model import with_batch
    from rtpick.runtimes.torch import make_io_cast
    from rtpick.runtimes.triton_facts import triton_facts

    facts = triton_facts(deploy.runtime, deploy.precision, deploy.options)
    # traced where it will run when this machine can (a CPU cannot run every fp16 kernel); the saved weights
    # move to the instance's device when Triton loads them
    device = torch.device("cuda" if facts.gpu and torch.cuda.is_available() else "cpu")
    spec = model.spec
    inner = model.torch_module().eval().to(device=device, dtype=getattr(torch, facts.compute_dtype))
    module = make_io_cast(inner, deploy.precision, False, [t.dtype for t in spec.outputs])

    class Positional(torch.nn.Module):
        """Outputs as a tuple (libtorch maps tuple element i to OUTPUT__i)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> tuple[Any, ...]:
            return tuple(self.inner(*inputs))

    # traced at the deploy file's shapes (sizes the model's guards allow), checked at another batch
    given = {k: tuple(v) for k, v in deploy.shapes.items()}
    base = given if set(given) >= {t.name for t in spec.inputs} else model.probe_shapes()
    feeds = synthetic_feeds(spec.inputs, base, seed=0)
    examples = tuple(torch.from_numpy(feeds[t.name]).to(device) for t in spec.inputs)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(Positional(module), examples, check_trace=False)
            check = synthetic_feeds(spec.inputs, with_batch(base, 3, spec.inputs), seed=1)
            check_inputs = [torch.from_numpy(check[t.name]).to(device) for t in spec.inputs]
            want = Positional(module)(*check_inputs)
            got = traced(*check_inputs)
    except Exception as exc:  # noqa: BLE001 - tracing raises many types; each means "cannot trace"
        raise RtpickError(f"cannot trace {spec.name} for Triton's libtorch backend "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "export a python-backend model instead (save the deploy file with a torch-compile "
                          "runtime) or use an ort-* runtime") from exc
    for w, g, t in zip(want, got, spec.outputs):
        if w.shape != g.shape or not torch.equal(w, g):
            raise RtpickError(f"the traced {spec.name} disagrees with the model on output {t.name!r} at another "
                              "batch size (the trace froze a shape); use an ort-* runtime for Triton")
    buffer_path = version / "model.pt"
    traced.save(str(buffer_path))
    names = {f"INPUT__{i}": t.name for i, t in enumerate(spec.inputs)}
    names.update({f"OUTPUT__{i}": t.name for i, t in enumerate(spec.outputs)})
    return ["model.pt is traced: tensor names " + ", ".join(f"{k} = {v}" for k, v in names.items()),
            "checked: the trace gives the model's outputs bit for bit at batch 3 (it was traced at batch 2)"]


def write_python(deploy: DeployConfig, model: Model, version: Path) -> list[str]:
    """model.py plus the deploy file (and the model file, when it is one) it builds its Session from."""
    from rtpick.export.python_model import python_model_source

    data = deploy.to_dict()
    model_file = ""
    digest = ""
    source = Path(deploy.model_source)
    if model.path is not None and source.is_file():
        model_file = "model" + source.suffix
        _copy(source, version / model_file)
        digest = file_sha256(version / model_file)
        data["model"]["source"] = model_file  # resolved against model.py's folder when loaded
    atomic_write_bytes(version / "deploy.json", (json.dumps(data, indent=1) + "\n").encode())
    code = python_model_source(
        [t.name for t in model.spec.inputs], [t.name for t in model.spec.outputs], model_file, digest,
        file_sha256(version / "deploy.json"))
    atomic_write_bytes(version / "model.py", code.encode())
    where = f"{model_file} (sha256 {digest[:16]}..., checked before loading)" if model_file else \
        f"{deploy.model_source} (a model rtpick provides; its sha256 is checked when loaded)"
    return [f"model.py builds the rtpick Session of deploy.json ({deploy.config}) from {where}; the Python "
            "environment of the Triton server needs rtpick and the runtime's packages installed"]


PRODUCERS: dict[str, Callable[[DeployConfig, Model, Path], list[str]]] = {
    tf.ONNX: write_onnx, tf.ONNX_FP16: write_onnx, tf.ONNX_INT8: write_onnx,
    tf.ONNX_INT8_TENSORRT: write_onnx, tf.PLAN: write_plan, tf.TORCHSCRIPT: write_torchscript,
    tf.PYTHON: write_python,
}
