"""Loading model sources: ONNX files, torch modules, ``.pt2`` ExportedPrograms, ``torchvision:<name>``, bundled.

Each loader returns a `Model` whose spec is read without running any runtime. Bad input (a missing file, a
file that is not a model, a corrupted ONNX file) becomes one `RtpickError` line.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import file_sha256
from rtpick.index_limits import index_limits
from rtpick.model import Model, ModelSpec, TensorSpec, flatten_outputs, probe_shapes
from rtpick.model_files import check_source, onnx_sha256
from rtpick.onnx_export import export_to_onnx
from rtpick.pt2_safety import check_pt2

BUNDLED = {"rtpick:digits": "digits"}


def load_model(source: Any, *, weights: str | os.PathLike[str] | None = None, input_specs: Any = None) -> Model:
    """Turn whatever the user gave into a `Model`; a clear `RtpickError` for anything that is not a model."""
    if isinstance(source, Model):
        return source
    if _is_torch_module(source):
        return _from_torch_module(source, input_specs, name=type(source).__name__)
    if not isinstance(source, str | os.PathLike):
        raise RtpickError(
            f"cannot load a model from a {type(source).__name__}; give an .onnx or .pt2 path, "
            "a torchvision:<name> zoo name, rtpick:digits, or a torch.nn.Module"
        )
    text = os.fspath(source)
    check_source(text, BUNDLED)  # unknown rtpick:<name>, .pt/.pth pickles, impossible names: one line
    if text in BUNDLED:
        return load_bundled(BUNDLED[text])
    if text.startswith("torchvision:"):
        return _from_torchvision(text.split(":", 1)[1], weights)
    path = Path(text)
    if not path.exists():
        raise RtpickError(f"model file {text!r} does not exist; check the path")
    if path.is_dir():
        raise RtpickError(f"{text!r} is a directory; give a model file (.onnx or .pt2)")
    if path.suffix == ".pt2":
        return _from_pt2(path)
    return _from_onnx(path)


def _is_torch_module(obj: Any) -> bool:
    return any(cls.__module__.startswith("torch.nn") and cls.__name__ == "Module" for cls in type(obj).__mro__)


# ---------------------------------------------------------------------------------------------------- ONNX


def _onnx_dtype(elem_type: int) -> str:
    import onnx.helper

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception as exc:  # noqa: BLE001 - any unknown type is the same fact for the user
        raise RtpickError(f"ONNX element type {elem_type} has no numpy equivalent") from exc


def _value_info_spec(value_info: Any, owner: str) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise RtpickError(f"{owner} {value_info.name!r} is not a tensor (sequences and maps are not supported)")
    dims: list[int | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(f"{value_info.name}_dim{axis}")
    return TensorSpec(value_info.name, _onnx_dtype(tensor_type.elem_type), tuple(dims))


def onnx_spec(path: Path, name: str | None = None, source: str = "onnx") -> ModelSpec:
    """Read inputs and outputs from an ONNX file without loading external weights."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise RtpickError(f"{path} is not a readable ONNX model ({type(exc).__name__}); check the file") from exc
    if not proto.graph.node and not proto.graph.output:
        raise RtpickError(f"{path} is not an ONNX model (no graph found); check the file")
    initializers = {init.name for init in proto.graph.initializer}
    limits = index_limits(proto.graph)
    inputs = tuple(replace(_value_info_spec(v, "input"), index_limit=limits.get(v.name))
                   for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(_value_info_spec(v, "output") for v in proto.graph.output)
    return ModelSpec(name or path.stem, inputs, outputs, source, onnx_sha256(path, proto))


def _from_onnx(path: Path) -> Model:
    return Model(spec=onnx_spec(path), path=path, onnx_file=path)


# ---------------------------------------------------------------------------------------------------- torch


def _require_torch(what: str) -> Any:
    if importlib.util.find_spec("torch") is None:
        raise RtpickError(f"{what} needs PyTorch; install it with: pip install 'rtpick[torch]'")
    import torch

    return torch


def _torch_dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _module_hash(module: Any, inputs: tuple[TensorSpec, ...]) -> str:
    """A content hash of a module: its class, parameters and buffers, and the input specs."""
    digest = hashlib.sha256()
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr([t.to_dict() for t in inputs]).encode())
    return digest.hexdigest()


