"""What a model is made of: inputs, outputs, parameters, operators, opset and a FLOP estimate.

The FLOP estimate counts the multiply-adds of Conv, ConvTranspose, Gemm and MatMul (2 FLOPs each) at the
shapes given (batch 1 by default), from ONNX shape inference. Element-wise work is left out and the estimate
says so: for CNNs and transformers these four operators are nearly all of the arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import RtpickError
from rtpick.model import Model, resolve_shapes
from rtpick.onnx_graphs import graphs, nodes

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class ModelSummary:
    """`rtpick inspect`'s answer as data."""

    spec: dict[str, Any]
    parameters: int
    operators: dict[str, int]
    opsets: dict[str, int]
    flops: int | None
    flops_shapes: dict[str, list[int]] = field(default_factory=dict)
    flops_note: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(model: Model, shapes: Mapping[str, tuple[int, ...]] | None = None) -> ModelSummary:
    import onnx

    path = model.onnx_path()
    proto = onnx.load(str(path))
    parameters = count_parameters(proto.graph)
    operators = Counter(node.op_type for node in nodes(proto.graph))
    opsets = {entry.domain or "ai.onnx": int(entry.version) for entry in proto.opset_import}
    flops, note, used = None, "", {}
    try:
        used = resolve_shapes(model.spec.inputs, shapes, batch=None)
        flops = estimate_flops(proto, used)
        note = f"multiply-adds of {', '.join(COUNTED_OPS)} x2, from ONNX shape inference"
    except RtpickError as exc:  # the user's to fix (an open dim): its one line says how
        note = f"not estimated: {exc}"
    except Exception as exc:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
        note = f"not estimated: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ModelSummary(
        spec=model.spec.to_dict(),
        parameters=parameters,
        operators=dict(operators.most_common()),
        opsets=opsets,
        flops=flops,
        flops_shapes={k: list(v) for k, v in used.items()},
        flops_note=note,
        notes=list(model.notes),
    )


def count_parameters(graph: Any) -> int:
    """Elements of every initializer and every floating-point ``Constant``, If/Loop/Scan bodies included.

    Why both: exporters also keep weights in ``Constant`` nodes and inside control-flow bodies (Silero VAD keeps
    all of its weights in the branches of ``If`` nodes, one per sample rate), where a count of the main graph's
    initializers says 0. Integer constants are left out (shapes, axes, indices), and so are float scalars (an
    epsilon, HardSwish's 3 and 6): neither is a weight.
    """
    import numpy as np
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    total = 0
    for each in graphs(graph):
        total += sum(int(np.prod(init.dims)) for init in each.initializer)
        for node in each.node:
            for attr in node.attribute:
                size = int(np.prod(attr.t.dims)) if attr.HasField("t") else 0
                if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type in floats and size > 1:
                    total += size
    return total


def estimate_flops(proto: Any, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """FLOPs of the counted operators with the inputs fixed to `shapes`."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    known: dict[str, tuple[int, ...]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            known[value.name] = tuple(int(d.dim_value) for d in dims)
    for init in inferred.graph.initializer:
        known[init.name] = tuple(int(d) for d in init.dims)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        total += _node_flops(node, known)
    return total


def _node_flops(node: Any, known: Mapping[str, tuple[int, ...]]) -> int:
    def shape(name: str) -> tuple[int, ...]:
        if name not in known:
            raise ValueError(f"shape of {name!r} ({node.op_type}) is unknown")
        return known[name]

    if node.op_type in ("Conv", "ConvTranspose"):
        weight = shape(node.input[1])
        if node.op_type == "Conv":
            out = shape(node.output[0])
            per_output = 1
            for size in weight[1:]:
                per_output *= size  # (Cin / groups) x kernel
            count = 1
            for size in out:
                count *= size
            return 2 * count * per_output
        inp = shape(node.input[0])
        count = 1
        for size in inp:
            count *= size
        per_input = 1
        for size in weight[1:]:
            per_input *= size  # (Cout / groups) x kernel
        return 2 * count * per_input
    a, b = shape(node.input[0]), shape(node.input[1])
    if node.op_type == "Gemm":
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
        trans_b = any(attr.name == "transB" and attr.i for attr in node.attribute)
        n = b[0] if trans_b else b[1]
        return 2 * m * n * k
    out = shape(node.output[0])
    k = a[-1]
    count = 1
    for size in out:
        count *= size
    return 2 * count * k
