"""The Python API behind `rtpick.load`, `rtpick.compare` and `rtpick.runtimes`; the CLI calls these too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rtpick.model import Model, load_model, resolve_shapes

if TYPE_CHECKING:
    from rtpick.compare import Comparison
    from rtpick.runtimes.base import Session


def load(
    model: Any,
    runtime: str = "ort-cpu",
    precision: str = "fp32",
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    input_specs: Any = None,
    weights: str | None = None,
    **options: Any,
) -> Session:
    """Build `model` on `runtime` at `precision` and return a ready `Session`.

    `model` is an .onnx/.pt2 path, ``torchvision:<name>``, ``rtpick:digits``, a torch module (with
    `input_specs`) or a loaded `Model`. `shapes` fixes symbolic dims (``{"x": (1, 3, 224, 224)}``); runtime
    `options` are listed by ``rtpick runtimes --verbose``.
    """
    from rtpick.runtimes.registry import get_runtime

    source = model if isinstance(model, Model) else load_model(model, weights=weights, input_specs=input_specs)
    target = get_runtime(runtime)
    resolved = resolve_shapes(source.spec.inputs, shapes, batch)
    return target.build(source, precision, resolved, **options)


def compare(model: Any, configs: Sequence[str], **kwargs: Any) -> Comparison:
    """Run the same feeds through each ``runtime:precision`` and compare every output with a reference."""
    from rtpick.compare import compare_configs

    return compare_configs(model, configs, **kwargs)


def runtimes() -> list[dict[str, Any]]:
    """Every runtime rtpick knows, with whether it runs here and why not."""
    from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime

    rows = []
    for name in RUNTIMES:
        state = availability(name)
        rows.append({**get_runtime(name).describe(), "available": state.ok, "reason": state.reason})
    return rows
