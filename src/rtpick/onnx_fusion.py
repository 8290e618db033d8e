"""Exact rewrites of element-wise chains ONNX Runtime's CPU provider leaves unfused: decomposed HardSwish
activations (`fuse_hardswish`) and scalar scale/shift after a convolution (`fold_scalar_affine`); `fuse` runs both.

Why: paddle2onnx (the PaddleOCR models of the int8 corpus) writes every HardSwish as four element-wise ops,
``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)``. ONNX Runtime fuses none of them, so each is one more pass over the
activation tensor: in ppocr-det they are a fifth of the fp32 kernel time and a quarter of its int8 time
(``benchmarks/results/cpu_int8_profile.md``). ONNX's ``HardSwish`` (opset 14) is defined as the function
``x * HardSigmoid<alpha=1/6, beta=1/2>(x)``; ONNX Runtime 1.32 inlines it into exactly those two nodes, and its
NCHWc optimiser folds a ``Conv`` followed by them into one convolution with a HardSwish epilogue. So the rewrite
emits ``HardSwish`` where the model's opset has it and the same two-node body where it does not: equal to ONNX
Runtime, and legal in the model's own opset, so the opset import is never bumped.

Only what is provably the same function is rewritten (`fuse_hardswish`):

- the constants are initialisers or ``Constant`` nodes (not graph inputs, which a caller may override), float32,
  one element, and equal to 3, 0, 6 (or 1/6 for a ``Mul`` that stands for the ``Div``) within float32 rounding;
  a one-element constant of rank > 0 also needs ``x`` of known rank at least as high (else broadcasting would
  change the output's shape);
- ``x`` is the same tensor in the ``Add`` and in the ``Mul``, and float32;
- every tensor inside the pattern has exactly one consumer (subgraphs included) and is not a graph output; the
  last node's output keeps its name, so whatever reads it is unchanged.

Recognised spellings (operands of Add and Mul in either order): ``x * relu6(x + 3) / 6``, the same with ``* (1/6)``
for the division, ``x * (relu6(x + 3) / 6)`` (or ``* (1/6)``), and, at opset >= 14 only, ``x * HardSigmoid(x)``
with alpha 1/6 and beta 1/2. Clip's bounds may be inputs (opset >= 11) or attributes (older opsets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.onnx_graphs import bodies, nodes

HARDSWISH_OPSET = 14  # first opset with the HardSwish op
HARDSIGMOID_OPSET = 6  # HardSigmoid with the alpha/beta attributes this rewrite writes
ALPHA, BETA = 1.0 / 6.0, 0.5


@dataclass
class FusionReport:
    """What `fuse_hardswish` rewrote: counts per recognised spelling, and the op(s) each became."""

    rewritten: Counter[str] = field(default_factory=Counter)
    emitted: str = ""
    affine_folded: int = 0  # Conv -> Mul(s) [-> Add(t)] folded into the Conv (`fold_scalar_affine`, via `fuse`)

    @property
    def total(self) -> int:
        return sum(self.rewritten.values()) + self.affine_folded

    def describe(self) -> str:
        parts = []
        if self.rewritten:
            forms = ", ".join(f"{count} {form}" for form, count in sorted(self.rewritten.items()))
            parts.append(f"{sum(self.rewritten.values())} decomposed HardSwish ({forms}) fused as {self.emitted}")
        if self.affine_folded:
            parts.append(f"{self.affine_folded} scalar scale/shift after a Conv folded into it")
        return " and ".join(parts) or "no decomposed HardSwish or foldable scalar scale/shift found"


def fuse(model: Any) -> tuple[Any, FusionReport]:
    """Both rewrites of this module, as ort-cpu's fp32 and its int8 preparation apply them: scalar scale/shift
    folded into the Conv before them first (so a HardSwish's input is the Conv's output), then HardSwish."""
    folded, count = fold_scalar_affine(model)
    result, report = fuse_hardswish(folded)
    report.affine_folded = count
    return result, report


@dataclass(frozen=True)
class _Match:
    x: str
    nodes: tuple[Any, ...]  # in graph order; the last one's output is the activation's output
    form: str


def _close(value: float, target: float) -> bool:
    """Equal within float32 rounding (paddle2onnx writes 1/6 as 0.1666667014, one float32 step from 1/6)."""
    if target == 0.0:
        return value == 0.0
    return bool(np.isfinite(value)) and abs(value - target) <= 1e-6 * abs(target)


class _Arrays(Mapping[str, np.ndarray]):
    """A graph's constant tensors by name, each decoded to numpy when first read: the rewrites look at a few
    one-element constants and the weights of the convolutions they fold, not at every weight of the model."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self._tensors = tensors
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            import onnx

            self._arrays[name] = onnx.numpy_helper.to_array(self._tensors[name])
        return self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


