"""What a model is to rtpick: its input/output specs, and the sources a runtime can build from.

A `Model` wraps one user-given source (an ONNX file, a torch module, a ``.pt2`` ExportedProgram, a zoo name) and
can hand each runtime the form it needs: an ONNX file (torch sources are exported once, cached by content hash)
or a torch module. Nothing heavy is imported until a form is asked for.

This module is the vocabulary every other one shares, so it imports none of them: `rtpick.sources` turns what a
user gives into a `Model` (`load_model`) and hands it the ONNX export step as a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError

Dim = int | str  # a fixed size, or the name of a symbolic (dynamic) dimension


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype name, shape with symbolic dims as strings."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    # an integer input that indexes a table (an embedding's Gather) of this many rows: synthetic values stay
    # below it (BERT's token_type_ids index 2 rows; rtpick's usual [0, 100) made ONNX Runtime fail)
    index_limit: int | None = None

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.index_limit is not None:
            out["index_limit"] = self.index_limit
        return out


@dataclass(frozen=True)
class ModelSpec:
    """The model as every runtime sees it: named, typed inputs and outputs."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: str  # "onnx", "torch", "pt2", "torchvision", "bundled"
    sha256: str

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise RtpickError(f"the model has no input named {name!r}; its inputs are {self.input_names()}")

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def has_batch_axis(spec: ModelSpec) -> bool:
    """True when every input and output leads with a symbolic dimension (the batch axis): Triton's rule for a
    model it may batch, and rtpick's for one whose rows the scheduler may merge."""
    tensors = (*spec.inputs, *spec.outputs)
    return bool(tensors) and all(t.shape and isinstance(t.shape[0], str) for t in tensors)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """A shape as users write it (``1x3x224x224``); a scalar input (Silero VAD's ``sr``) says "scalar", not ""."""
    return "x".join(map(str, shape)) or "scalar"


