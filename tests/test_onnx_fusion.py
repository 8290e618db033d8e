"""rtpick.onnx_fusion: each decomposed HardSwish spelling becomes the fused form with the same outputs; anything
that is not provably the same function (an extra consumer, a wrong constant, a graph output inside) is left."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtpick.onnx_fusion import fuse_hardswish

SHAPE = [1, 4, 8, 8]
Builder = Callable[[list[Any], list[Any]], str]  # (nodes, initialisers) -> the activation's output name


def _const(inits: list[Any], name: str, value: float, shape: tuple[int, ...] = ()) -> str:
    inits.append(numpy_helper.from_array(np.full(shape, value, dtype=np.float32), name))
    return name


def relu6_plus3(nodes: list[Any], inits: list[Any], x: str = "x", three: float = 3.0, six: float = 6.0,
                shape: tuple[int, ...] = ()) -> str:
    nodes.append(helper.make_node("Add", [_const(inits, "three", three, shape), x], ["a"]))
    nodes.append(helper.make_node("Clip", ["a", _const(inits, "zero", 0.0), _const(inits, "six", six)], ["r"]))
    return "r"


def div_after_mul(nodes: list[Any], inits: list[Any]) -> str:  # paddle2onnx: x * relu6(x + 3) / 6
    nodes.append(helper.make_node("Mul", ["x", relu6_plus3(nodes, inits)], ["m"]))
    nodes.append(helper.make_node("Div", ["m", "six"], ["h"]))
    return "h"


def sixth_after_mul(nodes: list[Any], inits: list[Any]) -> str:  # (relu6(x + 3) * x) * (1/6), operands swapped
    nodes.append(helper.make_node("Mul", [relu6_plus3(nodes, inits), "x"], ["m"]))
    nodes.append(helper.make_node("Mul", [_const(inits, "sixth", 1 / 6), "m"], ["h"]))
    return "h"


def div_before_mul(nodes: list[Any], inits: list[Any]) -> str:  # x * (relu6(x + 3) / 6), constants of shape (1,)
    nodes.append(helper.make_node("Add", ["x", _const(inits, "three", 3.0, (1,))], ["a"]))
    nodes.append(helper.make_node("Clip", ["a", _const(inits, "zero", 0.0), _const(inits, "six", 6.0)], ["r"]))
    nodes.append(helper.make_node("Div", ["r", _const(inits, "six1", 6.0, (1,))], ["g"]))
    nodes.append(helper.make_node("Mul", ["x", "g"], ["h"]))
    return "h"


def sixth_before_mul_with_constant_nodes(nodes: list[Any], inits: list[Any]) -> str:
    """x * (relu6(x + 3) * (1/6)), the constants as Constant nodes and Clip's bounds from them (paddle2onnx)."""
    for name, value in (("c3", 3.0), ("c0", 0.0), ("c6", 6.0), ("c16", 1 / 6)):
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.array(value, dtype=np.float32))))
    nodes += [helper.make_node("Add", ["x", "c3"], ["a"]), helper.make_node("Clip", ["a", "c0", "c6"], ["r"]),
              helper.make_node("Mul", ["r", "c16"], ["g"]), helper.make_node("Mul", ["g", "x"], ["h"])]
    return "h"


def clip_attributes(nodes: list[Any], inits: list[Any]) -> str:  # opset < 11: Clip's bounds as attributes
    nodes.append(helper.make_node("Add", ["x", _const(inits, "three", 3.0)], ["a"]))
    nodes.append(helper.make_node("Clip", ["a"], ["r"], min=0.0, max=6.0))
    nodes.append(helper.make_node("Mul", ["x", "r"], ["m"]))
    nodes.append(helper.make_node("Div", ["m", _const(inits, "six", 6.0)], ["h"]))
    return "h"


def hard_sigmoid(nodes: list[Any], inits: list[Any]) -> str:  # x * HardSigmoid(x), paddle's alpha 0.1666667014
    nodes.append(helper.make_node("HardSigmoid", ["x"], ["g"], alpha=0.16666670143604279, beta=0.5))
    nodes.append(helper.make_node("Mul", ["g", "x"], ["h"]))
    return "h"


