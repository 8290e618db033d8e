"""The Open Inference Protocol codec against tritonclient's own encoders and decoders (no server needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

from rtpick.serve.protocol import (  # noqa: E402
    HEADER_LENGTH,
    InferRequest,
    ModelSignature,
    ProtocolError,
    RequestedOutput,
    TensorSignature,
    check_body_size,
    encode_infer_response,
    parse_infer_request,
    unknown_model,
)
from rtpick.serve.protocol_grpc import from_grpc_request, to_grpc_response  # noqa: E402
from rtpick.serve.tensors import DATATYPES, NUMPY_DTYPES  # noqa: E402

SIGNATURE = ModelSignature(
    "m", inputs=(TensorSignature("x", "FP32", (3,)), TensorSignature("ids", "INT64", (-1,))),
    outputs=(TensorSignature("y", "FP32", (3,)), TensorSignature("n", "INT32", ())), max_batch_size=4)


def client_body(inputs: list, outputs: list | None = None, **kwargs: object) -> tuple[bytes, int | None]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, **kwargs)
    return body, json_size


def make_inputs(binary: bool, batch: int = 2) -> tuple[list, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((batch, 3)).astype(np.float32),
            "ids": rng.integers(-2**40, 2**40, (batch, 5)).astype(np.int64)}
    inputs = []
    for name, datatype in (("x", "FP32"), ("ids", "INT64")):
        item = httpclient.InferInput(name, list(data[name].shape), datatype)
        item.set_data_from_numpy(data[name], binary_data=binary)
        inputs.append(item)
    return inputs, data


@pytest.mark.parametrize("binary", [True, False])
def test_requests_from_tritonclient_parse_to_the_same_arrays(binary: bool) -> None:
    inputs, data = make_inputs(binary)
    body, json_size = client_body(inputs, request_id="req-7", parameters={"something_unknown": 3})
    request = parse_infer_request(body, SIGNATURE, header_length=json_size)
    assert request.id == "req-7"
    assert request.batch_size == 2
    for name, array in data.items():
        np.testing.assert_array_equal(request.inputs[name], array)
        assert request.inputs[name].dtype == array.dtype
    assert [o.name for o in request.outputs] == ["y", "n"]  # none asked: all, in model order


@pytest.mark.parametrize("binary", [True, False])
def test_responses_decode_with_tritonclient(binary: bool) -> None:
    inputs, data = make_inputs(True)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=binary), httpclient.InferRequestedOutput("n")]
    body, json_size = client_body(inputs, outputs, request_id="abc")
    request = parse_infer_request(body, SIGNATURE, header_length=json_size)
    assert request.outputs == [RequestedOutput("y", binary), RequestedOutput("n", True)]
    result_arrays = {"y": data["x"] * 2, "n": np.array([5, 6], dtype=np.int32)}
    response = encode_infer_response(SIGNATURE, request, result_arrays)
    length = response.headers.get(HEADER_LENGTH)
    result = httpclient.InferenceServerClient.parse_response_body(
        response.body, header_length=int(length) if length else None)
    np.testing.assert_array_equal(result.as_numpy("y"), result_arrays["y"])
    np.testing.assert_array_equal(result.as_numpy("n"), result_arrays["n"])
    assert result.get_response()["id"] == "abc"
    assert result.get_response()["model_name"] == "m"


def test_only_requested_outputs_come_back_and_json_is_the_default() -> None:
    inputs, data = make_inputs(False)
    body, json_size = client_body(inputs, [httpclient.InferRequestedOutput("n", binary_data=False)])
    request = parse_infer_request(body, SIGNATURE, header_length=json_size)
    response = encode_infer_response(SIGNATURE, request, {"y": data["x"], "n": np.array([1, 2], np.int32)})
    assert HEADER_LENGTH not in response.headers
    document = json.loads(response.body)
    assert [o["name"] for o in document["outputs"]] == ["n"]
    assert document["outputs"][0]["data"] == [1, 2]
    assert "id" not in document


def test_binary_data_output_parameter_makes_every_output_binary() -> None:
    inputs, data = make_inputs(True)
    body, json_size = client_body(inputs, timeout=1500)  # no outputs named: tritonclient asks binary_data_output
    request = parse_infer_request(body, SIGNATURE, header_length=json_size)
    assert request.outputs == [RequestedOutput("y", True), RequestedOutput("n", True)]
    assert request.timeout_us == 1500


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d not in ("BF16",)])
def test_every_datatype_round_trips_binary_and_json(datatype: str) -> None:
    tensor = TensorSignature("t", datatype, (2, 2))
    signature = ModelSignature("d", (tensor,), (tensor,))
    if datatype == "BYTES":
        array = np.array([b"a", b"", "\u00e9".encode(), b"xyz"], dtype=object).reshape(2, 2)
    elif datatype == "BOOL":
        array = np.array([[True, False], [False, True]])
    else:
        dtype = NUMPY_DTYPES[datatype]
        array = (np.arange(4) + 1).astype(dtype).reshape(2, 2)
        if dtype.kind in "iu":
            array[0, 0] = np.iinfo(dtype).max
    modes = [True] if datatype == "FP16" else [True, False]
    for binary in modes:
        item = httpclient.InferInput("t", [2, 2], datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        body, json_size = client_body([item], [httpclient.InferRequestedOutput("t", binary_data=binary)])
        request = parse_infer_request(body, signature, header_length=json_size)
        np.testing.assert_array_equal(request.inputs["t"], array)
        response = encode_infer_response(signature, request, request.inputs)
        length = response.headers.get(HEADER_LENGTH)
        result = httpclient.InferenceServerClient.parse_response_body(
            response.body, header_length=int(length) if length else None)
        got = result.as_numpy("t")
        if datatype == "BYTES":  # tritonclient gives JSON strings back as str, binary ones as bytes
            got = np.array([g.encode() if isinstance(g, str) else g for g in got.reshape(-1)], object).reshape(2, 2)
        np.testing.assert_array_equal(got, array)


def test_bf16_travels_binary_only() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    signature = ModelSignature("b", (TensorSignature("t", "BF16", (1, 3)),), (TensorSignature("t", "BF16", (1, 3)),))
    array = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    item = httpclient.InferInput("t", [1, 3], "BF16")
    item.set_data_from_numpy(array, binary_data=True)
    body, json_size = client_body([item])
    request = parse_infer_request(body, signature, header_length=json_size)
    assert request.inputs["t"].dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(request.inputs["t"].reshape(1, 3), array)
    response = encode_infer_response(signature, request, request.inputs)
    assert HEADER_LENGTH in response.headers  # BF16 output is binary even though JSON was the default
    json_body = json.dumps({"inputs": [{"name": "t", "shape": [1, 3], "datatype": "BF16", "data": [1, 2, 3]}]})
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(json_body.encode(), signature)
    assert err.value.status == 400 and "binary" in err.value.message


def test_fp16_sent_as_json_is_refused() -> None:
    signature = ModelSignature("h", (TensorSignature("t", "FP16", (2,)),), (TensorSignature("t", "FP16", (2,)),))
    item = httpclient.InferInput("t", [2], "FP16")
    item.set_data_from_numpy(np.array([1, 2], np.float16), binary_data=False)
    body, json_size = client_body([item])
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body, signature, header_length=json_size)
    assert err.value.status == 400


def request_json(**overrides: object) -> bytes:
    document = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                           {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
    document.update(overrides)
    return json.dumps(document).encode()


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (request_json(inputs=[]), "non-empty"),
    (request_json(id=5), "'id'"),
    (request_json(inputs=[{"name": "zz", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]), "unknown input"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]), "missing input"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]), "datatype"),
    (request_json(inputs=[{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]), "shape"),
    (request_json(inputs=[{"name": "x", "shape": [5, 3], "datatype": "FP32", "data": [0] * 15},
                          {"name": "ids", "shape": [5, 2], "datatype": "INT64", "data": [1] * 10}]), "batch"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]), "elements"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}]), "integers"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, "a", 3]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]), "numbers"),
    (request_json(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                          {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [2**70, 2]}]), "range"),
    (request_json(outputs=[{"name": "nope"}]), "unknown output"),
    (request_json(outputs=[{"name": "y", "parameters": {"classification": 0}}]), "'classification' must be"),
    (request_json(outputs=[{"name": "y", "parameters": {"classification": "3"}}]), "'classification' must be"),
    (request_json(parameters={"timeout": -1}), "timeout"),
])
def test_malformed_requests_are_400_with_the_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body, SIGNATURE)
    assert err.value.status == 400
    assert fragment in err.value.message
    assert json.loads(err.value.body()) == {"error": err.value.message}


def test_timeout_parameter_is_read_and_unknown_parameters_ignored() -> None:
    request = parse_infer_request(request_json(parameters={"timeout": 2500, "whatever": {"a": 1}}), SIGNATURE)
    assert request.timeout_us == 2500


def test_sizes_and_unknown_models() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(request_json(), SIGNATURE, max_bytes=10)
    assert err.value.status == 413
    with pytest.raises(ProtocolError) as err:
        check_body_size(11, 10)
    assert err.value.status == 413
    check_body_size(10, 10)
    error = unknown_model("zz", "3")
    assert error.status == 404 and "zz" in error.message


def test_signature_from_the_exported_model_config() -> None:
    from rtpick.deploy import DeployConfig
    from rtpick.export.triton import model_config_json
    from rtpick.model import ModelSpec, TensorSpec

    spec = ModelSpec("net", (TensorSpec("image", "float32", ("batch", 1, 8, 8)),),
                     (TensorSpec("logits", "float32", ("batch", 10)),), "onnx", "0" * 64)
    deploy = DeployConfig("/m.onnx", "0" * 64, "net", "ort-cpu", "fp32", batch=4)
    signature = ModelSignature.from_config(model_config_json(deploy, spec))
    assert signature.max_batch_size == 4
    assert signature.inputs == (TensorSignature("image", "FP32", (1, 8, 8)),)
    assert signature.metadata()["inputs"][0]["shape"] == [-1, 1, 8, 8]


# -------------------------------------------------------------------------------------------------- gRPC


def grpc_request(raw: bool) -> tuple[service_pb2.ModelInferRequest, dict[str, np.ndarray]]:
    data = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([[1, -2], [3, 2**40]], np.int64)}
    inputs = []
    for name, datatype in (("x", "FP32"), ("ids", "INT64")):
        item = grpcclient.InferInput(name, list(data[name].shape), datatype)
        item.set_data_from_numpy(data[name])
        inputs.append(item)
    message = service_pb2.ModelInferRequest(model_name="m", id="g1")
    for item in inputs:
        message.inputs.extend([item._get_tensor()])
        if raw:
            message.raw_input_contents.extend([item._get_content()])
    if not raw:
        message.inputs[0].contents.fp32_contents.extend(data["x"].reshape(-1).tolist())
        message.inputs[1].contents.int64_contents.extend(data["ids"].reshape(-1).tolist())
    message.outputs.add(name="y")
    return message, data


@pytest.mark.parametrize("raw", [True, False])
def test_grpc_request_and_response_conversion(raw: bool) -> None:
    message, data = grpc_request(raw)
    request = from_grpc_request(message, SIGNATURE)
    assert request.id == "g1" and request.batch_size == 2
    for name, array in data.items():
        np.testing.assert_array_equal(request.inputs[name], array)
    response = to_grpc_response(SIGNATURE, request, {"y": data["x"] + 1, "n": np.array([1, 2], np.int32)})
    assert [o.name for o in response.outputs] == ["y"] and response.id == "g1"
    result = grpcclient.InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("y"), data["x"] + 1)


def test_grpc_bad_raw_contents_is_400() -> None:
    message, _ = grpc_request(True)
    message.raw_input_contents[0] = b"\0" * 5
    with pytest.raises(ProtocolError) as err:
        from_grpc_request(message, SIGNATURE)
    assert err.value.status == 400 and err.value.grpc_code() == "INVALID_ARGUMENT"


def test_encode_uses_the_request_order() -> None:
    request = InferRequest("m", {}, [RequestedOutput("n", False), RequestedOutput("y", False)])
    body = encode_infer_response(SIGNATURE, request, {"y": np.zeros((1, 3), np.float32),
                                                      "n": np.zeros(1, np.int32)}).body
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["n", "y"]


def test_grpc_bytes_contents() -> None:
    signature = ModelSignature("s", (TensorSignature("t", "BYTES", (2,)),), (TensorSignature("t", "BYTES", (2,)),))
    message = service_pb2.ModelInferRequest(model_name="s")
    tensor = message.inputs.add(name="t", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"\xff\x00", b"ok"])
    request = from_grpc_request(message, signature)
    assert list(request.inputs["t"]) == [b"\xff\x00", b"ok"]
    response = to_grpc_response(signature, request, request.inputs)
    assert list(grpcclient.InferResult(response).as_numpy("t")) == [b"\xff\x00", b"ok"]
