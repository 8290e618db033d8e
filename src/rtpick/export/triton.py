"""Triton's model configuration for a deploy file, built as the protobuf message Triton itself reads.

`model_config(deploy, spec)` is the one source of a model's Triton configuration: the export writes it as
``config.pbtxt`` (`to_pbtxt`) and ``rtpick serve`` answers ``/v2/models/<m>/config`` with `model_config_json`,
so the two can never disagree. The message is built with ``json_format.ParseDict`` into tritonclient's
``ModelConfig``, so a field name or enum value Triton does not know fails here, at build time, not in a server
log: the configuration is valid by construction, never filled into a text template.

The serving policy (queue delay, queue size, timeout, instances) comes from what ``rtpick recommend`` measured
(``deploy.measured``); a figure it did not record falls back to a default stated in `ServingPolicy.notes`,
which the export prints and writes into the repository's README.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtpick.errors import RtpickError
from rtpick.model import has_batch_axis

if TYPE_CHECKING:
    from rtpick.deploy import DeployConfig
    from rtpick.model import ModelSpec, TensorSpec
    from rtpick.runtimes.triton_facts import TritonFacts

# numpy dtype name -> Triton data type (model_config.proto DataType)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16", "object": "TYPE_STRING", "str": "TYPE_STRING", "bytes": "TYPE_STRING",
}

DEFAULT_QUEUE_DELAY_US = 0
DEFAULT_QUEUE_BATCHES = 4
DEFAULT_INSTANCES = 1


@dataclass(frozen=True)
class ServingPolicy:
    """Dynamic batching and instances, each figure with where it came from."""

    max_queue_delay_us: int
    max_queue_size: int
    timeout_us: int  # 0: no timeout (Triton's meaning)
    instances: int
    budget_ms: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def triton_name(text: str) -> str:
    """A model name Triton and a file system both accept: letters, digits, '_', '-', '.'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    return cleaned or "model"


def facts_for(deploy: DeployConfig) -> TritonFacts:
    from rtpick.runtimes.triton_facts import triton_facts

    return triton_facts(deploy.runtime, deploy.precision, deploy.options)


def max_batch_size(deploy: DeployConfig, spec: ModelSpec) -> int:
    if not has_batch_axis(spec):
        return 0
    return max(1, int(deploy.options.get("max_batch") or 0), int(deploy.batch or 1))


def budget_ms(measured: Mapping[str, Any]) -> float | None:
    """The p99 budget (or deadline) the configuration was chosen for, in ms, or None when not recorded."""
    for key in ("budget_p99_ms", "p99_budget_ms", "deadline_ms"):
        value = measured.get(key)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    text = str(measured.get("budget", ""))
    match = re.search(r"(?:p99 <=|deadline) ([0-9.]+(?:e[+-]?[0-9]+)?) ms", text)
    return float(match.group(1)) if match else None


def serving_policy(deploy: DeployConfig, max_batch: int) -> ServingPolicy:
    """The dynamic-batching and instance figures from ``deploy.measured``, defaults stated where absent."""
    measured = deploy.measured
    notes: list[str] = []
    budget = budget_ms(measured)

    delay = measured.get("max_queue_delay_us")
    if not isinstance(delay, int | float) or delay < 0:
        delay = DEFAULT_QUEUE_DELAY_US
        notes.append(f"max_queue_delay_microseconds {delay}: not measured (default: like rtpick's scheduler, "
                     "a batch is formed from what waits when an instance becomes free, with no extra wait)")

    queue = measured.get("max_queue_size")
    throughput = measured.get("throughput")
    if not isinstance(queue, int) or queue <= 0:
        if isinstance(throughput, int | float) and throughput > 0 and budget:
            queue = max(max_batch, 1, math.ceil(float(throughput) * budget / 1e3))
            notes.append(f"max_queue_size {queue}: the requests the measured {float(throughput):.4g} samples/s "
                         f"can serve within the {budget:g} ms budget (more would wait past it)")
        else:
            queue = DEFAULT_QUEUE_BATCHES * max(max_batch, 1)
            notes.append(f"max_queue_size {queue}: throughput or budget not measured (default: "
                         f"{DEFAULT_QUEUE_BATCHES} x the max batch)")

    p99 = measured.get("p99_ms")
    if budget and isinstance(p99, int | float) and 0 < p99 < budget:
        timeout = int(round((budget - float(p99)) * 1e3))
        notes.append(f"default_timeout_microseconds {timeout}: the {budget:g} ms budget less the measured p99 of "
                     f"{float(p99):g} ms (a request queued longer cannot finish within the budget)")
    elif budget:
        timeout = int(round(budget * 1e3))
        notes.append(f"default_timeout_microseconds {timeout}: the whole {budget:g} ms budget (no measured p99 "
                     "below it to subtract)")
    else:
        timeout = 0
        notes.append("default_timeout_microseconds 0 (no timeout): the deploy file records no p99 budget")

    instances = measured.get("instances")
    if not isinstance(instances, int) or instances <= 0:
        instances = DEFAULT_INSTANCES
        notes.append(f"instance_group count {instances}: not measured (default: one instance, as rtpick measured)")
    return ServingPolicy(int(delay), int(queue), timeout, instances, budget, tuple(notes))