class _Graph:
    """Indexes of one graph: producers, consumer counts (subgraphs included), constants, ranks and types."""

    def __init__(self, model: Any) -> None:
        import onnx

        graph = model.graph
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.users: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)
        self.consumers: Counter[str] = Counter(name for node in graph.node for name in node.input if name)
        for node in graph.node:
            for name in _subgraph_inputs(node):
                self.consumers[name] += 1  # an outer-scope tensor a subgraph reads: another consumer
        self.outputs = {out.name for out in graph.output}
        inputs = {inp.name for inp in graph.input}
        tensors = {init.name: init for init in graph.initializer if init.name not in inputs}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                    and node.attribute[0].name == "value":
                tensors[node.output[0]] = node.attribute[0].t
        self.constants = _Arrays(tensors)
        self.types: dict[str, tuple[int, int | None]] = {}  # name -> (elem_type, rank or None)
        try:
            typed = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001 - a graph shape inference cannot read: only declared types are known
            typed = graph
        for info in [*typed.input, *typed.value_info, *typed.output]:
            tensor = info.type.tensor_type
            if info.type.HasField("tensor_type"):
                rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
                self.types[info.name] = (tensor.elem_type, rank)

    def scalar_value(self, name: str, rank: int | None) -> float | None:
        """The value of `name` when it is a finite float32 one-element constant that broadcasts to a tensor of
        `rank` (None: unknown) without changing its shape; else None."""
        value = self.constants.get(name)
        if value is None or value.dtype != np.float32 or value.size != 1:
            return None
        if value.ndim > 0 and (rank is None or value.ndim > rank):
            return None
        number = float(value.reshape(-1)[0])
        return number if np.isfinite(number) else None

    def scalar(self, name: str, target: float, x: str) -> bool:
        """`name` is a float32 one-element constant equal to `target` that broadcasts to `x`'s shape unchanged."""
        value = self.scalar_value(name, self.types.get(x, (0, None))[1])
        return value is not None and _close(value, target)

    def is_float32(self, name: str) -> bool:
        import onnx

        return self.types.get(name, (0, None))[0] == onnx.TensorProto.FLOAT

    def single_use(self, name: str) -> bool:
        return self.consumers[name] == 1 and name not in self.outputs

    def made_by(self, name: str, op_type: str) -> Any | None:
        node = self.producer.get(name)
        ok = node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") \
            and len(node.output) == 1
        return node if ok else None


def _subgraph_inputs(node: Any) -> set[str]:
    """Every tensor name read by a node inside `node`'s subgraphs (If/Loop/Scan bodies), recursively."""
    return {name for body in bodies(node) for inner in nodes(body) for name in inner.input if name}


def _relu6_of_x_plus_3(g: _Graph, name: str, x: str | None) -> tuple[str, list[Any]] | None:
    """(x, [Add, Clip]) when tensor `name` is Clip(Add(x, 3), 0, 6), with `x` fixed if given."""
    clip = g.made_by(name, "Clip")
    if clip is None or not clip.input or not g.single_use(clip.input[0]):
        return None
    add = g.made_by(clip.input[0], "Add")
    if add is None or len(add.input) != 2:
        return None
    for value, constant in (list(add.input), list(reversed(add.input))):
        if (x is None or value == x) and g.scalar(constant, 3.0, value):
            break
    else:
        return None
    attributes = {a.name: a.f for a in clip.attribute}
    if len(clip.input) == 3 and not attributes:
        bounds = g.scalar(clip.input[1], 0.0, value) and g.scalar(clip.input[2], 6.0, value)
    elif len(clip.input) == 1 and set(attributes) == {"min", "max"}:
        bounds = _close(attributes["min"], 0.0) and _close(attributes["max"], 6.0)
    else:
        bounds = False
    return (value, [add, clip]) if bounds and g.is_float32(value) else None


def _divided_by_6(g: _Graph, node: Any, x: str | None) -> str | None:
    """The dividend when `node` is Div(t, 6) or Mul(t, 1/6) (either order), for a `t` shaped like `x`."""
    if node.op_type == "Div" and len(node.input) == 2 and g.scalar(node.input[1], 6.0, x or node.input[0]):
        return node.input[0]
    if node.op_type == "Mul" and len(node.input) == 2:
        for value, constant in (list(node.input), list(reversed(node.input))):
            if g.scalar(constant, ALPHA, x or value):
                return value
    return None


