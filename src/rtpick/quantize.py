"""int8 models by ONNX Runtime static quantisation (QDQ format), calibrated on real inputs or synthetic ones.

Static quantisation needs activation ranges, and the ranges come from running the fp32 model on calibration
inputs. Real inputs (an .npz keyed by input name, an .npy, or a folder of images) give ranges that match
deployment; synthetic ones only make the model runnable, so the note returned says which was used. The quantised
file is cached under ``cache_dir()/onnx`` by (model hash, calibration content hash, sample count, shapes,
recipe), written atomically, so concurrent builds and later runs reuse it.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import BuildError, RtpickError
from rtpick.files import atomic_write_bytes, file_sha256
from rtpick.model import Model
from rtpick.settings import cache_dir

# Bump when a recipe below changes, so cached files made by an older recipe are not reused.
RECIPE = "qdq-s8s8-perchannel-minmax-v1"
# TensorRT accepts only int8 zero points of 0 and wants biases left in float: symmetric activations, no bias
# quantisation (ONNX Runtime's quantizer options ActivationSymmetric and QuantizeBias).
RECIPES = {
    "ort": {"ActivationSymmetric": False, "WeightSymmetric": True},
    "tensorrt": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
}
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
            recipe: str) -> Path:
    extra = hashlib.sha256(repr((RECIPE, recipe, sorted(shapes.items()))).encode()).hexdigest()[:8]
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


def _preprocess(source: Path, workdir: Path) -> tuple[Path, str]:
    """ONNX Runtime's recommended pre-pass (shape inference, graph clean-up); skipped, with a note, if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = workdir / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        return target, ""
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some exotic graphs
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
            return target, ""
        except Exception:  # noqa: BLE001
            return source, f"quantisation pre-processing skipped ({type(exc).__name__})"


def quantize_int8(
    model: Model,
    shapes: Mapping[str, tuple[int, ...]],
    calibration: str | None,
    samples: int,
    recipe: str = "ort",
) -> tuple[Path, str]:
    """An int8 QDQ copy of `model` (cached) and a note saying what it was calibrated on.

    `calibration` is an .npz keyed by input name, an .npy (one-input models) or a folder of images; each array's
    leading axis counts samples. Without it, `samples` synthetic feeds of `shapes` (seeds 0..samples-1) are used.
    Weights are quantised per output channel (int8, symmetric) and activations per tensor (int8), min-max
    calibrated: the recipe ONNX Runtime recommends for its CPU provider on AVX-512/VNNI and ARM machines.
    ``recipe="tensorrt"`` makes activations symmetric and keeps biases in float, as TensorRT requires.
    """
    if recipe not in RECIPES:
        raise RtpickError(f"unknown int8 recipe {recipe!r}; known: {', '.join(RECIPES)}")
    from rtpick.data import read_inputs, synthetic_feeds

    if calibration:
        path = Path(calibration)
        if not path.exists():
            raise RtpickError(f"calibration file {calibration!r} does not exist; give an .npz keyed by input name")
        chunks = _real_chunks(model, read_inputs(model.spec, shapes, path), str(path))
        count = sum(int(np.shape(next(iter(chunk.values())))[0]) for chunk in chunks)
        note = f"int8 calibrated on {count} samples from {path.name}"
        target = _target(model, _content_hash(path), 0, shapes, recipe)
        batches: Iterator[dict[str, np.ndarray]] = iter(chunks)
    else:
        if int(samples) <= 0:
            raise RtpickError(f"calibration_samples must be a positive number, not {samples}")
        samples = int(samples)
        note = (f"int8 calibrated on {samples} synthetic samples (seeds 0-{samples - 1}); "
                "pass calibration=FILE.npz for real data")
        target = _target(model, "synthetic", samples, shapes, recipe)
        batches = (synthetic_feeds(model.spec.inputs, shapes, seed=i) for i in range(samples))
    if target.exists():
        return target, note
    skipped = _quantize(model.onnx_path(), target, _Reader(batches), RECIPES[recipe])
    return target, f"{note}; {skipped}" if skipped else note


def _quantize(source: Path, target: Path, reader: Any, extra_options: Mapping[str, Any]) -> str:
    """Quantise `source` into `target` (atomically); returns a note if the pre-processing had to be skipped."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="rtpick-int8-") as tmp:
        workdir = Path(tmp)
        prepared, skipped = _preprocess(source, workdir)
        output = workdir / "int8.onnx"
        try:
            quantize_static(
                str(prepared), str(output), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=dict(extra_options),
            )
        except RtpickError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantiser raises many types; the user needs one line
            text = str(exc).strip().splitlines()
            raise BuildError(
                f"int8 quantisation of {source.name} failed: {type(exc).__name__}: {text[0] if text else ''}"
            ) from exc
        atomic_write_bytes(target, output.read_bytes())
    return skipped
