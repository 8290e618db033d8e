"""The Open Inference Protocol v2 (KServe v2, Triton's HTTP/REST and gRPC) as a codec, with no server in it.

Why a codec apart from the server: every front end (HTTP, gRPC, a test) turns a request into the same
`InferRequest` (numpy arrays checked against the model's `ModelSignature`) and a result back into the
protocol's bytes, and each malformed request becomes one `ProtocolError` carrying its HTTP status. The
server only moves bytes and schedules batches.

The gRPC messages' side of the codec is `rtpick.serve.protocol_grpc`.

HTTP bodies are JSON, or JSON followed by binary tensor data (the binary tensor extension: the request's
``Inference-Header-Content-Length`` header gives the JSON's length, each binary input names its
``binary_data_size``, and outputs are returned binary when asked with ``binary_data`` /
``binary_data_output``). Unknown ``parameters`` are ignored, as the protocol says; the ``id`` is echoed.
Inputs and outputs may instead name a range of a registered system shared-memory region
(``shared_memory_region`` / ``_byte_size`` / ``_offset``, `rtpick.serve.shared_memory`): an input is then a view
of that memory, and an output is written there and described in the response without its data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.serve import tensors
from rtpick.serve.classification import class_count
from rtpick.serve.errors import ProtocolError, error_body
from rtpick.serve.shared_memory import ShmTarget, read_tensor, target_of

HEADER_LENGTH = "Inference-Header-Content-Length"
__all__ = ["HEADER_LENGTH", "InShm", "InferRequest", "InferResponse", "ModelSignature", "ProtocolError",
           "RequestedOutput", "TensorSignature", "check_against", "check_body_size", "check_output_room",
           "encode_infer_response", "error_body", "parse_infer_request", "unknown_model", "wanted_output"]


@dataclass(frozen=True)
class TensorSignature:
    """One input or output as the model config declares it: dims exclude the batch axis, -1 is open."""

    name: str
    datatype: str  # protocol spelling: FP32, INT64, BYTES, ...
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSignature:
    """What requests to one model are checked against; built from the model's Triton config JSON."""

    name: str
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    max_batch_size: int = 0
    version: str = "1"
    platform: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], version: str = "1") -> ModelSignature:
        """From ``rtpick.export.triton.model_config_json`` (or any Triton model-config JSON)."""

        def tensors_of(key: str) -> tuple[TensorSignature, ...]:
            return tuple(TensorSignature(t["name"], tensors.CONFIG_TO_PROTOCOL[t.get("data_type", "TYPE_FP32")],
                                         tuple(int(d) for d in t.get("dims", []))) for t in config.get(key, []))

        return cls(str(config["name"]), tensors_of("input"), tensors_of("output"),
                   int(config.get("max_batch_size", 0)), version, str(config.get("platform") or
                                                                      config.get("backend") or ""))

    def metadata(self) -> dict[str, Any]:
        """``GET /v2/models/<m>``: name, versions, platform, inputs and outputs with the batch axis as -1."""
        lead = [-1] if self.max_batch_size > 0 else []

        def describe(t: TensorSignature) -> dict[str, Any]:
            return {"name": t.name, "datatype": t.datatype, "shape": [*lead, *t.dims]}

        return {"name": self.name, "versions": [self.version], "platform": self.platform,
                "inputs": [describe(t) for t in self.inputs], "outputs": [describe(t) for t in self.outputs]}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    shm: ShmTarget | None = None  # written into this shared-memory range instead of the response
    classes: int | None = None  # the classification extension: answer the top `classes` as BYTES

    @property
    def datatype_override(self) -> str | None:
        return "BYTES" if self.classes else None


@dataclass(frozen=True)
class InShm:
    """An output the server wrote into the client's shared memory: what the response says about it."""

    shape: tuple[int, ...]
    byte_size: int


@dataclass
class InferRequest:
    """A checked request: arrays by input name, the outputs to return (all, in model order, when none asked)."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    id: str | None = None
    batch_size: int = 0  # the leading dim when the model batches, else 0
    timeout_us: int | None = None  # the request's own ``timeout`` parameter, when given
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferResponse:
    """An encoded response: the body and the headers it needs (content type, binary header length)."""

    body: bytes
    headers: dict[str, str]


def unknown_model(name: str, version: str | None = None) -> ProtocolError:
    what = f"model {name!r}" + (f" version {version!r}" if version else "")
    return ProtocolError(404, f"unknown {what}")


def check_body_size(length: int, limit: int | None) -> None:
    """413 for a body over the server's limit (check the Content-Length before reading the body)."""
    if limit is not None and length > limit:
        raise ProtocolError(413, f"request body of {length} bytes is over the limit of {limit} bytes")


