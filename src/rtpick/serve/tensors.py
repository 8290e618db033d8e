"""Tensor data of the Open Inference Protocol: datatypes, JSON ``data`` lists and binary tensor bytes.

Every malformed tensor raises `ProtocolError` with status 400 and says what is wrong; nothing here raises
another exception type on bad input (the fuzz test holds it to that).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from rtpick.serve.errors import ProtocolError

# Protocol datatype -> numpy dtype (BF16 and BYTES are special-cased below).
NUMPY_DTYPES: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
DATATYPES = (*NUMPY_DTYPES, "BF16", "BYTES")
BINARY_ONLY = ("FP16", "BF16")  # JSON numbers cannot carry them without a silent rounding step
_BY_NUMPY = {dtype.name: name for name, dtype in NUMPY_DTYPES.items()}
_BY_NUMPY.update({"bfloat16": "BF16", "object": "BYTES"})

# Triton's model-config data types (TYPE_FP32) <-> protocol datatypes (FP32)
CONFIG_TO_PROTOCOL = {f"TYPE_{name}": name for name in (*NUMPY_DTYPES, "BF16")}
CONFIG_TO_PROTOCOL["TYPE_STRING"] = "BYTES"


def bfloat16() -> Any:
    try:
        import ml_dtypes
    except ImportError:
        raise ProtocolError(400, "BF16 tensors need the ml_dtypes package on the server") from None
    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(datatype: str) -> Any:
    if datatype in NUMPY_DTYPES:
        return NUMPY_DTYPES[datatype]
    if datatype == "BF16":
        return bfloat16()
    if datatype == "BYTES":
        return np.dtype(object)
    raise ProtocolError(400, f"unknown datatype {datatype!r}; the datatypes are {', '.join(DATATYPES)}")


def protocol_datatype(dtype: Any) -> str:
    """The protocol datatype of a numpy dtype (bytes and str arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _BY_NUMPY[dtype.name]
    except KeyError:
        raise ProtocolError(500, f"numpy dtype {dtype} has no protocol datatype") from None


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def check_shape(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise ProtocolError(400, f"{what} 'shape' must be a list of non-negative integers, not {value!r:.80}")
    return value


# ------------------------------------------------------------------------------------------------ binary


def from_binary(raw: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """The array a binary tensor's bytes hold; its size must be exactly what shape and datatype say."""
    count = element_count(shape)
    if datatype == "BYTES":
        return _deserialize_bytes(raw, count, name).reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(400, f"input {name!r}: {len(raw)} bytes of data, but {datatype} {shape} needs "
                                 f"{count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _deserialize_bytes(raw: bytes | memoryview, count: int, name: str) -> np.ndarray:
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise ProtocolError(400, f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise ProtocolError(400, f"input {name!r}: a BYTES element of {length} bytes runs past its data")
        items.append(bytes(view[offset:offset + length]))
        offset += length
    if len(items) != count:
        raise ProtocolError(400, f"input {name!r}: {len(items)} BYTES elements, but its shape holds {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def from_items(items: list[bytes], shape: list[int], name: str) -> np.ndarray:
    """A BYTES tensor from its elements (gRPC ``bytes_contents``)."""
    count = element_count(shape)
    if len(items) != count:
        raise ProtocolError(400, f"input {name!r}: {len(items)} BYTES elements, but its shape holds {count}")
    array = np.empty(count, dtype=object)
    array[:] = list(items)
    return array.reshape(shape)


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    """The bytes of a binary output: raw little-endian elements, or length-prefixed BYTES elements."""
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


# ------------------------------------------------------------------------------------------------- JSON


def _flatten(data: Any, name: str) -> list[Any]:
    """A nested JSON list flattened in row-major order (iteratively: deep nesting cannot blow the stack)."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 64:
                    raise ProtocolError(400, f"input {name!r}: 'data' is nested more than 64 deep")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def from_json(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """The array a JSON ``data`` list holds, checked element by element against the datatype."""
    if datatype in BINARY_ONLY:
        raise ProtocolError(400, f"input {name!r}: {datatype} data must be sent as binary (the binary tensor "
                                 "extension), not as JSON numbers")
    flat = _flatten(data, name)
    count = element_count(shape)
    if len(flat) != count:
        raise ProtocolError(400, f"input {name!r}: {len(flat)} elements of data, but shape {shape} holds {count}")
    if datatype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise ProtocolError(400, f"input {name!r}: BYTES data in JSON must be strings")
        array = np.empty(count, dtype=object)
        array[:] = [x.encode("utf-8") for x in flat]
        return array.reshape(shape)
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        numpy_dtype(datatype)  # raises for an unknown name
    if datatype == "BOOL":
        if not all(isinstance(x, bool) for x in flat):
            raise ProtocolError(400, f"input {name!r}: BOOL data must be true or false")
        return np.array(flat, dtype=np.bool_).reshape(shape)
    if dtype.kind in "iu":
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
            raise ProtocolError(400, f"input {name!r}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise ProtocolError(400, f"input {name!r}: a value is out of {datatype}'s range")
        return np.array(flat, dtype=dtype).reshape(shape)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat):
        raise ProtocolError(400, f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.array(flat, dtype=dtype).reshape(shape)
    except OverflowError:  # an integer beyond any float
        raise ProtocolError(400, f"input {name!r}: a value is out of {datatype}'s range") from None


def to_json(array: np.ndarray, datatype: str) -> list[Any]:
    """A flat JSON list (row-major), as the protocol's ``data`` field carries it."""
    if datatype == "BYTES":
        out = []
        for item in array.reshape(-1):
            if isinstance(item, bytes):
                try:
                    out.append(item.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ProtocolError(500, "a BYTES output is not UTF-8; request it as binary") from None
            else:
                out.append(str(item))
        return out
    return np.asarray(array).reshape(-1).tolist()
