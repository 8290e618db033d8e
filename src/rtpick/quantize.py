"""int8 models by ONNX Runtime quantisation, calibrated on real inputs or synthetic ones.

Static quantisation needs activation ranges, and the ranges come from running the fp32 model on calibration
inputs. Real inputs (an .npz keyed by input name, an .npy, or a folder of images) give ranges that match
deployment; synthetic ones only make the model runnable, so the note returned says which was used. The quantised
file is cached under ``cache_dir()/onnx`` by (model hash, calibration content hash, sample count, shapes,
variant), written atomically, so concurrent builds and later runs reuse it.

How a model is quantised is a `Variant` (format, activation type, per-channel weights, reduce_range, which op
types, whether depthwise convolutions stay in float). `rtpick.quantize_search` measures several and keeps the
fastest that stays accurate; the fixed ``recipe`` names below are what TensorRT needs and the historical default.

Two things the quantiser does wrong by itself on real models are fixed here, before it runs:

- models of opset < 13 (most exported by paddle2onnx and older exporters) come out with per-channel
  ``DequantizeLinear`` nodes carrying an ``axis`` attribute that their opset does not have, and ONNX Runtime
  refuses to load them ("Unrecognized attribute: axis"; with fused ``Conv`` biases, the int32 bias
  ``DequantizeLinear`` of a ``ConvAddFusion``/``ConvBnFusion`` initialiser): the model is converted to opset 13
  first, and where that conversion fails, weights are quantised per tensor, which needs no ``axis``;
- ONNX Runtime's symbolic shape inference writes ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file into
  the current directory when it gives up, overwriting a user's file of that name: every step runs with a private
  temporary directory as the current directory.

And one thing that is slow rather than wrong: paddle2onnx's four-op HardSwish, and PP-OCRv4's scalar scale and
shift after a convolution, stay fp32 passes over the tensor between int8 convolutions; the prepared graph gets
them fused (`rtpick.onnx_fusion.fuse`, `_fuse_activations`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import BuildError, RtpickError
from rtpick.files import atomic_write_bytes, file_sha256, read_json, write_json
from rtpick.model import Model
from rtpick.settings import cache_dir

# Bump when the preparation or a variant below changes, so cached files made the older way are not reused.
RECIPE = "v3-opset13-fused"  # v3: HardSwish and scalar scale/shift fused after pre-processing
FAST_INT8_OPS = ("Conv", "MatMul", "Gemm")  # ops whose int8 kernels beat fp32 on x86 with VNNI/AMX (and ARM dot)


@dataclass(frozen=True)
class Variant:
    """One way to quantise a model. `fmt`: "qdq" (Q/DQ pairs ONNX Runtime fuses into int8 kernels),
    "qoperator" (QLinearConv/QLinearMatMul nodes written directly) or "dynamic" (weights int8, activations
    quantised per call from their own range: no calibration; MatMul-heavy models)."""

    name: str
    fmt: str = "qdq"
    activation: str = "s8"  # "u8" or "s8"; weights are always signed int8
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: avoids u8*s8 overflow on CPUs without VNNI
    ops: tuple[str, ...] = ()  # op types to quantise; () = every op type the quantiser knows
    skip_depthwise: bool = False  # leave grouped (depthwise) convolutions in fp32
    keep_first: int = 0  # leave the first N quantisable nodes (graph order) in fp32: early layers err the most
    calibrate: str = "minmax"  # or "percentile"
    activation_symmetric: bool = False
    quantize_bias: bool = True


# The historical default (every op, QDQ, s8s8) and TensorRT's: int8 zero points of 0 and biases left in float.
RECIPES = {
    "ort": Variant("qdq-s8s8-pc-all"),
    "tensorrt": Variant("trt-qdq-s8s8-symmetric", activation_symmetric=True, quantize_bias=False),
}
_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Make `folder` the current directory for the block: ONNX Runtime's quantisation tools write scratch files
    into the current directory. Process-wide, so serialised by a lock; the old directory always comes back."""
    with _CWD_LOCK:
        previous = os.getcwd()
        os.chdir(folder)
        try:
            with _without_preprocessing_advice():
                yield
        finally:
            os.chdir(previous)