def _dims(tensor: TensorSpec, batched: bool) -> list[int]:
    """Triton's dims: the batch axis left out where it batches; a scalar is [1] (Triton refuses empty dims, and
    its ONNX Runtime backend feeds a [1] tensor to a rank-0 model input as the scalar)."""
    shape = tensor.shape[1:] if batched else tensor.shape
    if not batched and not shape:
        return [1]
    return [d if isinstance(d, int) else -1 for d in shape]


def _warmup_dims(tensor: TensorSpec, deploy: DeployConfig, batched: bool) -> list[int]:
    """Concrete dims for a warm-up request: the deploy file's shapes where the model leaves a dim open."""
    given = deploy.shapes.get(tensor.name)
    dims = []
    for axis, declared in enumerate(tensor.shape):
        if batched and axis == 0:
            continue
        if isinstance(declared, int):
            dims.append(declared)
        elif given and len(given) == len(tensor.shape):
            dims.append(int(given[axis]))
        else:
            raise RtpickError(f"input {tensor.name!r} has an open dim {declared!r} and the deploy file gives no "
                              "shape for it; save the deploy file with --shape")
    return dims if dims or batched else [1]  # a scalar, as `_dims` declares it


def triton_dtype(dtype: str) -> str:
    try:
        return TRITON_DTYPES[dtype]
    except KeyError:
        raise RtpickError(f"dtype {dtype} has no Triton data type") from None


def tensor_names(spec: ModelSpec, facts: TritonFacts) -> dict[str, str]:
    """Model tensor name -> Triton tensor name (libtorch wants INPUT__i / OUTPUT__i; others keep the names)."""
    if facts.platform != "pytorch_libtorch":
        return {t.name: t.name for t in (*spec.inputs, *spec.outputs)}
    names = {t.name: f"INPUT__{i}" for i, t in enumerate(spec.inputs)}
    names.update({t.name: f"OUTPUT__{i}" for i, t in enumerate(spec.outputs)})
    return names


def config_dict(deploy: DeployConfig, spec: ModelSpec, name: str | None = None) -> dict[str, Any]:
    """The configuration as a dict in Triton's field spelling (the input of `ParseDict`)."""
    facts = facts_for(deploy)
    batch = max_batch_size(deploy, spec)
    batched = batch > 0
    policy = serving_policy(deploy, batch)
    names = tensor_names(spec, facts)
    config: dict[str, Any] = {"name": name or triton_name(deploy.model_name or spec.name)}
    if facts.platform:
        config["platform"] = facts.platform
    else:
        config["backend"] = facts.backend
    config["max_batch_size"] = batch
    config["input"] = [{"name": names[t.name], "data_type": triton_dtype(t.dtype), "dims": _dims(t, batched)}
                       for t in spec.inputs]
    config["output"] = [{"name": names[t.name], "data_type": triton_dtype(t.dtype), "dims": _dims(t, batched)}
                        for t in spec.outputs]
    group: dict[str, Any] = {"count": policy.instances, "kind": "KIND_GPU" if facts.gpu else "KIND_CPU"}
    if facts.gpu:
        group["gpus"] = [facts.device_id]
    config["instance_group"] = [group]
    if batched:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": policy.max_queue_delay_us,
            "default_queue_policy": {"timeout_action": "REJECT", "max_queue_size": policy.max_queue_size,
                                     "default_timeout_microseconds": policy.timeout_us},
        }
    optimization: dict[str, Any] = {}
    if facts.graph_level is not None:
        optimization["graph"] = {"level": facts.graph_level}
    if facts.accelerators:
        optimization["execution_accelerators"] = {"gpu_execution_accelerator": [
            {"name": a.name, "parameters": dict(a.parameters)} for a in facts.accelerators]}
    if facts.cuda_graphs:
        optimization["cuda"] = {"graphs": True}
    if optimization:
        config["optimization"] = optimization
    if facts.parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in facts.parameters.items()}
    warm_batches = sorted({1, batch}) if batched else [1]
    config["model_warmup"] = [
        {"name": f"batch_{b}", "batch_size": b, "count": 1,
         "inputs": {names[t.name]: {"data_type": triton_dtype(t.dtype), "dims": _warmup_dims(t, deploy, batched),
                                    **_warmup_data(index, t.name, deploy)} for index, t in enumerate(spec.inputs)}}
        for b in warm_batches
    ]
    return config


