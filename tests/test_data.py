"""Feeds: synthetic ones are seeded, in range and never all zeros; loaded ones are checked line by line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rtpick.data import feeds_for, load_image_folder, synthetic_feeds, validate_feeds
from rtpick.errors import RtpickError
from rtpick.model import ModelSpec, TensorSpec

IMAGE = TensorSpec("image", "float32", ("batch", 3, "height", "width"))
IDS = TensorSpec("input_ids", "int64", ("batch", "sequence"))
MASK = TensorSpec("mask", "bool", ("batch", "sequence"))
SPEC = ModelSpec("toy", (IDS, MASK), (TensorSpec("y", "float32", ("batch", 2)),), "onnx", "0" * 64)
SHAPES = {"input_ids": (2, 16), "mask": (2, 16)}

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="Pillow is not installed")


def test_synthetic_feeds_are_seeded_and_in_range() -> None:
    first = synthetic_feeds([IMAGE, IDS, MASK], {"image": (2, 3, 8, 8), **SHAPES}, seed=3)
    again = synthetic_feeds([IMAGE, IDS, MASK], {"image": (2, 3, 8, 8), **SHAPES}, seed=3)
    other = synthetic_feeds([IMAGE, IDS, MASK], {"image": (2, 3, 8, 8), **SHAPES}, seed=4)
    for name in first:
        assert np.array_equal(first[name], again[name])
    assert not np.array_equal(first["image"], other["image"])
    assert first["image"].dtype == np.float32 and first["image"].shape == (2, 3, 8, 8)
    assert first["image"].min() >= 0.0 and first["image"].max() < 1.0
    assert first["input_ids"].dtype == np.int64 and first["input_ids"].min() >= 0 and first["input_ids"].max() < 100
    assert first["mask"].dtype == np.bool_
    for value in first.values():
        assert np.count_nonzero(value) > 0  # never all zeros


def test_synthetic_ranges() -> None:
    feeds = synthetic_feeds([IMAGE, IDS], {"image": (1, 3, 4, 4), "input_ids": (1, 64)},
                            ranges={"image": (-2.0, 2.0), "input_ids": (1000, 1005)})
    assert feeds["image"].min() >= -2.0 and feeds["image"].max() < 2.0 and feeds["image"].min() < 0
    assert set(np.unique(feeds["input_ids"]).tolist()) <= set(range(1000, 1005))
    with pytest.raises(RtpickError, match="not an input"):
        synthetic_feeds([IMAGE], {"image": (1, 3, 4, 4)}, ranges={"imgae": (0.0, 1.0)})


def test_feeds_for_without_a_file_is_synthetic() -> None:
    feeds = feeds_for(SPEC, SHAPES, seed=1)
    assert {k: v.shape for k, v in feeds.items()} == SHAPES
    assert np.array_equal(feeds["input_ids"], synthetic_feeds(SPEC.inputs, SHAPES, seed=1)["input_ids"])


def test_npz_loading_casts_only_plain_intent(tmp_path: Path) -> None:
    path = tmp_path / "feeds.npz"
    ids = np.arange(24, dtype=np.int32).reshape(3, 8)  # int32 that fits: cast to the model's int64
    np.savez(path, input_ids=ids, mask=np.ones((3, 8), bool))
    feeds = feeds_for(SPEC, SHAPES, input_path=path)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (3, 8)  # the data's own shape
    assert np.array_equal(feeds["input_ids"], ids)
    floats = validate_feeds([IMAGE], {"image": np.full((1, 3, 2, 2), 0.5)})  # float64 from numpy: float32
    assert floats["image"].dtype == np.float32


def test_npy_feeds_a_one_input_model(tmp_path: Path) -> None:
    spec = ModelSpec("one", (IMAGE,), (), "onnx", "0" * 64)
    path = tmp_path / "x.npy"
    np.save(path, np.ones((1, 3, 4, 4), np.float32))
    assert feeds_for(spec, {"image": (1, 3, 4, 4)}, input_path=path)["image"].shape == (1, 3, 4, 4)
    with pytest.raises(RtpickError, match="holds one array"):
        feeds_for(SPEC, SHAPES, input_path=path)


def test_every_mistake_gets_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, input_ids=np.ones((2, 8), np.float32), extra=np.ones(3))
    with pytest.raises(RtpickError) as error:
        feeds_for(SPEC, SHAPES, input_path=path)
    lines = str(error.value).splitlines()
    assert len(lines) == 3, lines
    assert "'extra', which is not an input" in lines[0]
    assert "no 'mask'" in lines[1]
    assert "is float32 but the model wants int64" in lines[2]


def test_rank_dims_and_shared_symbols_are_checked() -> None:
    fixed = TensorSpec("x", "float32", ("batch", 4))
    with pytest.raises(RtpickError, match="has 1 dims"):
        validate_feeds([fixed], {"x": np.ones(4, np.float32)})
    with pytest.raises(RtpickError, match="fixes axis 1"):
        validate_feeds([fixed], {"x": np.ones((2, 5), np.float32)})
    with pytest.raises(RtpickError, match="'sequence' is 8 in 'input_ids' but 9 in 'mask'"):
        validate_feeds(SPEC.inputs, {"input_ids": np.ones((1, 8), np.int64), "mask": np.ones((1, 9), bool)})
    with pytest.raises(RtpickError, match="outside int32's range"):
        validate_feeds([TensorSpec("i", "int32", (2,))], {"i": np.array([0, 2**40])})


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(RtpickError, match="does not exist"):
        feeds_for(SPEC, SHAPES, input_path=tmp_path / "nope.npz")
    text = tmp_path / "feeds.txt"
    text.write_text("1 2 3")
    with pytest.raises(RtpickError, match="not an .npz"):
        feeds_for(SPEC, SHAPES, input_path=text)


@needs_pillow
def test_image_folder_is_resized_scaled_and_channels_first(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(folder / "cats" / "a.png")
    Image.new("L", (7, 7), 128).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    batch = load_image_folder(folder, IMAGE, (1, 3, 6, 5))
    assert batch.shape == (2, 3, 6, 5) and batch.dtype == np.float32
    red = batch[1]  # sorted paths: b.jpg before cats/a.png
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], 0.0)
    assert np.allclose(batch[0], 128 / 255, atol=2 / 255)
    spec = ModelSpec("img", (IMAGE,), (), "onnx", "0" * 64)
    assert feeds_for(spec, {"image": (1, 3, 6, 5)}, input_path=folder)["image"].shape == (2, 3, 6, 5)
    grey = load_image_folder(folder, TensorSpec("g", "float32", ("batch", 6, 5, 1)), (1, 6, 5, 1))
    assert grey.shape == (2, 6, 5, 1)  # channels-last input


@needs_pillow
def test_image_folder_mistakes(tmp_path: Path) -> None:
    with pytest.raises(RtpickError, match="no images"):
        load_image_folder(tmp_path, IMAGE, (1, 3, 4, 4))
    with pytest.raises(RtpickError, match="4-D image input"):
        load_image_folder(tmp_path, IDS, (1, 8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(RtpickError, match="broken.png is not a readable image"):
        load_image_folder(tmp_path, IMAGE, (1, 3, 4, 4))
    with pytest.raises(RtpickError, match="model with one input"):
        feeds_for(SPEC, SHAPES, input_path=tmp_path)


def test_image_folder_without_pillow_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real(name, *a))
    with pytest.raises(RtpickError, match="pip install pillow"):
        load_image_folder(tmp_path, IMAGE, (1, 3, 4, 4))


def test_a_scalar_feed_stays_a_scalar() -> None:
    """Silero VAD's sample rate is an int64 scalar: a 0-d array from an .npz must reach the model 0-d (numpy's
    ascontiguousarray made it [1], which ONNX Runtime refused)."""
    inputs = [TensorSpec("x", "float32", ("n", 4)), TensorSpec("sr", "int64", ())]
    checked = validate_feeds(inputs, {"x": np.zeros((1, 4), np.float32), "sr": np.array(16000)})
    assert checked["sr"].shape == () and checked["sr"].dtype == np.int64 and int(checked["sr"]) == 16000