_ADVICE = ("Please consider to run pre-processing", "Please consider pre-processing")


class _PreprocessingAdvice(logging.Filter):
    """Drops the quantiser's "Please consider (to run) pre-processing" warnings: rtpick pre-processes the model
    itself (`_prepared`), and the advice, printed to the root logger for every variant, buried recommend's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ADVICE)


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    advice = _PreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


# Real calibration data is fed in chunks of at most this many samples along a dynamic leading axis.
CALIBRATION_CHUNK = 64


def _content_hash(path: Path) -> str:
    """A file's sha256, or for a folder the hash of its image files' names and contents (sorted)."""
    if path.is_file():
        return file_sha256(path)
    from rtpick.data import image_files

    digest = hashlib.sha256()
    for file in image_files(path):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def _target(model: Model, calibration_hash: str, samples: int, shapes: Mapping[str, tuple[int, ...]],
            variant: Variant) -> Path:
    extra = hashlib.sha256(repr((RECIPE, variant, sorted(shapes.items()))).encode()).hexdigest()[:8]
    name = f"{model.spec.sha256[:32]}-int8-{calibration_hash[:16]}-n{samples}-{extra}.onnx"
    return cache_dir() / "onnx" / name


def _real_chunks(model: Model, arrays: Mapping[str, np.ndarray], source: str) -> list[dict[str, np.ndarray]]:
    """Real calibration arrays split along their leading (sample) axis into feeds the model accepts.

    A dynamic leading axis takes chunks of up to `CALIBRATION_CHUNK` samples; a fixed one (a model built for
    batch 1, say) takes chunks of exactly that size, dropping a remainder. Each chunk is checked against the spec.
    """
    from rtpick.data import validate_feeds

    inputs = model.spec.inputs
    if set(arrays) != {spec.name for spec in inputs} or any(np.ndim(v) == 0 for v in arrays.values()):
        return [validate_feeds(inputs, arrays, source=source)]  # raises: says what is missing or wrong
    counts = {name: int(np.shape(value)[0]) for name, value in arrays.items()}
    if min(counts.values()) == 0:
        raise RtpickError(f"{source} holds no calibration samples (its arrays' leading axis has size 0)")
    if len(set(counts.values())) > 1:
        raise RtpickError(f"{source}: calibration arrays must hold the same number of samples (leading axis), "
                          f"not {counts}")
    total = next(iter(counts.values()))
    fixed = {spec.shape[0] for spec in inputs if spec.shape and isinstance(spec.shape[0], int)}
    if len(fixed) > 1 or any(not spec.shape for spec in inputs):
        return [validate_feeds(inputs, arrays, source=source)]  # no common sample axis: one feed, as given
    is_fixed = bool(fixed)
    step = fixed.pop() if is_fixed else CALIBRATION_CHUNK
    if is_fixed and total < step:
        raise RtpickError(f"{source} holds {total} calibration samples but the model's leading axis is fixed at "
                          f"{step}; give at least {step}")
    stop = total - total % step if is_fixed else total
    return [validate_feeds(inputs, {name: value[start:start + step] for name, value in arrays.items()}, source=source)
            for start in range(0, stop, step)]


class _Reader:
    """A calibration data reader (ONNX Runtime's protocol: get_next() -> feed dict or None)."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - only asked for by calibrators rtpick does not use
        raise NotImplementedError


@dataclass(frozen=True)
class Calibration:
    """The feeds static quantisation calibrates on, what they are (for the note) and a key for the cache."""

    feeds: tuple[dict[str, np.ndarray], ...]
    note: str
    key: str
    samples: int
    real: bool
    source: str = ""  # the file or folder name of real data


def batch_one(model: Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """`shapes` with every dynamic leading (batch) axis set to 1: what int8 is calibrated and timed at, so that
    the int8 model and the verdict on it are the same whatever batch a build asks for."""
    result = {}
    for spec in model.spec.inputs:
        shape = tuple(shapes[spec.name])
        dynamic = bool(shape) and bool(spec.shape) and not isinstance(spec.shape[0], int)
        result[spec.name] = (1, *shape[1:]) if dynamic else shape
    return result


def calibration_data(model: Model, shapes: Mapping[str, tuple[int, ...]], calibration: str | None,
                     samples: int) -> Calibration:
    """Real calibration feeds from `calibration` (.npz, .npy or an image folder), else `samples` synthetic ones
    at batch 1 (seeds 0..samples-1)."""
    from rtpick.data import read_inputs, synthetic_feeds

    if calibration:
        path = Path(calibration)
        if not path.exists():
            raise RtpickError(f"calibration file {calibration!r} does not exist; give an .npz keyed by input name")
        chunks = _real_chunks(model, read_inputs(model.spec, shapes, path), str(path))
        count = sum(int(np.shape(next(iter(chunk.values())))[0]) for chunk in chunks)
        return Calibration(tuple(chunks), f"int8 calibrated on {count} samples from {path.name}",
                           _content_hash(path), 0, True, path.name)
    if int(samples) <= 0:
        raise RtpickError(f"calibration_samples must be a positive number, not {samples}")
    samples = int(samples)
    one = batch_one(model, shapes)
    feeds = tuple(synthetic_feeds(model.spec.inputs, one, seed=i) for i in range(samples))
    return Calibration(feeds, f"int8 calibrated on {samples} synthetic samples (seeds 0-{samples - 1}); "
                       "pass calibration=FILE.npz for real data", "synthetic", samples, False)


def quantize_int8(
    model: Model,
    shapes: Mapping[str, tuple[int, ...]],
    calibration: str | None,
    samples: int,
    recipe: str = "ort",
    variant: Variant | None = None,
    data: Calibration | None = None,
) -> tuple[Path, str]:
    """An int8 copy of `model` (cached) and a note saying what it was calibrated on.

    `calibration` is an .npz keyed by input name, an .npy (one-input models) or a folder of images; each array's
    leading axis counts samples. Without it, `samples` synthetic feeds at batch 1 (seeds 0..samples-1) are used.
    `variant` says how to quantise (default: the named `recipe`; ``recipe="tensorrt"`` makes activations
    symmetric and keeps biases in float, as TensorRT requires). `data` reuses calibration feeds already read.
    """
    if variant is None:
        if recipe not in RECIPES:
            raise RtpickError(f"unknown int8 recipe {recipe!r}; known: {', '.join(RECIPES)}")
        variant = RECIPES[recipe]
    data = data or calibration_data(model, shapes, calibration, samples)
    target = _target(model, data.key, data.samples, batch_one(model, shapes), variant)
    if target.exists():
        return target, data.note
    ranges = hashlib.sha256(repr((RECIPE, model.spec.sha256, data.key, data.samples,
                                  sorted(batch_one(model, shapes).items()), variant.ops, variant.calibrate,
                                  variant.activation_symmetric)).encode()).hexdigest()[:32]
    skipped = _quantize(model.onnx_path(), target, _Reader(iter(data.feeds)), variant,
                        prepared_as=cache_dir() / "int8-prep" / f"{model.spec.sha256[:32]}-{RECIPE}",
                        ranges_as=cache_dir() / "int8-prep" / f"ranges-{ranges}.json")
    return target, f"{data.note}; {skipped}" if skipped else data.note


def _upgrade_opset(source: Path, workdir: Path) -> tuple[Path, bool]:
    """`source` at opset >= 13 (per-channel DequantizeLinear needs its `axis`); (path, False) if that failed."""
    import onnx
    from onnx import version_converter

    proto = onnx.load(str(source))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return source, True
    try:
        converted = version_converter.convert_version(proto, 13)
        onnx.checker.check_model(converted)
    except Exception:  # noqa: BLE001 - the converter lacks adapters for some ops: fall back to per-tensor
        return source, False
    target = workdir / "opset13.onnx"
    onnx.save(converted, str(target))
    return target, True


def _preprocess(source: Path, workdir: Path) -> tuple[Path, str]:
    """The pre-pass ONNX Runtime recommends before quantising: ONNX shape inference, then ONNX Runtime's basic
    graph optimisations (constant folding, Conv+BatchNormalization and Conv+Add folded into the Conv's bias),
    then shape inference again. Done here rather than by `quant_pre_process`: that one imports
    ``onnxruntime.tools``, which imports torch (8 s on a busy 2-core machine), and its symbolic shape inference
    took 10 s on the OCR detector of the corpus only to give up. Skipped, with a note, if it fails."""
    import onnx
    import onnxruntime as ort

    inferred = workdir / "inferred.onnx"
    optimised = workdir / "preprocessed.onnx"
    try:
        onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3
        ort.InferenceSession(str(inferred), options, providers=["CPUExecutionProvider"])
        onnx.shape_inference.infer_shapes_path(str(optimised), str(optimised))
        return optimised, ""
    except Exception as exc:  # noqa: BLE001 - an exotic graph: quantise it as it is
        return source, f"quantisation pre-processing skipped ({type(exc).__name__})"


def depthwise_convs(path: Path) -> list[str]:
    """Names of the grouped convolutions of the model at `path` (depthwise and grouped: group > 1)."""
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
            if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)]