def _warmup_file(index: int) -> str:
    """The file under ``warmup/`` holding input `index`'s warm-up values. Named by position, never by the input's
    name: that name comes from the model file, and ``../`` or ``/`` in it would write outside the repository."""
    return f"input_{index}"


def _warmup_data(index: int, name: str, deploy: DeployConfig) -> dict[str, Any]:
    """Random data, except for an input the deploy file gives a range: Triton fails to load a model whose warm-up
    fails, and random values break a model that needs particular ones (Silero VAD's sample rate), so that input
    reads its file under ``warmup/`` (`warmup_files` writes it)."""
    return {"input_data_file": _warmup_file(index)} if name in deploy.input_ranges else {"random_data": True}


def warmup_files(deploy: DeployConfig, spec: ModelSpec) -> dict[str, bytes]:
    """``warmup/input_<i>`` -> raw row-major bytes of one sample in its range, for each input the deploy file gives
    a range (rtpick's synthetic rule, seed 0: floats uniform in [lo, hi), integers in [lo, hi))."""
    from rtpick.data import synthetic_feeds

    batched = max_batch_size(deploy, spec) > 0
    ranged = {index: t for index, t in enumerate(spec.inputs) if t.name in deploy.input_ranges}
    if not ranged:
        return {}
    shapes = {t.name: tuple(_warmup_dims(t, deploy, batched) if t.shape else ()) for t in ranged.values()}
    feeds = synthetic_feeds(list(ranged.values()), shapes, seed=0, ranges=deploy.ranges())
    return {f"warmup/{_warmup_file(index)}": feeds[t.name].tobytes() for index, t in ranged.items()}


def model_config(deploy: DeployConfig, spec: ModelSpec, name: str | None = None) -> Any:
    """Triton's ``ModelConfig`` protobuf message for this deploy file and model spec."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    try:
        return json_format.ParseDict(config_dict(deploy, spec, name), model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:  # a bug in config_dict, not the user's input
        raise RuntimeError(f"rtpick built an invalid Triton ModelConfig: {exc}") from exc


def model_config_json(deploy: DeployConfig, spec: ModelSpec, name: str | None = None) -> dict[str, Any]:
    """``/v2/models/<m>/config``: the same message as JSON, in Triton's field spelling (int64 as numbers)."""
    from google.protobuf import json_format

    message = model_config(deploy, spec, name)
    return _int64_as_numbers(message, json_format.MessageToDict(message, preserving_proto_field_name=True))


def to_pbtxt(config: Any, header: str = "") -> str:
    """``config.pbtxt`` text; `header` lines become comments (text format allows them, Triton ignores them)."""
    from google.protobuf import text_format

    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + text_format.MessageToString(config)


def parse_pbtxt(text: str) -> Any:
    """A ``config.pbtxt`` back into ``ModelConfig`` (strict: an unknown field is an error)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _int64_as_numbers(message: Any, data: Any) -> Any:
    """MessageToDict writes 64-bit integers as strings (proto3 JSON); Triton's own JSON writes numbers."""
    from google.protobuf.descriptor import FieldDescriptor

    wide = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            value_fd = fd.message_type.fields_by_name["value"]
            container = getattr(message, fd.name)
            for key in list(value):
                if value_fd.message_type is not None:
                    sub = container[_map_key(fd, key)]
                    value[key] = _int64_as_numbers(sub, value[key])
                elif value_fd.type in wide:
                    value[key] = int(value[key])
        elif fd.message_type is not None:
            subs = getattr(message, fd.name)
            if fd.is_repeated:
                data[fd.name] = [_int64_as_numbers(s, d) for s, d in zip(subs, value)]
            else:
                data[fd.name] = _int64_as_numbers(subs, value)
        elif fd.type in wide:
            data[fd.name] = [int(v) for v in value] if fd.is_repeated else int(value)
    return data


def _map_key(fd: Any, key: str) -> Any:
    from google.protobuf.descriptor import FieldDescriptor

    key_fd = fd.message_type.fields_by_name["key"]
    return key if key_fd.type == FieldDescriptor.TYPE_STRING else int(key)
