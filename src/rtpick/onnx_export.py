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

    target = cache_dir() / "onnx" / f"{model.spec.sha256[:32]}-opset{OPSET}.onnx"
    if target.exists():
        return target
    from rtpick.data import synthetic_feeds
    from rtpick.model import probe_shapes

    module = model.torch_module()
    inputs = model.spec.inputs
    feeds = synthetic_feeds(inputs, probe_shapes(inputs), seed=0)
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
            break
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types; each is reported
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(exc).__name__}: {exc}")
    else:
        raise BuildError(f"cannot export {model.spec.name} to ONNX: " + "; ".join(errors))
    atomic_write_bytes(target, buffer.getvalue())
    return target


def _export_takes_dynamo(torch: object) -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters  # type: ignore[attr-defined]