def _prepared(source: Path, workdir: Path, cached_as: Path | None) -> tuple[Path, bool, list[str]]:
    """The opset-13, pre-processed model (reused from `cached_as` when an earlier variant made it): the
    pre-processing is the slowest step of quantising a large model, and it is the same for every variant."""
    marker = cached_as.with_suffix(".json") if cached_as else None
    if cached_as and marker and cached_as.with_suffix(".onnx").exists() and marker.exists():
        state = read_json(marker, "int8 preparation record")
        return cached_as.with_suffix(".onnx"), bool(state["per_channel_ok"]), list(state["notes"])
    upgraded, per_channel_ok = _upgrade_opset(source, workdir)
    prepared, skipped = _preprocess(upgraded, workdir)
    prepared, fused = _fuse_activations(prepared, workdir)
    notes = [skipped] if skipped else []
    if cached_as and marker and prepared.stat().st_size < 2**31:
        atomic_write_bytes(cached_as.with_suffix(".onnx"), prepared.read_bytes())
        write_json(marker, {"per_channel_ok": per_channel_ok, "notes": notes, "fused": fused},
                   "int8 preparation record")
    return prepared, per_channel_ok, notes


def _fuse_activations(source: Path, workdir: Path) -> tuple[Path, str]:
    """`source` with its decomposed HardSwish activations and the scalar scale/shift after its convolutions
    fused (`rtpick.onnx_fusion.fuse`), and what was done.

    After the pre-processing, not before: ONNX Runtime's optimiser inlines a HardSwish op into HardSigmoid and
    Mul when it saves a model, and the rewrite puts it back where the opset has it (below opset 14, the prepared
    graph of an older model being opset 13, it writes those two nodes). Either way one or two element-wise ops
    run between the int8 convolutions instead of four: before, Add, Mul and Div were 8.6 of the 22.6 ms of
    ppocr-det's int8 kernel time, most of it these activations (benchmarks/results/cpu_int8_profile.md). The
    scale/shift folded into the convolution disappears altogether, the quantiser's per-channel weights absorbing
    the scale."""
    import onnx

    from rtpick.onnx_fusion import fuse

    if source.stat().st_size >= 2**31:  # a protobuf this large cannot be loaded whole: leave it as it is
        return source, ""
    try:
        rewritten, report = fuse(onnx.load(str(source)))
    except Exception as exc:  # noqa: BLE001 - a graph the rewrite cannot read: quantised as it is, said so
        return source, f"activations not fused ({type(exc).__name__})"
    if not report.total:
        return source, report.describe()
    target = workdir / "fused.onnx"
    onnx.save(rewritten, str(target))
    return target, report.describe()


