"""int8 through ONNX Runtime static quantisation: real accuracy, the calibration note, the cache, bad files.

The sessions are loaded with ``int8_min_speedup=0`` (keep the fastest accurate variant whatever its timing): these
tests are about accuracy and what the notes say; whether int8 is faster is a timing, which a unit test on a busy
machine must not depend on (the never-slower rule is tested in test_quantize_search.py with fixed timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rtpick
from rtpick import quantize
from rtpick.errors import RtpickError
from rtpick.model import resolve_shapes
from rtpick.sources import assets_dir, load_bundled


@pytest.fixture(scope="module")
def eval_set() -> tuple[np.ndarray, np.ndarray]:
    with np.load(assets_dir() / "digits_eval.npz") as archive:
        return archive["image"], archive["label"]


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory, eval_set: tuple[np.ndarray, np.ndarray]) -> Path:
    """The first 100 held-out images, as a user's calibration .npz (float64, as numpy makes them by default)."""
    path = tmp_path_factory.mktemp("calibration") / "digits_cal.npz"
    np.savez(path, image=eval_set[0][:100].astype(np.float64))
    return path


def _accuracy(session: rtpick.runtimes.base.Session, images: np.ndarray, labels: np.ndarray) -> float:
    logits = session.run({"image": images})["logits"]
    assert np.isfinite(logits).all()
    return float(np.mean(logits.argmax(1) == labels))


def test_int8_calibrated_on_real_digits_keeps_accuracy(eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    """The shipped calibration set (training images) -> int8 within 2 points of fp32 on the held-out set."""
    images, labels = eval_set
    with rtpick.load("rtpick:digits", runtime="ort-cpu", precision="fp32") as fp32:
        reference = _accuracy(fp32, images, labels)
    calibration = assets_dir() / "digits_calibration.npz"
    with rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8", calibration=str(calibration),
                     int8_min_speedup=0) as int8:
        accuracy = _accuracy(int8, images, labels)
        assert int8.info.notes[0] == ("int8 calibrated on 96 of the 128 samples in digits_calibration.npz; accuracy "
                                      "checked on 32 of the others, held out from calibration, and on the 96 "
                                      "calibration samples")
        assert "int8 variant" in int8.info.notes[1]  # the variant the search kept, with its measured ratio
    assert accuracy >= reference - 0.02, (accuracy, reference)


def test_user_calibration_file_in_float64(calibration_file: Path, eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = eval_set
    with rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8",
                     calibration=str(calibration_file), int8_min_speedup=0) as int8:
        assert int8.info.notes[0].startswith("int8 calibrated on 75 of the 100 samples in digits_cal.npz")
        assert _accuracy(int8, images, labels) >= 0.95


def test_int8_model_is_really_quantised(calibration_file: Path) -> None:
    import onnx

    model = load_bundled("digits")
    path, _ = quantize.quantize_int8(model, resolve_shapes(model.spec.inputs), str(calibration_file), 32)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert path.stat().st_size < model.onnx_path().stat().st_size / 2  # int8 weights: a quarter of fp32's bytes


def test_synthetic_calibration_says_so(eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = eval_set
    with rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8", calibration_samples=8,
                     int8_min_speedup=0) as int8:
        assert "8 synthetic samples" in int8.info.notes[0] and "calibration=" in int8.info.notes[0]
        assert _accuracy(int8, images, labels) >= 0.9


def test_cache_is_reused(calibration_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_bundled("digits")
    shapes = resolve_shapes(model.spec.inputs)
    first, _ = quantize.quantize_int8(model, shapes, str(calibration_file), 32)

    def must_not_run(*args: object, **kwargs: object) -> str:
        raise AssertionError("quantised again instead of reusing the cached file")

    monkeypatch.setattr(quantize, "_quantize", must_not_run)
    second, _ = quantize.quantize_int8(model, shapes, str(calibration_file), 32)
    assert second == first and first.parent.name == "onnx"
    with pytest.raises(AssertionError):  # a different calibration content is a different file
        other = calibration_file.with_name("other.npz")
        np.savez(other, image=np.load(calibration_file)["image"][:50])
        quantize.quantize_int8(model, shapes, str(other), 32)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 1, 32, 32), np.float32)}, "not an input"),
        ({"image": np.zeros((4, 1, 28, 28), np.float32)}, "fixes axes 2, 3"),
        ({"image": np.zeros((4, 32, 32), np.float32)}, "3 dims"),
        ({"image": np.zeros((0, 1, 32, 32), np.float32)}, "no calibration samples"),
        ({"image": np.ones((4, 1, 32, 32), np.int64)}, "wants float32"),
    ],
)
def test_bad_calibration_file_is_a_user_error(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(RtpickError, match=message):
        rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8", calibration=str(path))


def test_missing_or_unreadable_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(RtpickError, match="does not exist"):
        rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8", calibration=str(tmp_path / "no.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(RtpickError, match="not a readable"):
        rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8", calibration=str(garbage))