def parse_input_specs(input_specs: Any) -> tuple[TensorSpec, ...]:
    """Accept input specs as `TensorSpec`s, example tensors/arrays, or ``{name: shape}`` / ``{name: tensor}``."""
    if input_specs is None:
        raise RtpickError(
            "a torch module needs example inputs or input specs: "
            "rtpick.load(module, input_specs={'x': (1, 3, 224, 224)})"
        )
    items: list[tuple[str, Any]]
    if isinstance(input_specs, dict):
        items = list(input_specs.items())
    else:
        if not isinstance(input_specs, list | tuple):
            input_specs = [input_specs]
        items = [(getattr(s, "name", None) or f"input_{i}", s) for i, s in enumerate(input_specs)]
    specs = []
    for axis_name, (name, value) in enumerate(items):
        del axis_name
        if isinstance(value, TensorSpec):
            specs.append(value)
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            shape = tuple(int(d) for d in value.shape)
            dims = ("batch", *shape[1:]) if len(shape) > 1 else shape
            specs.append(TensorSpec(name, _torch_dtype_name(value.dtype), dims))
        elif isinstance(value, list | tuple):
            shape = tuple(value)
            dims = ("batch", *shape[1:]) if len(shape) > 1 else shape
            specs.append(TensorSpec(name, "float32", dims))
        else:
            raise RtpickError(f"input spec for {name!r} must be a shape, an example tensor or a TensorSpec")
    return tuple(specs)


def _output_specs(module: Any, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Learn the outputs' names, dtypes and shapes by running the module twice at different symbolic sizes:
    an output dim that follows them is symbolic (``batch`` on the leading axis), one that does not is fixed."""
    from rtpick.data import synthetic_feeds

    torch = _require_torch("a torch model")
    runs = []
    for batch, other in ((2, 8), (3, 9)):
        feeds = synthetic_feeds(inputs, probe_shapes(inputs, batch=batch, other=other), seed=0)
        with torch.inference_mode():
            runs.append(flatten_outputs(module(*[torch.from_numpy(feeds[t.name]) for t in inputs])))
    first, second = runs
    specs = []
    for i, ((name, tensor), (_, again)) in enumerate(zip(first, second)):
        label = name or ("output" if len(first) == 1 else f"output_{i}")
        dims: list[int | str] = []
        for axis, (a, b) in enumerate(zip(tensor.shape, again.shape)):
            if int(a) == int(b):
                dims.append(int(a))
            else:
                dims.append("batch" if axis == 0 else f"{label}_dim{axis}")
        specs.append(TensorSpec(label, _torch_dtype_name(tensor.dtype), tuple(dims)))
    return tuple(specs)


def _from_torch_module(module: Any, input_specs: Any, name: str, source: str = "torch") -> Model:
    """Wrap a user's module without touching it: runtimes get their own eval-mode copy to cast and move."""
    _require_torch("a torch model")
    private = copy.deepcopy(module).eval()
    inputs = parse_input_specs(input_specs)
    outputs = _output_specs(private, inputs)
    spec = ModelSpec(name, inputs, outputs, source, _module_hash(private, inputs))
    return Model(spec=spec, torch_factory=lambda: copy.deepcopy(private), exporter=export_to_onnx)


def _from_pt2(path: Path) -> Model:
    check_pt2(path)  # before torch touches it: torch.export.load can run code from the archive
    torch = _require_torch(f"{path.name} (a torch.export program)")
    try:
        with warnings.catch_warnings():  # torch's own deprecations while it unpickles its tree specs
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise RtpickError(f"{path} is not a loadable torch.export program ({type(exc).__name__}: {exc})") from exc
    inputs = []
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        inputs.append(TensorSpec(node.name, _torch_dtype_name(value.dtype), _dims(value.shape)))
    module = program.module()
    specs = tuple(inputs)
    outputs = _pt2_output_specs(program)
    if outputs is None:  # an output the graph does not describe (a constant): learn it by running
        try:
            outputs = _output_specs(module, specs)
        except Exception as exc:  # noqa: BLE001 - a guard the probe sizes break, or the module's own error
            raise RtpickError(f"cannot learn the outputs of {path.name} by running it at probe sizes "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    spec = ModelSpec(path.stem, specs, outputs, "pt2", file_sha256(path))
    sizes = ", ".join(f"{name} {lo}..{hi}" for name, (lo, hi) in _symbol_ranges(program).items())
    return Model(spec=spec, path=path, torch_factory=lambda: _quiet_copy(module), exporter=export_to_onnx,
                 example_shapes=_example_shapes(program, specs),
                 notes=[f"sizes the program allows: {sizes}"] if sizes else [])


def _dims(shape: Any) -> tuple[int | str, ...]:
    """A traced shape as rtpick writes it: ints, and a symbolic size as its expression (``s0``, ``4*s1``)."""
    return tuple(int(d) if str(d).lstrip("-").isdigit() else str(d) for d in shape)


def _quiet_copy(module: Any) -> Any:
    """A private copy of an exported program's module, without torch's deprecation notes about its tree specs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


def _symbol_ranges(program: Any) -> dict[str, tuple[int, int]]:
    """The program's symbolic sizes and the ranges its guards allow (torch.export's range_constraints), so a
    --shape can be chosen that the program accepts."""
    ranges = {}
    for symbol, bounds in getattr(program, "range_constraints", {}).items():
        try:
            ranges[str(symbol)] = (int(bounds.lower), int(bounds.upper))
        except (TypeError, ValueError, OverflowError):  # an unbounded side (oo)
            continue
    return ranges


def _example_shapes(program: Any, inputs: tuple[TensorSpec, ...]) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the example inputs the program was exported with (saved in the archive since torch 2.6),
    where they are plain tensors, one per input; else None."""
    example = getattr(program, "example_inputs", None)
    if not example:
        return None
    args, kwargs = example
    tensors = [*args, *(kwargs or {}).values()]
    if len(tensors) != len(inputs) or not all(hasattr(t, "shape") for t in tensors):
        return None
    return {spec.name: tuple(int(d) for d in t.shape) for spec, t in zip(inputs, tensors)}


def _pt2_output_specs(program: Any) -> tuple[TensorSpec, ...] | None:
    """The outputs as the exported graph records them (names from its output tree, dtypes, symbolic shapes in the
    inputs' symbols), or None where an output is not a traced tensor.

    Why read, not run: a program's guards (H a multiple of 4 and at least 32) hold only at the sizes the user
    exported for, and running it at rtpick's probe sizes failed those guards before the user gave any shape.
    """
    import torch.utils._pytree as pytree

    output = next(node for node in program.graph.nodes if node.op == "output")
    wanted = list(program.graph_signature.user_outputs)
    values = [arg for arg in output.args[0] if getattr(arg, "name", None) in set(wanted)]
    if len(values) != len(wanted) or not all(hasattr(v.meta.get("val"), "shape") for v in values):
        return None
    try:
        names = [name for name, _ in flatten_outputs(pytree.tree_unflatten(list(range(len(values))),
                                                                            program.call_spec.out_spec))]
    except Exception:  # noqa: BLE001 - an output type that cannot hold plain indices: positional names
        names = [None] * len(values)
    if len(names) != len(values):
        names = [None] * len(values)
    return tuple(TensorSpec(name or ("output" if len(values) == 1 else f"output_{i}"),
                            _torch_dtype_name(node.meta["val"].dtype), _dims(node.meta["val"].shape))
                 for i, (name, node) in enumerate(zip(names, values)))


TORCHVISION_INIT_SEED = 0


def _from_torchvision(name: str, weights: Any) -> Model:
    torch = _require_torch(f"torchvision:{name}")
    if importlib.util.find_spec("torchvision") is None:
        raise RtpickError(f"torchvision:{name} needs torchvision; install it with: pip install torchvision")
    import torchvision

    try:
        # random weights from a fixed seed, without touching the caller's generator: every process (bench's
        # workers, a later --from, serve) must load the same model, with the same sha256, for the same name
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TORCHVISION_INIT_SEED)
            module = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise RtpickError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from exc
    notes = []
    if weights is not None:
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001
            raise RtpickError(f"cannot load weights {weights} into torchvision:{name}: {exc}") from exc
        notes.append(f"weights from {weights}")
    else:
        notes.append(f"random weights, seed {TORCHVISION_INIT_SEED} (pass --weights FILE for trained ones)")
    size = 299 if name.startswith("inception") else 224
    example = torch.zeros(1, 3, size, size)
    model = _from_torch_module(module, {"input": example}, name=f"torchvision:{name}", source="torchvision")
    model.notes.extend(notes)
    return model