def _match(g: _Graph, tail: Any, hardswish_op: bool) -> _Match | None:
    """The decomposed HardSwish ending at `tail` (a Div or Mul), if any."""
    if tail.domain not in ("", "ai.onnx") or len(tail.output) != 1 or len(tail.input) != 2:
        return None
    # x * relu6(x + 3), then / 6 (or * 1/6)
    product = _divided_by_6(g, tail, None) if tail.op_type in ("Div", "Mul") else None
    mul = g.made_by(product, "Mul") if product and g.single_use(product) else None
    if mul is not None and len(mul.input) == 2:
        for x, other in (list(mul.input), list(reversed(mul.input))):
            found = g.single_use(other) and _relu6_of_x_plus_3(g, other, x)
            if found:
                return _Match(x, (*found[1], mul, tail), f"x*relu6(x+3){'/6' if tail.op_type == 'Div' else '*(1/6)'}")
    if tail.op_type != "Mul":
        return None
    # x * (relu6(x + 3) / 6) (or * 1/6), and x * HardSigmoid(x)
    for x, gate in (list(tail.input), list(reversed(tail.input))):
        if not g.single_use(gate):
            continue
        scale = g.producer.get(gate)
        inner = _divided_by_6(g, scale, x) if scale is not None and scale.op_type in ("Div", "Mul") else None
        if inner and g.single_use(inner):
            found = _relu6_of_x_plus_3(g, inner, x)
            if found:
                form = f"x*(relu6(x+3){'/6' if scale.op_type == 'Div' else '*(1/6)'})"
                return _Match(x, (*found[1], scale, tail), form)
        sigmoid = g.made_by(gate, "HardSigmoid")
        if hardswish_op and sigmoid is not None and list(sigmoid.input) == [x]:
            attributes = {a.name: a.f for a in sigmoid.attribute}
            if set(attributes) == {"alpha", "beta"} and _close(attributes["alpha"], ALPHA) \
                    and _close(attributes["beta"], BETA):
                return _Match(x, (sigmoid, tail), "x*HardSigmoid(x)")
    return None


def default_opset(model: Any) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fuse_hardswish(model: Any) -> tuple[Any, FusionReport]:
    """A copy of `model` (an ``onnx.ModelProto``) with every provably exact decomposed HardSwish of its main graph
    replaced by ``HardSwish`` (opset >= 14) or ``Mul(x, HardSigmoid(x))`` (older opsets), and what was done.

    The input is not modified. Constants the removed nodes used are dropped when nothing else reads them."""
    import onnx
    from onnx import helper

    result = onnx.ModelProto()
    result.CopyFrom(model)
    opset = default_opset(result)
    report = FusionReport(emitted="HardSwish" if opset >= HARDSWISH_OPSET else "Mul(x, HardSigmoid(x))")
    if opset < HARDSIGMOID_OPSET:
        return result, report
    g = _Graph(result)
    matches: list[_Match] = []
    taken: set[int] = set()
    for node in result.graph.node:
        if node.op_type not in ("Div", "Mul"):
            continue
        found = _match(g, node, opset >= HARDSWISH_OPSET)
        if found and not taken.intersection(id(n) for n in found.nodes):
            matches.append(found)
            taken.update(id(n) for n in found.nodes)
    if not matches:
        return result, report
    graph = result.graph
    names = ({n.name for n in graph.node} | {t for n in graph.node for t in n.output} | {i.name for i in graph.input}
             | {i.name for i in graph.initializer} | {i.name for i in graph.value_info})
    replacement: dict[int, list[Any]] = {}
    removed: list[Any] = []
    for match in matches:
        tail = match.nodes[-1]
        stem = _unique(f"{tail.name or tail.output[0]}_hardswish", names)
        if opset >= HARDSWISH_OPSET:
            new = [helper.make_node("HardSwish", [match.x], [tail.output[0]], name=stem)]
        else:
            gate = _unique(f"{stem}_gate", names)
            new = [helper.make_node("HardSigmoid", [match.x], [gate], name=gate, alpha=ALPHA, beta=BETA),
                   helper.make_node("Mul", [match.x, gate], [tail.output[0]], name=stem)]
        replacement[id(tail)] = new
        removed.extend(match.nodes)
        report.rewritten[match.form] += 1
    gone = {id(n) for n in removed}
    kept: list[Any] = []
    for node in result.graph.node:
        kept.extend(replacement.get(id(node), [] if id(node) in gone else [node]))
    _drop_orphaned_constants(result.graph, kept, removed)
    dead = {out for node in removed for out in node.output} - {m.nodes[-1].output[0] for m in matches}
    live_info = [info for info in result.graph.value_info if info.name not in dead]
    del result.graph.value_info[:]
    result.graph.value_info.extend(live_info)
    return result, report


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate


def _drop_orphaned_constants(graph: Any, kept: list[Any], removed: list[Any]) -> None:
    """Set `kept` as the graph's nodes, without the Constant nodes and initialisers that only `removed` read."""
    read = {name for node in kept for name in node.input} | {out.name for out in graph.output}
    for node in kept:
        read |= _subgraph_inputs(node)
    inputs = {inp.name for inp in graph.input}
    orphans = {name for node in removed for name in node.input} - read - inputs
    nodes = [node for node in kept if not (node.op_type == "Constant" and node.output[0] in orphans)]
    del graph.node[:]
    graph.node.extend(nodes)
    initialisers = [init for init in graph.initializer if init.name not in orphans]
    del graph.initializer[:]
    graph.initializer.extend(initialisers)


def fold_scalar_affine(model: Any) -> tuple[Any, int]:
    """A copy of `model` with each ``Conv -> Mul(s) [-> Add(t)]`` whose `s` and `t` are one-element float32
    constants folded into the convolution (weights times s, bias times s plus t), and how many were folded.

    Why: PP-OCRv4's LearnableAffineBlock follows its convolutions with a scalar scale and shift; ONNX Runtime
    fuses neither into the Conv (its Conv+Mul fusion wants a per-channel constant), so each is one more pass over
    the tensor, and in int8 two fp32 ops between the quantised convolutions. Folded only where exact up to
    float32 rounding: the weight and bias are constants read by this Conv alone, the Conv's output and the
    Mul's are read once and are not graph outputs, and the constants broadcast without changing the shape."""
    import onnx
    from onnx import numpy_helper

    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    g = _Graph(result)
    # where each constant's tensor lives: an initialiser, or the value of a Constant node (paddle2onnx's weights)
    tensors = {init.name: init for init in graph.initializer if init.name in g.constants}
    tensors.update({name: node.attribute[0].t for name, node in g.producer.items()
                    if node.op_type == "Constant" and name in g.constants})
    names = {n.name for n in graph.node} | {t for n in graph.node for t in n.output} | set(tensors) \
        | {i.name for i in graph.input}
    removed: list[Any] = []
    for conv in graph.node:
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 2:
            continue
        weight, bias = conv.input[1], conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        if weight not in tensors or g.consumers[weight] != 1 or (bias and (bias not in tensors
                                                                            or g.consumers[bias] != 1)):
            continue
        chain = _affine_after(g, conv.output[0], len(tensors[weight].dims))  # before any weight is decoded
        if chain is None:
            continue
        w = g.constants[weight]
        if w.dtype != np.float32 or (bias and g.constants[bias].dtype != np.float32):
            continue
        scale, shift, nodes = chain
        b = g.constants[bias] if bias else np.zeros(w.shape[0], dtype=np.float32)
        tensors[weight].CopyFrom(numpy_helper.from_array((w * np.float32(scale)).astype(np.float32), weight))
        new_bias = (b * np.float32(scale) + np.float32(shift)).astype(np.float32)
        if bias:
            tensors[bias].CopyFrom(numpy_helper.from_array(new_bias, bias))
        elif shift != 0.0:
            name = _unique(f"{conv.name or weight}_folded_bias", names)
            graph.initializer.append(numpy_helper.from_array(new_bias, name))
            del conv.input[2:]
            conv.input.append(name)
        conv.output[0] = nodes[-1].output[0]
        removed.extend(nodes)
    if removed:
        gone = {id(node) for node in removed}
        _drop_orphaned_constants(graph, [node for node in graph.node if id(node) not in gone], removed)
        dead = {t for node in removed for t in node.input}
        live = [info for info in graph.value_info if info.name not in dead]
        del graph.value_info[:]
        graph.value_info.extend(live)
    return result, sum(node.op_type == "Mul" for node in removed)


def _affine_after(g: _Graph, name: str, rank: int) -> tuple[float, float, list[Any]] | None:
    """(s, t, [Mul, Add]) or (s, 0, [Mul]) when tensor `name` is read only by Mul(name, s) [then Add(., t)]."""
    users = g.users.get(name, [])
    if not g.single_use(name) or len(users) != 1:
        return None
    mul = users[0]
    if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.input) != 2 or len(mul.output) != 1:
        return None
    other = mul.input[1] if mul.input[0] == name else mul.input[0]
    scale = g.scalar_value(other, rank) if other != name else None
    if scale is None:
        return None
    after = g.users.get(mul.output[0], [])
    if g.single_use(mul.output[0]) and len(after) == 1 and after[0].op_type == "Add" \
            and after[0].domain in ("", "ai.onnx") and len(after[0].input) == 2 and len(after[0].output) == 1:
        add = after[0]
        shift = g.scalar_value(add.input[1] if add.input[0] == mul.output[0] else add.input[0], rank)
        if shift is not None:
            return scale, shift, [mul, add]
    return scale, 0.0, [mul]
