"""What rtpick asks of TensorRT's builder, as pure functions: precision flags, optimisation profiles, the engine
cache key, parser messages, and whether a QDQ model's quantisation is one TensorRT accepts.

Nothing here imports tensorrt or torch, so the ONNX Runtime TensorRT provider (`runtimes/ort.py`) and the native
runtime (`runtimes/tensorrt.py`) share these rules and the tests check them on any machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.model import TensorSpec

# Bump when what rtpick asks of the builder changes, so engines built by an older recipe are not reused.
ENGINE_RECIPE = "rtpick-trt-v1"

# precision -> (BuilderFlag names to set, BuilderFlag names to clear). TF32 is on by default in TensorRT.
_FLAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fp32": ((), ("TF32",)),
    "tf32": (("TF32",), ()),
    "fp16": (("FP16",), ()),
    "bf16": (("BF16",), ()),
    "int8": (("INT8", "FP16"), ()),
}

def precision_flags(precision: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The builder flags to set and to clear for `precision` (names of ``tensorrt.BuilderFlag`` members)."""
    try:
        return _FLAGS[precision]
    except KeyError:
        raise RtpickError(f"tensorrt does not support {precision}; it supports {', '.join(_FLAGS)}") from None


def version_major(version: str) -> int:
    """The major number of a version string ("10.9.0.34" -> 10); 0 when it has none."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else 0


Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def profile_for(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    min_batch: int = 0,
    max_batch: int = 0,
) -> Profile:
    """(min, opt, max) shapes for every input with a symbolic dim; static inputs need none.

    opt is the shape asked for. Without a batch range min = opt = max (the fastest engine for that one shape).
    ``min_batch``/``max_batch`` (0: unset) widen the leading axis of inputs whose leading dim is symbolic.
    """
    if min_batch < 0 or max_batch < 0:
        raise RtpickError("min_batch and max_batch must be 0 (unset) or positive")
    if (min_batch or max_batch) and not any(spec.shape and isinstance(spec.shape[0], str) for spec in inputs):
        raise RtpickError("min_batch/max_batch need an input whose leading (batch) dim is dynamic; this model's "
                          f"inputs are {', '.join(spec.describe() for spec in inputs)}")
    profile: Profile = {}
    for spec in inputs:
        if spec.is_static:
            continue
        shape = shapes.get(spec.name)
        if shape is None:
            raise RtpickError(
                f"tensorrt needs a concrete shape for input {spec.name!r} ({spec.describe()}) to build its "
                "optimisation profile; pass shapes= or batch="
            )
        opt = tuple(int(d) for d in shape)
        if len(opt) != len(spec.shape):
            raise RtpickError(f"shape {list(opt)} for {spec.describe()} has the wrong number of dims")
        low, high = list(opt), list(opt)
        if opt and isinstance(spec.shape[0], str) and (min_batch or max_batch):
            low[0] = min_batch or opt[0]
            high[0] = max_batch or opt[0]
            if not low[0] <= opt[0] <= high[0]:
                raise RtpickError(
                    f"the batch asked for ({opt[0]}) is outside min_batch..max_batch ({low[0]}..{high[0]}) "
                    f"for input {spec.name!r}"
                )
        profile[spec.name] = (tuple(low), opt, tuple(high))
    return profile


def engine_cache_key(
    model_sha256: str,
    precision: str,
    profile: Profile,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    build_options: Mapping[str, Any] | None = None,
) -> str:
    """A hex key naming one engine: anything that changes the engine changes the key.

    TensorRT engines are specific to the TensorRT version and the GPU model, and to the network, precision
    flags, profile and builder settings they were built with (TensorRT's documentation: plans are not portable).
    """
    payload = {
        "recipe": ENGINE_RECIPE,
        "model": model_sha256,
        "precision": precision,
        "profile": {name: [list(d) for d in dims] for name, dims in sorted(profile.items())},
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "sm": list(compute_capability),
        "build": dict(sorted((build_options or {}).items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def describe_parser_errors(errors: Sequence[Mapping[str, Any]], limit: int = 3) -> str:
    """One line for the ONNX parser's errors: each with its node name and operator when the parser gives them."""
    parts = []
    for error in errors[:limit]:
        where = []
        if error.get("node_name"):
            where.append(f"node {error['node_name']!r}")
        elif error.get("node", -1) is not None and error.get("node", -1) >= 0:
            where.append(f"node #{error['node']}")
        if error.get("operator"):
            where.append(f"({error['operator']})")
        prefix = " ".join(where)
        desc = str(error.get("desc", "")).strip().splitlines()
        parts.append(f"{prefix}: {desc[0] if desc else 'unknown error'}" if prefix else (desc[0] if desc else "?"))
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def qdq_zero_point_problem(path: Path) -> str:
    """Why TensorRT would refuse this QDQ model's quantisation, or "" if it would not.

    TensorRT quantises symmetrically: every QuantizeLinear/DequantizeLinear zero point must be a signed int8 zero.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {init.name: init for init in proto.graph.initializer}
    constants = {
        node.output[0]: attr.t for node in proto.graph.node if node.op_type == "Constant"
        for attr in node.attribute if attr.name == "value"
    }
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3 or not node.input[2]:
            continue
        tensor = initializers.get(node.input[2]) or constants.get(node.input[2])
        if tensor is None:
            continue
        zero_point = numpy_helper.to_array(tensor)
        if zero_point.dtype != np.int8:
            return (f"{node.op_type} {node.name or node.output[0]!r} uses {zero_point.dtype} zero points; "
                    "TensorRT needs signed int8")
        if np.any(zero_point != 0):
            return (f"{node.op_type} {node.name or node.output[0]!r} has a non-zero zero point (asymmetric "
                    "quantisation); TensorRT quantises symmetrically (zero point 0)")
    return ""