# ---------------------------------------------------------------------------------------------------- bundled


def assets_dir() -> Path:
    return Path(__file__).parent / "assets"


def eval_set(source: Any) -> Path | None:
    """The labelled held-out set a bundled model ships with, else None.

    An .npz with one array per input name plus ``label`` (the true class of each row). This is the one place
    that knows which models have one; `rtpick bench` scores top-1 accuracy on it.
    """
    if isinstance(source, Model):
        name = source.spec.name if source.spec.source == "bundled" else None
    elif isinstance(source, str | os.PathLike):
        name = os.fspath(source)
    else:
        return None
    key = BUNDLED.get(name) if name else None
    if key is None:
        return None
    path = assets_dir() / f"{key}_eval.npz"
    return path if path.is_file() else None


def _bundled_module(name: str) -> Any:
    """The bundled model's torch form; torch is imported only when a torch runtime asks for it."""
    from rtpick.assets import digits_net

    return digits_net.load_module(assets_dir() / f"{name}.pt")


def load_bundled(name: str) -> Model:
    """The bundled demo model: an ONNX file, plus its torch form when torch is installed."""
    onnx_file = assets_dir() / f"{name}.onnx"
    spec = onnx_spec(onnx_file, name=f"rtpick:{name}", source="bundled")
    model = Model(spec=spec, path=onnx_file, onnx_file=onnx_file)
    if importlib.util.find_spec("torch") is not None:
        model.torch_factory = lambda: _bundled_module(name)
    return model
