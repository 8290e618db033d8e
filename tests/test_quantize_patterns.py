"""int8 builds on the graph patterns real CNNs have and that ONNX Runtime used to refuse after quantisation.

Each small model reproduces patterns of the real models of the corpus (paddle2onnx OCR models, YOLO-style
detectors, MobileNetV3 classifiers): opset 11 (per-channel DequantizeLinear's `axis` needs 13), a Conv whose
bias is a separate Add of a reshaped initialiser, Conv+BatchNormalization, depthwise convolutions, Sigmoid and
HardSwish activations, a Resize+Concat head, a weight shared by two convolutions, and a MatMul head. Every
variant the search may pick must give a model ONNX Runtime loads and that stays close to fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtpick import quantize, quantize_search, quantize_variants
from rtpick.quantize import Variant, quantize_int8
from rtpick.sources import load_model as load_source

pytest.importorskip("onnxruntime")


def _pattern_model(folder: Path, opset: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("w0", 16, 3, 3, 3), init("b0", 16),  # Conv with a separate Add bias, reshaped to [1,16,1,1]
        numpy_helper.from_array(np.array([1, 16, 1, 1], np.int64), "bias_shape"),
        init("bn_scale", 16, scale=0.1), init("bn_bias", 16), init("bn_mean", 16),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn_var"),
        init("wdw", 16, 1, 3, 3), init("bdw", 16),  # depthwise
        init("wshared", 16, 16, 1, 1), init("bshared", 16),  # one weight used by two convolutions
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        init("wm", 32, 10), init("bm", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv0"),
        helper.make_node("Reshape", ["b0", "bias_shape"], ["b0r"], name="bias_reshape"),
        helper.make_node("Add", ["c0", "b0r"], ["a0"], name="bias_add"),
        helper.make_node("BatchNormalization", ["a0", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"],
                         name="bn"),
        helper.make_node("HardSigmoid", ["bn"], ["hs"], alpha=1 / 6, beta=0.5, name="hardsigmoid"),
        helper.make_node("Mul", ["bn", "hs"], ["hswish"], name="hardswish_mul"),  # HardSwish as paddle writes it
        helper.make_node("Conv", ["hswish", "wdw", "bdw"], ["dw"], group=16, pads=[1, 1, 1, 1], name="depthwise"),
        helper.make_node("Sigmoid", ["dw"], ["sg"], name="sigmoid"),
        helper.make_node("Mul", ["dw", "sg"], ["silu"], name="silu"),
        helper.make_node("Conv", ["silu", "wshared", "bshared"], ["p1"], name="shared_a"),
        helper.make_node("Relu", ["p1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "wshared", "bshared"], ["p2"], name="shared_b"),
        helper.make_node("Resize", ["p2", "roi", "scales"], ["up"], mode="nearest", name="resize"),
        helper.make_node("MaxPool", ["up"], ["down"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Concat", ["down", "r1"], ["cat"], axis=1, name="concat"),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["logits"], name="head_bias"),
    ]
    graph = helper.make_graph(nodes, "patterns",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = folder / f"patterns-opset{opset}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module", params=[11, 17])
def patterns(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pattern_model(tmp_path_factory.mktemp("patterns"), request.param)


def _variants() -> list[Variant]:
    vnni = quantize_search.candidates({"vnni": True}, {"Conv": 1, "MatMul": 4})  # every variant, dynamic too
    no_vnni = quantize_search.candidates({"vnni": False}, {"Conv": 1})
    return [quantize.RECIPES["ort"], quantize.RECIPES["tensorrt"], *vnni, no_vnni[0]]


def test_every_variant_builds_and_stays_close_to_fp32(patterns: Path) -> None:
    import onnxruntime as ort

    model = load_source(str(patterns))
    shapes = {"x": (2, 3, 32, 32)}
    feeds = {"x": np.random.default_rng(7).random((2, 3, 32, 32), dtype=np.float32)}
    reference = ort.InferenceSession(str(patterns), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    for variant in _variants():
        path, note = quantize_int8(model, shapes, None, 4, variant=variant)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # refused before the fix
        out = session.run(None, feeds)[0]
        assert np.isfinite(out).all(), variant.name
        cosine = float(np.dot(out.ravel(), reference.ravel()) / np.linalg.norm(out) / np.linalg.norm(reference))
        assert cosine > 0.98, (variant.name, cosine)
        assert "synthetic" in note


def test_node_report_says_what_is_int8_and_why_not(patterns: Path) -> None:
    model = load_source(str(patterns))
    skip_dw = next(v for v in _variants() if v.skip_depthwise and v.fmt == "qoperator")
    path, _ = quantize_int8(model, {"x": (1, 3, 32, 32)}, None, 4, variant=skip_dw)
    report = quantize_search.node_report(path)
    assert len(report["quantised"]) >= 4  # conv0 (bias fused), both shared convs, the MatMul
    assert any("depthwise" in why for why in report["fp32"].values())
    assert "Sigmoid" in report["other_ops_fp32"] and "Conv, MatMul, Gemm" in report["why"]


def test_node_report_counts_the_other_ops_an_all_op_variant_runs_in_int8(patterns: Path) -> None:
    """The all-op variants (first in the search's order) put the ops between convolutions in int8 too, so that
    the Q/DQ pairs around them vanish; the report says which op types ended up int8 and which stayed fp32."""
    model = load_source(str(patterns))
    for variant in [v for v in _variants() if not v.ops]:
        path, _ = quantize_int8(model, {"x": (1, 3, 32, 32)}, None, 4, variant=variant)
        report = quantize_search.node_report(path)
        assert report["quantised"] and report["other_ops_int8"], variant.name
        assert "HardSigmoid" not in report["other_ops_int8"]  # no int8 kernel: fp32 even between DQ and Q
        assert {"Concat", "MaxPool"} & set(report["other_ops_int8"]) or \
            {"QLinearConcat"} & set(report["other_ops_int8"]), (variant.name, report["other_ops_int8"])


def test_scratch_files_never_land_in_the_current_directory(patterns: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` (+ a data file) into the
    current directory when it gives up; a user's file of that name must survive and the cwd must come back."""
    from onnxruntime.tools import symbolic_shape_infer

    def gives_up(model: object, *args: object, **kwargs: object) -> None:
        Path("sym_shape_infer_temp.onnx").write_bytes(b"scratch")
        Path("0123-uuid.data").write_bytes(b"scratch")
        raise RuntimeError("Incomplete symbolic shape inference")

    monkeypatch.setattr(symbolic_shape_infer.SymbolicShapeInference, "infer_shapes", staticmethod(gives_up))
    users = tmp_path / "sym_shape_infer_temp.onnx"
    users.write_bytes(b"the user's own file")
    monkeypatch.chdir(tmp_path)
    model = load_source(str(patterns))
    path, _ = quantize_int8(model, {"x": (1, 3, 32, 32)}, None, 2, variant=Variant("scratch-test", "qdq", "u8"))
    assert path.exists()
    assert users.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sym_shape_infer_temp.onnx"]
    assert Path.cwd() == tmp_path


def test_bert_like_encoder_gets_dynamic_int8_that_stays_close(tmp_path: Path) -> None:
    """A small BERT-like encoder exported from torch: MatMul-heavy, so the search offers dynamic int8 (no
    calibration), which must build and keep the class scores."""
    pytest.importorskip("torch")
    import sys

    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cpu_int8 import bert_like

    path = bert_like(tmp_path, width=64, layers=2, sequence=16)
    model = load_source(str(path))
    variants = quantize_search.candidates({"vnni": True}, quantize_variants.op_counts(path))
    dynamic = [v for v in variants if v.fmt == "dynamic"]
    assert dynamic
    ids = {"ids": np.random.default_rng(0).integers(0, 100, (8, 16)).astype(np.int64)}
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    quantised, _ = quantize_int8(model, {"ids": (8, 16)}, None, 4, variant=dynamic[0])
    assert quantize_search.node_report(quantised)["quantised"]
    out = ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    assert quantize_search.accuracy_problem([reference], [out]) == ""
