"""Fuzz: a few hundred mutated ONNX files through what `rtpick inspect` and `rtpick run` call, in this process.

Every case must end in a result or an `RtpickError` (the one line the CLI prints), never another exception:
bytes flipped, files cut short, and protobuf fields changed with onnx.helper (element types, dims, opsets,
operator names, dangling inputs, missing outputs, initializers whose data does not match their dims). Seeded,
so a failure names a case that can be replayed.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtpick.errors import RtpickError

SEED = 12
CASES_PER_KIND = 60


def _base() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
        helper.make_node("Softmax", ["y"], ["p"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 4])],
        [w1, b1, w2, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _cut(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def _proto(rng: random.Random) -> bytes:
    """One or two field-level mutations of the valid model."""
    model = copy.deepcopy(_base())
    graph = model.graph
    for _ in range(rng.randint(1, 2)):
        choice = rng.randrange(12)
        if choice == 0:
            graph.input[0].type.tensor_type.elem_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 40])
        elif choice == 1:
            dim = graph.input[0].type.tensor_type.shape.dim[rng.randrange(2)]
            dim.dim_value = rng.choice([0, 1, 3, 7, 1 << 20, (1 << 62)])
        elif choice == 2:
            graph.node[rng.randrange(len(graph.node))].op_type = rng.choice(["Conv", "Nope", "", "MatMul", "Gemm"])
        elif choice == 3:
            model.opset_import[0].version = rng.choice([1, 6, 13, 99, 0])
        elif choice == 4:
            model.ir_version = rng.choice([0, 1, 3, 99])
        elif choice == 5:
            node = graph.node[rng.randrange(len(graph.node))]
            node.input[rng.randrange(len(node.input))] = rng.choice(["missing", "", "x", "p"])
        elif choice == 6:
            del graph.output[:]
        elif choice == 7:
            init = graph.initializer[rng.randrange(len(graph.initializer))]
            init.dims[:] = [rng.choice([1, 2, 3, 100])]
        elif choice == 8:
            init = graph.initializer[rng.randrange(len(graph.initializer))]
            init.raw_data = init.raw_data[: len(init.raw_data) // 2]
        elif choice == 9:
            graph.output[0].type.tensor_type.elem_type = rng.choice([0, 7, 13])
        elif choice == 10:
            graph.input.append(copy.deepcopy(graph.input[0]))  # a duplicate input name
        else:
            graph.node[-1].attribute[0].i = rng.choice([5, -9, 1 << 40])
    return model.SerializeToString()


def _cases() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    valid = _base().SerializeToString()
    kinds: dict[str, Callable[[random.Random], bytes]] = {
        "flip": lambda r: _flip(valid, r), "cut": lambda r: _cut(valid, r), "proto": _proto,
    }
    cases = [(f"{kind}-{i}", make(rng)) for kind, make in kinds.items() for i in range(CASES_PER_KIND)]
    cases += [(f"proto-extra-{i}", _proto(rng)) for i in range(2 * CASES_PER_KIND)]
    return cases


def _inspect_then_run(path: Path) -> None:
    """What `rtpick inspect MODEL` and `rtpick run MODEL` call, minus the printing."""
    from rtpick.commands.compare import _require_outputs, _run_once
    from rtpick.comparison.run import make_feeds
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model
    from rtpick.summary import summarize

    loaded = load_model(str(path))
    summarize(loaded, {})
    _require_outputs(loaded.spec)
    feeds, _ = make_feeds(loaded.spec, shapes={}, batch=None, seed=0)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    with get_runtime("ort-cpu").build(loaded, "fp32", shapes, threads=1) as session:
        _run_once(session, feeds)


def test_mutated_onnx_files_give_one_line_errors(tmp_path) -> None:
    cases = _cases()
    assert len(cases) >= 300
    outcomes = {"ok": 0, "refused": 0}
    escaped = []
    for name, data in cases:
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(data)
        try:
            _inspect_then_run(path)
            outcomes["ok"] += 1
        except RtpickError as exc:
            assert str(exc).strip(), name
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
            escaped.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        path.unlink()
    assert not escaped, "\n".join(escaped[:20])
    assert outcomes["refused"] > 50 and outcomes["ok"] > 0, outcomes  # the fuzz reached both ends


@pytest.mark.parametrize("size", [0, 1, 7])
def test_tiny_files(tmp_path, size) -> None:
    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"\x08" * size)
    with pytest.raises(RtpickError):
        _inspect_then_run(path)
