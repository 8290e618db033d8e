"""FLOP estimates on hand-checkable graphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtpick.model import Model
from rtpick.sources import onnx_spec
from rtpick.summary import estimate_flops, summarize


def test_conv_and_gemm_flops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    w = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((16, 10), np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [w, fc])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    conv = 2 * (2 * 16 * 8 * 8) * (3 * 3 * 3)
    gemm = 2 * 2 * 10 * 16
    assert estimate_flops(proto, {"x": (2, 3, 8, 8)}) == conv + gemm
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    summary = summarize(Model(spec=onnx_spec(path), onnx_file=path), {"x": (2, 3, 8, 8)})
    assert summary.flops == conv + gemm
    assert summary.parameters == 16 * 27 + 160
    assert summary.operators == {"Conv": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}


def test_parameters_in_constants_and_if_branches_are_counted() -> None:
    """Weights kept in Constant nodes inside If branches (as Silero VAD keeps its per-sample-rate weights) count;
    integer constants and float scalars (shapes, epsilons) do not."""
    from rtpick.summary import count_parameters

    def branch(name: str, rows: int) -> onnx.GraphProto:
        weight = helper.make_node("Constant", [], [f"{name}_w"],
                                  value=numpy_helper.from_array(np.ones((rows, 4), np.float32)))
        shape = helper.make_node("Constant", [], [f"{name}_s"], value=numpy_helper.from_array(np.array([1, 4])))
        eps = helper.make_node("Constant", [], [f"{name}_e"], value=numpy_helper.from_array(np.float32(1e-5)))
        out = helper.make_node("Identity", [f"{name}_w"], [f"{name}_y"])
        return helper.make_graph([weight, shape, eps, out], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("a", 3), else_branch=branch("b", 5))
    bias = numpy_helper.from_array(np.zeros(7, np.float32), "bias")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [bias])
    assert count_parameters(graph) == 7 + 3 * 4 + 5 * 4
