"""A model with a symbolic dim loads on ort-cpu without shapes: the feeds bring the sizes at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import rtpick
from rtpick.errors import RtpickError


def _sequence_model(path: Path) -> Path:
    """Like the onnx backend test data's test_sequence_model8: X float[n] split by Splits into a sequence,
    whose length is the output (a 1-D symbolic input: no batch axis to default to 1)."""
    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["X", "Splits"], ["seq"]),
         helper.make_node("SequenceLength", ["seq"], ["len"])],
        "sequence",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("Splits", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("len", TensorProto.INT64, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_symbolic_dim_from_the_feeds(tmp_path) -> None:
    path = _sequence_model(tmp_path / "seq.onnx")
    with rtpick.load(str(path), "ort-cpu") as session:
        for n in (6, 11):
            out = session.run({"X": np.arange(n, dtype=np.float32), "Splits": np.array([1, 2, n - 3], np.int64)})
            assert int(out["len"]) == 3


def test_the_onnx_backend_case_itself() -> None:
    from onnx import numpy_helper

    folder = Path(onnx.__file__).parent / "backend/test/data/simple/test_sequence_model8"
    if not (folder / "model.onnx").is_file():
        pytest.skip("this onnx wheel ships no backend test data")
    data = folder / "test_data_set_0"
    feeds = {}
    for index, name in enumerate(("X", "Splits")):
        feeds[name] = numpy_helper.to_array(onnx.load_tensor(str(data / f"input_{index}.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(data / "output_0.pb")))
    with rtpick.load(str(folder / "model.onnx"), "ort-cpu") as session:
        assert np.array_equal(session.run(feeds)["len"], expected)


def test_runtimes_that_need_shapes_still_say_so(tmp_path) -> None:
    path = _sequence_model(tmp_path / "seq.onnx")
    with pytest.raises(RtpickError, match="symbolic dim 'n'"):
        rtpick.load(str(path), "ort-cpu", "int8")  # calibration needs concrete shapes
