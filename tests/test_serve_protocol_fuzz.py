"""Malformed bodies of every kind yield `ProtocolError` with the right status, never another exception.

Bounded and seeded: a few thousand cases, well under a second each run.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rtpick.serve.protocol import (
    InferRequest,
    ModelSignature,
    ProtocolError,
    TensorSignature,
    parse_infer_request,
)
from rtpick.serve.protocol_grpc import from_grpc_request

SIGNATURE = ModelSignature(
    "m", inputs=(TensorSignature("x", "FP32", (3,)), TensorSignature("s", "BYTES", (-1,))),
    outputs=(TensorSignature("y", "FP32", (3,)),), max_batch_size=4)


def valid_binary_body() -> tuple[bytes, int]:
    x = np.arange(6, dtype=np.float32).reshape(2, 3).tobytes()
    s = b"".join(len(v).to_bytes(4, "little") + v for v in (b"ab", b"", b"xyz", b"q"))
    header = json.dumps({"id": "1", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": len(x)}},
        {"name": "s", "shape": [2, 2], "datatype": "BYTES", "parameters": {"binary_data_size": len(s)}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    return header + x + s, len(header)


def outcome(body: bytes, header_length: object = None, max_bytes: int | None = None) -> int:
    """0 for a parsed request, else the ProtocolError's status; any other exception fails the test."""
    try:
        request = parse_infer_request(body, SIGNATURE, header_length=header_length, max_bytes=max_bytes)
    except ProtocolError as exc:
        assert json.loads(exc.body())["error"] == exc.message
        return exc.status
    assert isinstance(request, InferRequest)
    return 0


def test_the_valid_body_parses() -> None:
    body, length = valid_binary_body()
    assert outcome(body, length) == 0


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"null", b"1", b'"x"', b"[" * 100_000, b"{}",
                                  b'{"inputs": {}}', b'{"inputs": [1]}', b'{"inputs": [{"name": 1}]}',
                                  b'{"inputs": [{"name": "x", "shape": "1", "datatype": "FP32"}]}',
                                  b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}',
                                  b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}',
                                  b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "F", "data": [1]}]}',
                                  b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, '
                                  + b"9" * 400 + b"]}]}",
                                  b'{"inputs": [{"name": "x", "shape": [1000000000000], "datatype": "FP32", '
                                  b'"data": [1]}]}'])
def test_bad_json_is_400(body: bytes) -> None:
    assert outcome(body) == 400


def test_header_length_beyond_the_body_or_garbage_is_400() -> None:
    body, length = valid_binary_body()
    for bad in (len(body) + 1, -1, "abc", "1e3", "", 10**30):
        assert outcome(body, bad) == 400


def test_wrong_binary_data_size_is_400() -> None:
    body, length = valid_binary_body()
    header = json.loads(body[:length])
    binary = body[length:]
    for delta in (-5, -1, 1, 7):
        for index in (0, 1):
            changed = json.loads(json.dumps(header))
            changed["inputs"][index]["parameters"]["binary_data_size"] += delta
            text = json.dumps(changed).encode()
            assert outcome(text + binary, len(text)) == 400, (index, delta)
    assert outcome(body[:-1], length) == 400  # truncated binary
    assert outcome(body + b"\0", length) == 400  # unclaimed trailing bytes


def test_over_the_size_limit_is_413() -> None:
    body, length = valid_binary_body()
    assert outcome(body, length, max_bytes=len(body) - 1) == 413


def test_random_mutations_never_raise_anything_else() -> None:
    rng = random.Random(1234)
    body, length = valid_binary_body()
    statuses = set()
    for _ in range(1500):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            position = rng.randrange(len(mutated))
            if kind < 0.5:
                mutated[position] = rng.randrange(256)
            elif kind < 0.75:
                del mutated[position]
            else:
                mutated.insert(position, rng.randrange(256))
        header = length + rng.choice((0, 0, 0, -1, 1, rng.randint(-50, 50)))
        statuses.add(outcome(bytes(mutated), header if rng.random() < 0.9 else None))
    assert statuses <= {0, 400}
    assert 400 in statuses


def test_random_bytes_and_random_json_values() -> None:
    rng = random.Random(99)
    values = [None, True, 0, -1, 2**70, 1.5, float("inf"), "", "x", [], {}, [1, 2, 3], {"a": 1}, [[1], [2, 3]]]
    for _ in range(500):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        assert outcome(noise, rng.choice((None, 0, len(noise), rng.randint(0, 300)))) in (0, 400)
    body, length = valid_binary_body()
    template = json.loads(body[:length])
    binary = body[length:]
    paths = [("id",), ("inputs",), ("outputs",), ("parameters",), ("inputs", 0, "name"), ("inputs", 0, "shape"),
             ("inputs", 0, "datatype"), ("inputs", 0, "parameters"), ("inputs", 0, "parameters", "binary_data_size"),
             ("inputs", 1, "shape"), ("inputs", 0, "data"), ("outputs", 0, "parameters", "binary_data"),
             ("outputs", 0, "name"), ("parameters", "timeout"), ("parameters", "binary_data_output")]
    for _ in range(800):
        document = json.loads(json.dumps(template))
        path = rng.choice(paths)
        node = document
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[path[-1]] = rng.choice(values)
        text = json.dumps(document).encode()
        assert outcome(text + binary, len(text)) in (0, 400)


def test_grpc_messages_with_bad_contents_are_400() -> None:
    from tritonclient.grpc import service_pb2

    rng = random.Random(5)
    for _ in range(300):
        message = service_pb2.ModelInferRequest(model_name="m")
        for name in rng.sample(["x", "s", "zz"], rng.randint(0, 3)):
            tensor = message.inputs.add(name=name, datatype=rng.choice(["FP32", "BYTES", "FP16", "??"]),
                                        shape=[rng.randint(-1, 3) for _ in range(rng.randint(0, 3))])
            if rng.random() < 0.5:
                message.raw_input_contents.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))))
            else:
                tensor.contents.fp32_contents.extend([1.0] * rng.randint(0, 6))
        try:
            from_grpc_request(message, SIGNATURE)
        except ProtocolError as exc:
            assert exc.status == 400
