"""The bundled model: it loads from the package, its spec is what the docs say, and it really classifies digits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needs_torch

import rtpick
from rtpick.sources import assets_dir, load_bundled


@pytest.fixture(scope="module")
def eval_set() -> tuple[np.ndarray, np.ndarray]:
    with np.load(assets_dir() / "digits_eval.npz") as archive:
        return archive["image"], archive["label"]


def test_assets_are_small_and_present() -> None:
    names = ["digits.onnx", "digits.pt", "digits_eval.npz", "digits_calibration.npz", "digits_net.py", "README.md",
             "__init__.py"]
    sizes = {name: (assets_dir() / name).stat().st_size for name in names}
    assert all(size > 0 for size in sizes.values()), sizes
    assert sum(sizes.values()) <= 5 * 1024 * 1024, sizes


def test_spec_is_the_documented_one() -> None:
    spec = load_bundled("digits").spec
    assert spec.name == "rtpick:digits" and spec.source == "bundled"
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("image", "float32", ("batch", 1, 32, 32))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("logits", "float32", ("batch", 10))]


def test_eval_set_is_labelled_and_preprocessed(eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = eval_set
    assert images.dtype == np.float32 and images.shape[1:] == (1, 32, 32)
    assert labels.dtype == np.int64 and labels.shape == (images.shape[0],)
    assert images.shape[0] >= 500
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    assert set(np.unique(labels).tolist()) == set(range(10))  # stratified: every digit is held out
    with np.load(assets_dir() / "digits_calibration.npz") as archive:
        assert archive.files == ["image"]
        assert archive["image"].dtype == np.float32 and archive["image"].shape[1:] == (1, 32, 32)


def test_ort_accuracy_on_held_out_set(eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = eval_set
    with rtpick.load("rtpick:digits", runtime="ort-cpu") as session:
        logits = session.run({"image": images})["logits"]
    assert logits.shape == (len(labels), 10) and np.isfinite(logits).all()
    accuracy = float(np.mean(logits.argmax(1) == labels))
    assert accuracy >= 0.95, accuracy


@needs_torch
def test_torch_and_onnx_agree(eval_set: tuple[np.ndarray, np.ndarray]) -> None:
    import torch

    images, labels = eval_set
    module = load_bundled("digits").torch_module()
    assert not module.training
    with torch.inference_mode():
        torch_logits = module(torch.from_numpy(images)).numpy()
    with rtpick.load("rtpick:digits", runtime="ort-cpu") as session:
        ort_logits = session.run({"image": images})["logits"]
    np.testing.assert_allclose(torch_logits, ort_logits, atol=1e-4, rtol=1e-4)
    assert np.array_equal(torch_logits.argmax(1), ort_logits.argmax(1))
    assert float(np.mean(torch_logits.argmax(1) == labels)) >= 0.95
