"""torch -> ONNX export with a dynamic batch axis, cached by the model's content hash."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rtpick.errors import BuildError
from rtpick.files import atomic_write_bytes
from rtpick.settings import cache_dir

if TYPE_CHECKING:
    from rtpick.model import Model

OPSET = 17


def export_to_onnx(model: Model) -> Path:
    """Export `model`'s torch source to ONNX once; later calls reuse the file named by its hash."""
    import torch

    # "-checked": exports from before the check below may have frozen an open size; they are not reused
    target = cache_dir() / "onnx" / f"{model.spec.sha256[:32]}-opset{OPSET}-checked.onnx"
    if target.exists():
        return target
    from rtpick.data import synthetic_feeds

    module = model.torch_module()
    inputs = model.spec.inputs
    base = model.probe_shapes()
    feeds = synthetic_feeds(inputs, base, seed=0)
    args = tuple(torch.from_numpy(feeds[t.name]) for t in inputs)
    input_names = [t.name for t in inputs]
    output_names = [t.name for t in model.spec.outputs]
    dynamic_axes = {
        t.name: {axis: dim for axis, dim in enumerate(t.shape) if isinstance(dim, str)}
        for t in (*inputs, *model.spec.outputs)
    }
    buffer = io.BytesIO()
    errors = []
    # The TorchScript exporter is fast and needs nothing beyond torch; the dynamo exporter (onnxscript) is the
    # fallback for models it cannot trace.
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                buffer = io.BytesIO()
                kwargs = {"dynamo": dynamo} if _export_takes_dynamo(torch) else {}
                torch.onnx.export(
                    module,
                    args,
                    buffer,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    opset_version=OPSET,
                    **kwargs,
                )
            frozen = _frozen_size(module, buffer.getvalue(), inputs, base)
            if frozen is None:
                break
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {frozen}")
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types; each is reported
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(exc).__name__}: {exc}")
    else:
        raise BuildError(f"cannot export {model.spec.name} to ONNX: " + "; ".join(errors)
                         + ("; install onnxscript for torch's dynamo exporter" if _no_onnxscript(errors) else ""))
    atomic_write_bytes(target, buffer.getvalue())
    return target


def _frozen_size(module: object, onnx_bytes: bytes, inputs: tuple, base: dict[str, tuple[int, ...]]) -> str | None:
    """Why the export is wrong at other sizes, or None: the export ran at `base`, and a tracer can bake a size
    the model leaves open into the graph (a Reshape to the traced sequence length, seen on a torch.export'ed
    TransformerEncoder). So the ONNX file runs once more with every open dim one larger, against the module.

    Sizes the module itself refuses there (a guard: a multiple of 4) leave nothing to check.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    from rtpick.data import synthetic_feeds

    other = {t.name: tuple(size + 1 if isinstance(dim, str) else size for dim, size in zip(t.shape, base[t.name]))
             for t in inputs}
    if other == base:
        return None
    feeds = synthetic_feeds(inputs, other, seed=1)
    try:
        with torch.inference_mode():
            want = module(*[torch.from_numpy(feeds[t.name]) for t in inputs])
    except Exception:  # noqa: BLE001 - the module's own limits at these sizes: nothing to compare
        return None
    from rtpick.model import flatten_outputs, shape_text

    want = [value.detach().float().numpy() for _, value in flatten_outputs(want)]
    sizes = ", ".join(f"{k} {shape_text(v)}" for k, v in other.items())
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the failure is reported below, in one line; not ORT's log on stderr
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        got = session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - ORT's own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the export froze a size the model leaves open: at {sizes} it fails ({first[:200]})"
    for w, g in zip(want, got):
        # a frozen size gives another shape or other numbers altogether; a loose bound (1% relative L2) keeps
        # fp32 rounding in a deep model from being mistaken for one (compare checks the numbers properly)
        g = g.astype(np.float32)
        # (scale floored at an RMS of 1e-3, so an all-zero output with rounding noise is not "differ")
        scale = max(float(np.linalg.norm(w.ravel())), 1e-3 * float(np.sqrt(max(w.size, 1))))
        off = float(np.linalg.norm((w - g).ravel())) / scale if w.shape == g.shape else np.inf
        if not off <= 1e-2:
            return f"the export froze a size the model leaves open: at {sizes} its outputs differ from the model's"
    return None


def _export_takes_dynamo(torch: object) -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters  # type: ignore[attr-defined]


def _no_onnxscript(errors: list[str]) -> bool:
    return any("No module named 'onnxscript'" in error for error in errors)