def leading_nodes(path: Path, ops: tuple[str, ...], count: int, skip: list[str]) -> list[str]:
    """The first `count` nodes of the given op types, in graph order, that are not in `skip`: on the OCR models
    of the corpus, quantising the first 3-6 convolutions alone costs more accuracy than all the others together
    (the detector's cosine to fp32: 0.977 with every conv in int8, 0.995 with the first 3 in fp32)."""
    import onnx

    if count <= 0:
        return []
    wanted = set(ops or ("Conv", "MatMul", "Gemm"))
    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node
             if node.op_type in wanted and node.name not in skip]
    return names[:count]


def _quantize(source: Path, target: Path, reader: Any, variant: Variant, prepared_as: Path | None = None,
              ranges_as: Path | None = None) -> str:
    """Quantise `source` into `target` (atomically) inside a private scratch directory; returns a note of what
    had to be given up (pre-processing, per-channel weights). `prepared_as` and `ranges_as` keep the prepared
    model and the calibrated activation ranges for the next variant (same ops, same data: same ranges)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    notes = []
    with tempfile.TemporaryDirectory(prefix="rtpick-int8-") as tmp:
        workdir = Path(tmp)
        try:
            with _inside(workdir):
                prepared, per_channel_ok, notes = _prepared(source, workdir, prepared_as)
                per_channel = variant.per_channel and per_channel_ok
                if variant.per_channel and not per_channel_ok:
                    notes.append("weights quantised per tensor (the model could not be converted to opset 13)")
                ranges = workdir / "ranges.json"
                if ranges_as is not None and ranges_as.exists():
                    ranges.write_bytes(ranges_as.read_bytes())
                output = workdir / "int8.onnx"
                ops = list(variant.ops) or None
                exclude = depthwise_convs(prepared) if variant.skip_depthwise else []
                exclude += leading_nodes(prepared, variant.ops, variant.keep_first, exclude)
                weight = QuantType.QInt8
                if variant.fmt == "dynamic":
                    quantize_dynamic(str(prepared), str(output), op_types_to_quantize=ops, per_channel=per_channel,
                                     reduce_range=variant.reduce_range, weight_type=weight, nodes_to_exclude=exclude)
                else:
                    quantize_static(
                        str(prepared), str(output), reader,
                        quant_format=QuantFormat.QDQ if variant.fmt == "qdq" else QuantFormat.QOperator,
                        op_types_to_quantize=ops,
                        per_channel=per_channel,
                        reduce_range=variant.reduce_range,
                        activation_type=QuantType.QUInt8 if variant.activation == "u8" else QuantType.QInt8,
                        weight_type=weight,
                        nodes_to_exclude=exclude,
                        calibrate_method=(CalibrationMethod.Percentile if variant.calibrate == "percentile"
                                          else CalibrationMethod.MinMax),
                        extra_options={"ActivationSymmetric": variant.activation_symmetric, "WeightSymmetric": True,
                                       "QuantizeBias": variant.quantize_bias},
                        calibration_cache_path=str(ranges),
                    )
                    if ranges_as is not None and ranges.exists() and not ranges_as.exists():
                        atomic_write_bytes(ranges_as, ranges.read_bytes())
        except RtpickError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantiser raises many types; the user needs one line
            text = str(exc).strip().splitlines()
            raise BuildError(
                f"int8 quantisation of {source.name} failed: {type(exc).__name__}: {text[0] if text else ''}"
            ) from exc
        atomic_write_bytes(target, output.read_bytes())
    return "; ".join(notes)