# ------------------------------------------------------------------------------------------------ requests


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{what} must be a JSON object")
    return value


def _header_length(value: Any, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(str(value).strip())
    except ValueError:
        raise ProtocolError(400, f"{HEADER_LENGTH} {str(value)[:40]!r} is not a whole number") from None
    if length < 0 or length > body_length:
        raise ProtocolError(400, f"{HEADER_LENGTH} {length} is outside the {body_length}-byte body")
    return length


def check_against(signature: ModelSignature, arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> int:
    """Names, datatypes and shapes against the model; the batch size (0 when the model does not batch)."""
    declared = {t.name: t for t in signature.inputs}
    unknown = sorted(set(arrays) - set(declared))
    if unknown:
        raise ProtocolError(400, f"unknown input {unknown[0]!r}; model {signature.name!r} has inputs "
                                 f"{list(declared)}")
    missing = [name for name in declared if name not in arrays]
    if missing:
        raise ProtocolError(400, f"missing input {missing[0]!r} for model {signature.name!r}")
    batches = set()
    for name, array in arrays.items():
        spec = declared[name]
        if datatypes[name] != spec.datatype:
            raise ProtocolError(400, f"input {name!r} has datatype {datatypes[name]}, the model wants {spec.datatype}")
        shape = list(array.shape)
        if signature.max_batch_size > 0:
            if not shape or not 1 <= shape[0] <= signature.max_batch_size:
                raise ProtocolError(400, f"input {name!r}: batch {shape[:1]} must be 1 to "
                                         f"{signature.max_batch_size} (shape {shape})")
            batches.add(shape[0])
            shape = shape[1:]
        if len(shape) != len(spec.dims) or any(want not in (-1, got) for want, got in zip(spec.dims, shape)):
            lead = "[batch] + " if signature.max_batch_size > 0 else ""
            raise ProtocolError(400, f"input {name!r} has shape {list(array.shape)}, the model wants "
                                     f"{lead}{list(spec.dims)}")
    if len(batches) > 1:
        raise ProtocolError(400, f"inputs disagree on the batch size: {sorted(batches)}")
    return batches.pop() if batches else 0


def _requested_outputs(value: Any, signature: ModelSignature, binary_default: bool,
                       registry: Any = None) -> list[RequestedOutput]:
    names = [t.name for t in signature.outputs]
    if value is None:
        return [RequestedOutput(name, binary_default) for name in names]
    if not isinstance(value, list):
        raise ProtocolError(400, "'outputs' must be a list")
    wanted = []
    for item in value:
        item = _object(item, "each requested output")
        name = item.get("name")
        if not isinstance(name, str) or name not in names:
            raise ProtocolError(400, f"unknown output {name!r}; model {signature.name!r} has outputs {names}")
        params = _object(item.get("parameters"), f"output {name!r} 'parameters'")
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(400, f"output {name!r}: 'binary_data' must be true or false")
        wanted.append(wanted_output(name, binary, params, registry))
    return wanted


def wanted_output(name: str, binary: bool, params: dict[str, Any], registry: Any) -> RequestedOutput:
    classes = class_count(params, name)
    shm = target_of(params, registry, f"output {name!r}")
    if classes is not None and shm is not None:
        raise ProtocolError(400, f"output {name!r}: a classification answer is not written to shared memory; "
                                 "request one or the other")
    return RequestedOutput(name, binary, shm, classes)


def check_output_room(signature: ModelSignature, outputs: list[RequestedOutput], batch: int) -> None:
    """A shared-memory output whose fixed size is known now must fit its range (refused before it runs)."""
    declared = {t.name: t for t in signature.outputs}
    for wanted in outputs:
        spec = declared[wanted.name]
        if wanted.shm is None or spec.datatype == "BYTES" or any(d < 0 for d in spec.dims):
            continue
        rows = [batch] if signature.max_batch_size > 0 else []
        need = tensors.element_count([*rows, *spec.dims]) * tensors.numpy_dtype(spec.datatype).itemsize
        if need > wanted.shm.byte_size:
            raise ProtocolError(400, f"output {wanted.name!r}: shared_memory_byte_size {wanted.shm.byte_size} "
                                     f"is smaller than the {need} bytes it needs")


def _timeout(params: Mapping[str, Any]) -> int | None:
    value = params.get("timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(400, "parameter 'timeout' must be a non-negative whole number of microseconds")
    return value


def parse_infer_request(body: bytes, signature: ModelSignature, header_length: Any = None,
                        max_bytes: int | None = None, registry: Any = None) -> InferRequest:
    """An HTTP infer body (JSON, or JSON + binary tensors) checked against `signature`.

    `header_length` is the ``Inference-Header-Content-Length`` header's value (None when absent). Raises
    `ProtocolError` (400 malformed, 413 over `max_bytes`) and nothing else for any body.
    """
    check_body_size(len(body), max_bytes)
    length = _header_length(header_length, len(body))
    header, binary = (body, b"") if length is None else (body[:length], memoryview(body)[length:])
    try:
        document = json.loads(bytes(header))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        hint = "" if length is not None else f" (binary data needs the {HEADER_LENGTH} header)"
        raise ProtocolError(400, "the request is not valid JSON" + hint) from None
    document = _object(document, "the request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, "'id' must be a string")
    params = _object(document.get("parameters"), "'parameters'")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError(400, "parameter 'binary_data_output' must be true or false")
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError(400, "'inputs' must be a non-empty list")
    arrays: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for item in items:
        item = _object(item, "each input")
        name = item.get("name")
        if not isinstance(name, str):
            raise ProtocolError(400, "every input needs a string 'name'")
        if name in arrays:
            raise ProtocolError(400, f"input {name!r} is given twice")
        datatype = item.get("datatype")
        if datatype not in tensors.DATATYPES:
            raise ProtocolError(400, f"input {name!r}: unknown datatype {datatype!r}")
        shape = tensors.check_shape(item.get("shape"), f"input {name!r}")
        input_params = _object(item.get("parameters"), f"input {name!r} 'parameters'")
        size = input_params.get("binary_data_size")
        shm = target_of(input_params, registry, f"input {name!r}")
        if shm is not None:
            if size is not None or "data" in item:
                raise ProtocolError(400, f"input {name!r}: give shared memory, binary data or JSON data, not two")
            arrays[name] = read_tensor(shm, datatype, shape, name)
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(400, f"input {name!r}: 'binary_data_size' must be a non-negative integer")
            if offset + size > len(binary):
                raise ProtocolError(400, f"input {name!r}: binary_data_size {size} runs past the "
                                         f"{len(binary)} bytes of binary data")
            arrays[name] = tensors.from_binary(binary[offset:offset + size], datatype, shape, name)
            offset += size
        elif "data" in item:
            arrays[name] = tensors.from_json(item["data"], datatype, shape, name)
        else:
            raise ProtocolError(400, f"input {name!r} has neither 'data' nor a 'binary_data_size'")
        datatypes[name] = datatype
    if offset != len(binary):
        raise ProtocolError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input's "
                                 "binary_data_size")
    batch = check_against(signature, arrays, datatypes)
    outputs = _requested_outputs(document.get("outputs"), signature, binary_default, registry)
    check_output_room(signature, outputs, batch)
    return InferRequest(signature.name, arrays, outputs, request_id, batch, _timeout(params), params)


# ----------------------------------------------------------------------------------------------- responses


def encode_infer_response(signature: ModelSignature, request: InferRequest,
                          outputs: Mapping[str, Any]) -> InferResponse:
    """The HTTP response body for `outputs` (arrays by name): the requested outputs, JSON or binary each.

    FP16 and BF16 outputs are always binary (JSON numbers would round them silently).
    """
    datatypes = {t.name: t.datatype for t in signature.outputs}
    described = []
    chunks: list[bytes] = []
    for wanted in request.outputs:
        value = outputs[wanted.name]
        datatype = wanted.datatype_override or datatypes[wanted.name]
        if isinstance(value, InShm):
            described.append({"name": wanted.name, "datatype": datatype, "shape": list(value.shape),
                              "parameters": {"shared_memory_region": wanted.shm.region.name,  # type: ignore
                                             "shared_memory_byte_size": value.byte_size}})
            continue
        array = np.asarray(value)
        entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": list(array.shape)}
        if wanted.binary or datatype in tensors.BINARY_ONLY:
            raw = tensors.to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensors.to_json(array, datatype)
        described.append(entry)
    document: dict[str, Any] = {"model_name": signature.name, "model_version": signature.version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = described
    header = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if not chunks:
        return InferResponse(header, {"Content-Type": "application/json"})
    return InferResponse(b"".join([header, *chunks]), {"Content-Type": "application/octet-stream",
                                                       HEADER_LENGTH: str(len(header))})
