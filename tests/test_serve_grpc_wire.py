"""`split_infer_request`: the same request as protobuf's parser, raw contents as views (no copy), never raises."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

from rtpick.serve.grpc_wire import split_infer_request  # noqa: E402


def message(rng: np.random.Generator) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m", model_version="1", id="abc")
    request.parameters["timeout"].int64_param = 5
    for index in range(int(rng.integers(1, 4))):
        data = rng.standard_normal(int(rng.integers(0, 3000))).astype(np.float32)
        tensor = request.inputs.add(name=f"x{index}", datatype="FP32", shape=[data.size])
        tensor.parameters["p"].string_param = "q"
        request.raw_input_contents.append(data.tobytes())
    request.outputs.add(name="y")
    return request


def test_split_equals_protobuf_and_keeps_raw_bytes_in_place() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        original = message(rng)
        wire = original.SerializeToString()
        split = split_infer_request(wire)
        assert split.error is None
        assert [bytes(r) for r in split.raw] == list(original.raw_input_contents)
        assert all(r.obj is wire for r in split.raw)  # views of the received bytes, not copies
        rebuilt = service_pb2.ModelInferRequest()
        rebuilt.CopyFrom(split.message)
        rebuilt.raw_input_contents.extend(bytes(r) for r in split.raw)
        assert rebuilt == original


def test_malformed_messages_are_an_error_text_never_an_exception() -> None:
    wire = message(np.random.default_rng(1)).SerializeToString()
    rng = np.random.default_rng(2)
    cases = [wire[:cut] for cut in rng.integers(1, len(wire), 40)]
    cases += [bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8)) for _ in range(200)]
    cases += [b"\x3a\xff\xff\xff\xff\x0f", b"\xff" * 12, b"\x0b", b""]
    for case in cases:
        split = split_infer_request(case)
        assert (split.error is None) == (split.message is not None)
    assert split_infer_request(b"\x3a\x05ab").error  # a raw entry longer than the message
