"""The Open Inference Protocol's gRPC messages (Triton's ``ModelInferRequest`` / ``ModelInferResponse``) to and
from the codec's `InferRequest`, with the same checks as HTTP (`rtpick.serve.protocol`).

Tensor data comes as raw_input_contents (read apart from the message by `rtpick.serve.grpc_wire`), as typed
contents, or from system shared memory; every output goes back in raw_output_contents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rtpick.serve import tensors
from rtpick.serve.errors import ProtocolError
from rtpick.serve.protocol import (
    InferRequest,
    InShm,
    ModelSignature,
    RequestedOutput,
    check_against,
    check_output_room,
    wanted_output,
)
from rtpick.serve.shared_memory import read_tensor, target_of

_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _grpc_parameter(param: Any) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None


def _grpc_parameters(parameters: Any) -> dict[str, Any]:
    return {key: _grpc_parameter(value) for key, value in parameters.items()}


def from_grpc_request(message: Any, signature: ModelSignature, registry: Any = None,
                      raw: Any = None) -> InferRequest:
    """A ``service_pb2.ModelInferRequest`` as an `InferRequest` (raw_input_contents, typed contents, or
    shared memory; raw contents are given for the inputs not in shared memory, in order). `raw`: the raw
    contents read apart from the message (`rtpick.serve.grpc_wire`), else the message's own."""
    params = _grpc_parameters(message.parameters)
    if raw is None:
        raw = list(message.raw_input_contents)
    in_shm = [_grpc_parameters(t.parameters) for t in message.inputs]
    shm_count = sum("shared_memory_region" in p for p in in_shm)
    if len(raw) and len(raw) != len(message.inputs) - shm_count:
        raise ProtocolError(400, f"{len(raw)} raw_input_contents for {len(message.inputs) - shm_count} inputs "
                                 "outside shared memory; give one per such input or none")
    arrays: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    raw_index = 0
    for index, tensor in enumerate(message.inputs):
        name, datatype = tensor.name, tensor.datatype
        if name in arrays:
            raise ProtocolError(400, f"input {name!r} is given twice")
        if datatype not in tensors.DATATYPES:
            raise ProtocolError(400, f"input {name!r}: unknown datatype {datatype!r}")
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise ProtocolError(400, f"input {name!r}: negative dim in shape {shape}")
        shm = target_of(in_shm[index], registry, f"input {name!r}")
        if shm is not None:
            arrays[name] = read_tensor(shm, datatype, shape, name)
        elif len(raw):
            arrays[name] = tensors.from_binary(raw[raw_index], datatype, shape, name)
            raw_index += 1
        elif datatype in tensors.BINARY_ONLY:
            raise ProtocolError(400, f"input {name!r}: {datatype} data must be sent in raw_input_contents")
        else:
            values = list(getattr(tensor.contents, _CONTENTS[datatype]))
            if datatype == "BYTES":
                arrays[name] = tensors.from_items(values, shape, name)
            else:
                arrays[name] = tensors.from_json(values, datatype, shape, name)
        datatypes[name] = datatype
    batch = check_against(signature, arrays, datatypes)
    names = [t.name for t in signature.outputs]
    wanted = []
    for out in message.outputs:
        if out.name not in names:
            raise ProtocolError(400, f"unknown output {out.name!r}; model {signature.name!r} has outputs {names}")
        wanted.append(wanted_output(out.name, True, _grpc_parameters(out.parameters), registry))
    outputs = wanted or [RequestedOutput(name, True) for name in names]
    check_output_room(signature, outputs, batch)
    timeout = params.get("timeout")
    timeout_us = int(timeout) if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout >= 0 \
        else None
    return InferRequest(signature.name, arrays, outputs, message.id or None, batch, timeout_us, params)


def to_grpc_response(signature: ModelSignature, request: InferRequest, outputs: Mapping[str, Any]) -> Any:
    """A ``service_pb2.ModelInferResponse`` with every requested output in raw_output_contents (an empty entry
    for one written to shared memory, which keeps the entries aligned with the outputs, as clients index them)."""
    from tritonclient.grpc import service_pb2

    datatypes = {t.name: t.datatype for t in signature.outputs}
    response = service_pb2.ModelInferResponse(model_name=signature.name, model_version=signature.version,
                                              id=request.id or "")
    for wanted in request.outputs:
        value = outputs[wanted.name]
        if isinstance(value, InShm):
            out = response.outputs.add(name=wanted.name, datatype=datatypes[wanted.name], shape=list(value.shape))
            out.parameters["shared_memory_region"].string_param = wanted.shm.region.name  # type: ignore
            out.parameters["shared_memory_byte_size"].int64_param = value.byte_size
            response.raw_output_contents.append(b"")
            continue
        array = np.asarray(value)
        datatype = wanted.datatype_override or datatypes[wanted.name]
        response.outputs.add(name=wanted.name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(tensors.to_binary(array, datatype))
    return response
