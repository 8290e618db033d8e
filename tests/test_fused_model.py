"""rtpick.fused_model: ort-cpu:fp32 runs a verified cached copy with the decomposed HardSwish fused, the user's
file stays as it was, and a copy that does not match (or gives NaN) is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rtpick
from rtpick import fused_model
from rtpick.files import file_sha256, read_json
from rtpick.sources import load_model


def paddle_style(path: Path, decomposed: bool = True) -> Path:
    """input [batch, 8, 16, 16] -> Conv 3x3 -> x*relu6(x+3)/6 (or Relu) -> Conv 1x1 -> output, opset 12."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["x"], pads=[1, 1, 1, 1])]
    if decomposed:
        for name, value in (("three", 3.0), ("zero", 0.0), ("six", 6.0)):
            nodes.append(helper.make_node("Constant", [], [name],
                                          value=numpy_helper.from_array(np.array(value, dtype=np.float32))))
        nodes += [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["r"]),
                  helper.make_node("Mul", ["x", "r"], ["m"]), helper.make_node("Div", ["m", "six"], ["h"])]
    else:
        nodes.append(helper.make_node("Relu", ["x"], ["h"]))
    nodes.append(helper.make_node("Conv", ["h", "w2"], ["output"]))
    graph = helper.make_graph(nodes, "paddle_style",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def given_outputs(path: Path, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": feed})[0]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fp32_runs_a_verified_fused_copy_and_the_given_file_is_unchanged(tmp_path: Path, cache: Path) -> None:
    path = paddle_style(tmp_path / "model.onnx")
    before = file_sha256(path)
    feed = np.random.default_rng(0).uniform(-3, 3, size=(2, 8, 16, 16)).astype(np.float32)
    with rtpick.load(str(path), "ort-cpu", "fp32", shapes={"input": (2, 8, 16, 16)}) as session:
        (note,) = session.info.notes
        out = session.run({"input": feed})["output"]
    assert note.startswith("fp32 runs a cached copy with 1 decomposed HardSwish (1 x*relu6(x+3)/6) fused as "
                           "Mul(x, HardSigmoid(x)), equal to the given model within fp32 tolerance on 2 random inputs")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, given_outputs(path, feed), rtol=1e-4, atol=1e-4)
    assert file_sha256(path) == before
    (copy,) = (cache / "onnx").glob("*-fp32-*.onnx")
    assert [n.op_type for n in onnx.load(str(copy)).graph.node] == ["Conv", "HardSigmoid", "Mul", "Conv"]
    assert read_json(copy.with_suffix(".json"), "record")["status"] == "verified"
    assert fused_model.fp32_model(load_model(str(path)))[0] == copy  # later builds reuse it, shapes or not


def test_graph_optimisation_disabled_runs_the_model_as_given(tmp_path: Path, cache: Path) -> None:
    path = paddle_style(tmp_path / "model.onnx")
    with rtpick.load(str(path), "ort-cpu", "fp32", graph_optimization="disable") as session:
        assert session.info.notes == []
    assert not (cache / "onnx").exists() or not list((cache / "onnx").glob("*-fp32-*"))


def test_nothing_to_rewrite_runs_the_given_file_without_a_note(tmp_path: Path, cache: Path) -> None:
    path = paddle_style(tmp_path / "relu.onnx", decomposed=False)
    model = load_model(str(path))
    assert fused_model.fp32_model(model, {"input": (1, 8, 16, 16)}) == (model.onnx_path(), "")
    (record,) = (cache / "onnx").glob("*-fp32-*.json")
    assert read_json(record, "record")["status"] == "unchanged"


def test_a_copy_whose_outputs_differ_is_refused_and_remembered(tmp_path: Path, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = paddle_style(tmp_path / "model.onnx")
    monkeypatch.setattr(fused_model, "_compare", lambda reference, candidate: ("max abs error 1 > 1e-4", 1.0))
    model = load_model(str(path))
    chosen, note = fused_model.fp32_model(model, {"input": (1, 8, 16, 16)})
    assert chosen == model.onnx_path()
    assert "the copy was refused (output 0 on a random input: max abs error 1 > 1e-4)" in note
    monkeypatch.undo()
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(cache))
    assert fused_model.fp32_model(model, {"input": (1, 8, 16, 16)}) == (model.onnx_path(), note)  # remembered


def test_unresolved_shapes_use_the_given_file_and_say_why(tmp_path: Path, cache: Path) -> None:
    path = paddle_style(tmp_path / "model.onnx")
    proto = onnx.load(str(path))  # make the spatial dims symbolic too: batch 1 alone does not make shapes concrete
    for dim, name in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.dim_param = name
    onnx.save(proto, str(path))
    model = load_model(str(path))
    chosen, note = fused_model.fp32_model(model)
    assert chosen == model.onnx_path() and "verified at concrete input shapes first (give shapes)" in note
    chosen, _ = fused_model.fp32_model(model, {"input": (1, 8, 16, 16)})  # not remembered as a refusal
    assert chosen != model.onnx_path()


@pytest.mark.parametrize("candidate", [np.array([1.0, np.nan]), np.array([1.0, np.inf])])
def test_nan_or_inf_never_passes(candidate: np.ndarray) -> None:
    assert fused_model._compare(np.array([1.0, 2.0]), candidate)[0] == "NaN or Inf in an output"
    assert fused_model._compare(candidate, candidate)[0] == "NaN or Inf in an output"  # not even when both agree
    assert fused_model._compare(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-6])) == ("", pytest.approx(1e-6))
