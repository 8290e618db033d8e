"""Integer inputs that index a constant table get synthetic values below its size (BERT's token_type_ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import rtpick
from rtpick.data import synthetic_feeds
from rtpick.index_limits import index_limits
from rtpick.sources import load_model


def _bert_like(path: Path) -> Path:
    """input_ids -> Gather(1000 x 8), token_type_ids -> Cast -> Gather(2 x 8), mask -> Unsqueeze (no table)."""
    words = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32), "words")
    types = numpy_helper.from_array(np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32), "types")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Gather", ["words", "input_ids"], ["w"]),
             helper.make_node("Cast", ["token_type_ids"], ["tt"], to=TensorProto.INT32),
             helper.make_node("Gather", ["types", "tt"], ["t"]),
             helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m"]),
             helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["w", "t"], ["s"]), helper.make_node("Mul", ["s", "mf"], ["y"])]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ("input_ids", "token_type_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "bert_like", ids,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])],
                              [words, types, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tables_are_found_through_value_keeping_ops(tmp_path: Path) -> None:
    path = _bert_like(tmp_path / "bert.onnx")
    assert index_limits(onnx.load(str(path)).graph) == {"input_ids": 1000, "token_type_ids": 2}
    spec = load_model(str(path)).spec
    limits = {t.name: t.index_limit for t in spec.inputs}
    assert limits == {"input_ids": 1000, "token_type_ids": 2, "attention_mask": None}
    feeds = synthetic_feeds(spec.inputs, {t.name: (4, 16) for t in spec.inputs}, seed=0)
    assert feeds["token_type_ids"].max() <= 1 and feeds["input_ids"].max() < 100 and feeds["input_ids"].max() > 2


def test_such_a_model_runs_on_rtpicks_synthetic_feeds(tmp_path: Path) -> None:
    """Before, token_type_ids in [0, 100) made ONNX Runtime fail the run (and serve's warm-up)."""
    path = _bert_like(tmp_path / "bert.onnx")
    model = load_model(str(path))
    shapes = {t.name: (2, 5) for t in model.spec.inputs}
    with rtpick.load(model, "ort-cpu", "fp32", shapes=shapes) as session:
        out = session.run(synthetic_feeds(model.spec.inputs, shapes, seed=3))["y"]
    assert out.shape == (2, 5, 8) and np.isfinite(out).all()