def model_of(build: Builder, opset: int, extra_output: str | None = None) -> onnx.ModelProto:
    """x -> Conv 1x1 -> activation -> Relu -> y; `extra_output` also makes that tensor a graph output."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["x"])]
    out = build(nodes, inits)
    nodes.append(helper.make_node("Relu", [out], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, SHAPE))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, SHAPE)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, feed: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": feed})


def feeds() -> list[np.ndarray]:
    """Inputs whose activations cover every piece of HardSwish: below -3, between, above 3, and exactly +-3."""
    rng = np.random.default_rng(1)
    wide = rng.uniform(-12.0, 12.0, size=SHAPE).astype(np.float32)
    edges = np.resize(np.array([-3, 3, 0, -6, 6, -2.5, 2.5], dtype=np.float32), SHAPE)
    return [wide, edges]


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("build", [div_after_mul, sixth_after_mul, div_before_mul,
                                   sixth_before_mul_with_constant_nodes])
@pytest.mark.parametrize("opset", [12, 14])
def test_each_spelling_is_fused_with_the_same_outputs(build: Builder, opset: int) -> None:
    model = model_of(build, opset)
    fused, report = fuse_hardswish(model)
    onnx.checker.check_model(fused, full_check=True)
    assert report.total == 1
    expected = ["Conv", "HardSwish", "Relu"] if opset >= 14 else ["Conv", "HardSigmoid", "Mul", "Relu"]
    assert ops(fused) == expected
    assert not {"Add", "Clip", "Div", "Constant"} & set(ops(fused))
    assert [i.name for i in fused.graph.initializer] == ["w"]  # the orphaned constants are gone
    assert fused.opset_import[0].version == opset  # never bumped
    assert ops(model)[-1] == "Relu" and "Clip" in ops(model)  # the input model is not modified
    for feed in feeds():
        reference, candidate = run(model, feed)[0], run(fused, feed)[0]
        assert np.isfinite(candidate).all()
        np.testing.assert_allclose(candidate, reference, rtol=1e-5, atol=1e-6)
        assert (reference > 0).any() and (reference == 0).any()  # both sides of the activation were exercised


def test_clip_with_attribute_bounds_at_opset_10() -> None:
    model = model_of(clip_attributes, 10)
    fused, report = fuse_hardswish(model)
    onnx.checker.check_model(fused)
    assert report.total == 1 and ops(fused) == ["Conv", "HardSigmoid", "Mul", "Relu"]
    np.testing.assert_allclose(run(fused, feeds()[0])[0], run(model, feeds()[0])[0], rtol=1e-5, atol=1e-6)


def test_hard_sigmoid_times_x_becomes_hardswish_only_where_the_opset_has_it() -> None:
    fused, report = fuse_hardswish(model_of(hard_sigmoid, 14))
    assert report.total == 1 and ops(fused) == ["Conv", "HardSwish", "Relu"]
    np.testing.assert_allclose(run(fused, feeds()[0])[0], run(model_of(hard_sigmoid, 14), feeds()[0])[0],
                               rtol=1e-5, atol=1e-6)
    unchanged, report = fuse_hardswish(model_of(hard_sigmoid, 13))  # already the fused form below opset 14
    assert report.total == 0 and ops(unchanged) == ["Conv", "HardSigmoid", "Mul", "Relu"]


def test_hard_sigmoid_with_other_alpha_is_not_hardswish() -> None:
    def gate(nodes: list[Any], inits: list[Any]) -> str:  # paddle's SE gate: HardSigmoid(alpha=0.2), not 1/6
        nodes.append(helper.make_node("HardSigmoid", ["x"], ["g"], alpha=0.2, beta=0.5))
        nodes.append(helper.make_node("Mul", ["x", "g"], ["h"]))
        return "h"

    assert fuse_hardswish(model_of(gate, 14))[1].total == 0


def _with_extra_consumer(nodes: list[Any], inits: list[Any]) -> str:
    out = div_after_mul(nodes, inits)
    nodes.append(helper.make_node("Add", [out, "r"], ["h2"]))  # the Clip's output read again
    return "h2"


def _wrong_three(nodes: list[Any], inits: list[Any]) -> str:
    nodes.append(helper.make_node("Mul", ["x", relu6_plus3(nodes, inits, three=3.01)], ["m"]))
    nodes.append(helper.make_node("Div", ["m", "six"], ["h"]))
    return "h"


def _wrong_divisor(nodes: list[Any], inits: list[Any]) -> str:
    nodes.append(helper.make_node("Mul", ["x", relu6_plus3(nodes, inits)], ["m"]))
    nodes.append(helper.make_node("Div", ["m", _const(inits, "five", 5.0)], ["h"]))
    return "h"


def _other_tensor_multiplied(nodes: list[Any], inits: list[Any]) -> str:  # y * relu6(x + 3) / 6, y != x
    nodes.append(helper.make_node("Relu", ["x"], ["y0"]))
    nodes.append(helper.make_node("Mul", ["y0", relu6_plus3(nodes, inits)], ["m"]))
    nodes.append(helper.make_node("Div", ["m", "six"], ["h"]))
    return "h"


def _broadcasting_constant(nodes: list[Any], inits: list[Any]) -> str:  # a (1,1,1,1,1) 3 makes the output 5-D
    nodes.append(helper.make_node("Mul", ["x", relu6_plus3(nodes, inits, shape=(1, 1, 1, 1, 1))], ["m"]))
    nodes.append(helper.make_node("Div", ["m", "six"], ["h"]))
    nodes.append(helper.make_node("Squeeze", ["h", _int64(inits, "axis0", [0])], ["h4"]))
    return "h4"


def _int64(inits: list[Any], name: str, values: list[int]) -> str:
    inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
    return name


@pytest.mark.parametrize("build", [_with_extra_consumer, _wrong_three, _wrong_divisor, _other_tensor_multiplied,
                                   _broadcasting_constant])
def test_what_is_not_provably_hardswish_is_left_alone(build: Builder) -> None:
    model = model_of(build, 14)
    fused, report = fuse_hardswish(model)
    assert report.total == 0
    assert ops(fused) == ops(model)


def test_an_intermediate_graph_output_blocks_the_rewrite() -> None:
    model = model_of(div_after_mul, 14, extra_output="m")  # the Mul's product is also a graph output
    assert fuse_hardswish(model)[1].total == 0


def test_a_constant_that_is_also_a_graph_input_is_not_a_constant() -> None:
    """An initialiser listed among the graph inputs is a default the caller may override at run time."""
    model = model_of(div_after_mul, 14)
    model.graph.input.append(helper.make_tensor_value_info("three", TensorProto.FLOAT, []))
    assert fuse_hardswish(model)[1].total == 0


def test_the_output_keeps_its_name_and_several_activations_share_an_input() -> None:
    def two(nodes: list[Any], inits: list[Any]) -> str:
        first = div_after_mul(nodes, inits)
        nodes += [helper.make_node("Add", ["x", "three"], ["a2"]), helper.make_node("Clip", ["a2", "zero", "six"],
                                                                                    ["r2"]),
                  helper.make_node("Mul", ["r2", "x"], ["m2"]), helper.make_node("Div", ["m2", "six"], ["h2"]),
                  helper.make_node("Add", [first, "h2"], ["both"])]
        return "both"

    model = model_of(two, 14)
    fused, report = fuse_hardswish(model)
    assert report.total == 2
    assert ops(fused) == ["Conv", "HardSwish", "HardSwish", "Add", "Relu"]
    assert [n.output[0] for n in fused.graph.node if n.op_type == "HardSwish"] == ["h", "h2"]
    np.testing.assert_allclose(run(fused, feeds()[0])[0], run(model, feeds()[0])[0], rtol=1e-5, atol=1e-6)
    assert report.describe() == "2 decomposed HardSwish (2 x*relu6(x+3)/6) fused as HardSwish"


def affine_model(scale_shape: tuple[int, ...] = (1,), bias: bool = True, weights_as_constants: bool = False,
                 shared_weight: bool = False, second_reader: bool = False, shift: bool = True) -> onnx.ModelProto:
    """input -> Conv -> Mul(s) -> Add(t) -> Relu -> y (PP-OCRv4's LearnableAffineBlock after a convolution)."""
    rng = np.random.default_rng(5)
    tensors = {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(4).astype(np.float32),
               "s": np.full(scale_shape, -1.7, dtype=np.float32), "t": np.full((1,), 0.4, dtype=np.float32)}
    nodes, inits = [], []
    for name, value in tensors.items():
        if weights_as_constants:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value)))
        else:
            inits.append(numpy_helper.from_array(value, name))
    nodes.append(helper.make_node("Conv", ["input", "w", "b"] if bias else ["input", "w"], ["c"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Mul", ["s", "c"], ["m"]))
    last = "m"
    if shift:
        nodes.append(helper.make_node("Add", ["m", "t"], ["a"]))
        last = "a"
    out = last
    if shared_weight:  # the weight read by a second Conv too: scaling it would change that one
        nodes += [helper.make_node("Conv", [last, "w"], ["c2"], pads=[1, 1, 1, 1])]
        out = "c2"
    if second_reader:  # the Conv's output read by something else too
        nodes += [helper.make_node("Add", [last, "c"], ["both"])]
        out = "both"
    nodes.append(helper.make_node("Relu", [out], ["y"]))
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("input", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("options", [{}, {"weights_as_constants": True}, {"bias": False}, {"shift": False},
                                     {"scale_shape": ()}, {"scale_shape": (1, 1, 1, 1)}])
def test_scalar_scale_and_shift_after_a_conv_fold_into_it(options: dict[str, Any]) -> None:
    from rtpick.onnx_fusion import fold_scalar_affine, fuse

    model = affine_model(**options)
    folded, count = fold_scalar_affine(model)
    onnx.checker.check_model(folded, full_check=True)
    assert count == 1
    assert [op for op in ops(folded) if op != "Constant"] == ["Conv", "Relu"]
    for feed in feeds():
        np.testing.assert_allclose(run(folded, feed)[0], run(model, feed)[0], rtol=1e-5, atol=1e-5)
    assert fuse(model)[1].describe() == "1 scalar scale/shift after a Conv folded into it"


@pytest.mark.parametrize("options", [{"shared_weight": True}, {"second_reader": True}, {"scale_shape": (4, 1, 1)},
                                     {"scale_shape": (1, 1, 1, 1, 1)}])
def test_what_a_fold_would_change_is_left_alone(options: dict[str, Any]) -> None:
    from rtpick.onnx_fusion import fold_scalar_affine

    model = affine_model(**options)
    folded, count = fold_scalar_affine(model)
    assert count == 0 and ops(folded) == ops(model)