def resolve_shapes(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input: fixed dims as declared, symbolic ones from `shapes` or `batch`.

    A symbolic dim named the same in several inputs (``batch``, ``sequence``) takes one value everywhere, so
    setting it on one input is enough. An unset symbolic dim is the user's mistake, named with the fix.
    """
    shapes = dict(shapes or {})
    names = {t.name for t in inputs}
    for unknown in set(shapes) - names:
        raise RtpickError(f"--shape names {unknown!r}, which is not an input; the inputs are {sorted(names)}")
    symbols: dict[str, int] = {}
    for spec in inputs:
        given = shapes.get(spec.name)
        if given is None:
            continue
        given = tuple(int(d) for d in given)
        if len(given) != len(spec.shape):
            raise RtpickError(
                f"--shape for {spec.name!r} has {len(given)} dims but the input has {len(spec.shape)} "
                f"({spec.describe()})"
            )
        for declared, value in zip(spec.shape, given):
            if value <= 0:
                raise RtpickError(f"--shape for {spec.name!r} has a dim {value}; every dim must be positive")
            if isinstance(declared, int) and declared != value:
                raise RtpickError(
                    f"--shape for {spec.name!r} sets a fixed dim of {declared} to {value} ({spec.describe()})"
                )
            if isinstance(declared, str):
                symbols.setdefault(declared, value)
    if batch is not None and batch <= 0:
        raise RtpickError(f"--batch must be a positive whole number, not {batch}")
    resolved: dict[str, tuple[int, ...]] = {}
    for spec in inputs:
        if spec.name in shapes:
            resolved[spec.name] = tuple(int(d) for d in shapes[spec.name])
            continue
        dims: list[int] = []
        for axis, declared in enumerate(spec.shape):
            if isinstance(declared, int):
                dims.append(declared)
            elif declared in symbols:
                dims.append(symbols[declared])
            elif axis == 0 and batch is not None:
                dims.append(batch)
            elif axis == 0 and batch is None and len(spec.shape) > 1 and _all_other_dims_fixed(spec):
                dims.append(1)  # the usual dynamic batch axis: default to a batch of one
            else:
                example = "x".join(str(d) if isinstance(d, int) else "N" for d in spec.shape)
                unset = list(dict.fromkeys(d for d in spec.shape if isinstance(d, str) and d not in symbols))
                dims_text = (f"symbolic dim {declared!r}" if len(unset) == 1 else
                             f"symbolic dims {', '.join(map(repr, unset))}")
                raise RtpickError(
                    f"input {spec.name!r} has {dims_text} ({spec.describe()}); "
                    f"set {'it' if len(unset) == 1 else 'them'} with --shape {spec.name}:{example} (N a number)"
                )
        resolved[spec.name] = tuple(dims)
    return resolved


def _all_other_dims_fixed(spec: TensorSpec) -> bool:
    return all(isinstance(d, int) for d in spec.shape[1:])


def probe_shapes(inputs: Sequence[TensorSpec], batch: int = 2, other: int = 8) -> dict[str, tuple[int, ...]]:
    """Shapes to trace or probe a model with: a leading symbolic dim becomes `batch`, any other symbolic dim
    `other`. Two, not one, so that a tracer cannot mistake the batch axis for a constant of size 1."""
    return {
        spec.name: tuple(
            d if isinstance(d, int) else (batch if axis == 0 else other) for axis, d in enumerate(spec.shape)
        )
        for spec in inputs
    }


def open_leading(inputs: Sequence[TensorSpec]) -> set[str]:
    """The inputs whose leading dim is open: the ones a batch size applies to."""
    return {spec.name for spec in inputs if spec.shape and isinstance(spec.shape[0], str)}


def with_batch(shapes: Mapping[str, tuple[int, ...]], batch: int,
               inputs: Sequence[TensorSpec]) -> dict[str, tuple[int, ...]]:
    """The same shapes with the leading (batch) axis set to `batch`, on the inputs whose leading dim is open.

    An input whose leading dim the model fixes keeps it: where other inputs carry the batch it is not a batch
    axis (Silero VAD's ``state`` is ``[2, batch, 128]``), and where every input's is fixed, `batch` is that size.
    """
    batched = open_leading(inputs)
    return {name: (batch, *shape[1:]) if shape and name in batched else shape for name, shape in shapes.items()}


@dataclass
class Model:
    """A loaded model source and the forms runtimes can build from.

    `onnx_file` is set for ONNX sources (and for torch sources once exported); `torch_factory` builds a fresh
    ``torch.nn.Module`` in eval mode for torch runtimes. `exporter` turns the torch form into an ONNX file when an
    ONNX runtime asks for one; the loader that made the model supplies it (a callable, so that this module does
    not depend on the exporter and its imports).
    """

    spec: ModelSpec
    path: Path | None = None
    onnx_file: Path | None = None
    torch_factory: Callable[[], Any] | None = None
    exporter: Callable[[Model], Path] | None = None
    notes: list[str] = field(default_factory=list)
    # sizes the torch form is known to run at, for tracing and export: a torch.export program's example inputs
    # (its guards hold there; rtpick's generic probe sizes, batch 2 and 8 elsewhere, may break them)
    example_shapes: dict[str, tuple[int, ...]] | None = None

    def probe_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes to trace or export the torch form at: the model's own example sizes, else `probe_shapes`."""
        return dict(self.example_shapes) if self.example_shapes else probe_shapes(self.spec.inputs)

    @property
    def has_torch(self) -> bool:
        return self.torch_factory is not None

    def onnx_path(self) -> Path:
        """The ONNX file for this model: the user's own, or an export of the torch source (cached)."""
        if self.onnx_file is not None:
            return self.onnx_file
        if self.torch_factory is None or self.exporter is None:
            raise RtpickError(
                f"model {self.spec.name!r} has no ONNX form; load it with rtpick.load(), which knows how to export it"
            )
        self.onnx_file = self.exporter(self)
        return self.onnx_file

    def torch_module(self) -> Any:
        if self.torch_factory is None:
            raise RtpickError(
                f"the torch runtimes need a PyTorch source, and {self.spec.name!r} is ONNX only; "
                "pass a torch module, a .pt2 ExportedProgram or a torchvision:<name> model, or use an ort-* runtime"
            )
        return self.torch_factory()


def flatten_outputs(result: Any) -> list[tuple[str | None, Any]]:
    """A module's return value as a flat list of (name or None, tensor): tensors, tuples, lists, dicts."""
    if isinstance(result, dict):
        return [(str(k), v) for k, v in result.items()]
    if isinstance(result, list | tuple):
        if hasattr(result, "_fields"):  # namedtuple
            return [(k, getattr(result, k)) for k in result._fields]
        flat: list[tuple[str | None, Any]] = []
        for item in result:
            flat.extend(flatten_outputs(item))
        return flat
    if hasattr(result, "to_tuple"):  # transformers ModelOutput
        return [(str(k), v) for k, v in result.items()]
    return [(None, result)]
