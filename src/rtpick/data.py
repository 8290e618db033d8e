"""Feeds for a model: synthetic (seeded, in sensible ranges), from .npz/.npy files, or from an image folder.

Every loaded feed is checked against the model's spec before any runtime sees it, and every mistake found is
named on its own line (unknown name, missing input, wrong rank, wrong fixed dim, wrong dtype), so a user fixes
them all in one go. Loaded feeds keep their own shapes: the spec's fixed dims are checked, its symbolic dims
(batch, sequence) take whatever the data has.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.model import ModelSpec, TensorSpec, shape_text

# Integer inputs are usually token ids or indices: keep them small so any embedding table accepts them.
DEFAULT_INT_HIGH = 100

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def synthetic_feeds(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    seed: int = 0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Random feeds for every input, reproducible from `seed`.

    Floats are uniform in [0, 1) (an image scaled to unit range) unless `ranges` says otherwise; integers are in
    [0, 100) (token ids below any real vocabulary); booleans are random. Never zeros: zeros hide wrong indexing.
    """
    check_fits_in_memory(inputs, shapes)
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    names = {spec.name for spec in inputs}
    for unknown in sorted(set(ranges) - names):
        raise RtpickError(f"--input-range names {unknown!r}, which is not an input; the inputs are {sorted(names)}")
    feeds = {}
    for spec in inputs:
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        default_high = 1.0 if dtype.kind == "f" else min(DEFAULT_INT_HIGH, spec.index_limit or DEFAULT_INT_HIGH)
        low, high = ranges.get(spec.name, (0.0, default_high))
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(low, high, size=shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(int(low), max(int(high), int(low) + 1), size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise RtpickError(f"cannot make synthetic data for input {spec.name!r} of dtype {spec.dtype}")
    return feeds


def available_memory() -> int | None:
    """Bytes of memory the system can still hand out (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(inputs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse feeds larger than half the available memory before allocating them (a typo in --shape must not
    send the machine into swap or the out-of-memory killer); sizes in whole numbers, so nothing overflows."""
    total = 0
    for spec in inputs:
        count = 1
        for dim in shapes[spec.name]:
            count *= int(dim)
        total += count * np.dtype(spec.dtype).itemsize
    available = available_memory()
    if available is not None and total > available // 2:
        sizes = ", ".join(f"{name}={shape_text(shape)}" for name, shape in shapes.items())
        raise RtpickError(f"the inputs ({sizes}) need {total / 2**30:.3g} GiB, more than half of the "
                          f"{available / 2**30:.3g} GiB of memory available; use a smaller --shape or --batch")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Feeds from an .npz (one array per input name) or an .npy (the model's only input)."""
    path = Path(path)
    if not path.exists():
        raise RtpickError(f"input file {str(path)!r} does not exist")
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise RtpickError(f"{path} is not a readable .npz/.npy file ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------------- images


def _image_layout(spec: TensorSpec, shape: tuple[int, ...]) -> tuple[int, int, int, bool]:
    """(channels, height, width, channels_last) of a 4-D image input, from its concrete `shape`."""
    if len(shape) != 4:
        raise RtpickError(
            f"a folder of images feeds a 4-D image input [batch, channels, height, width], but {spec.describe()} "
            "is not one; give an .npz instead"
        )
    if shape[1] in (1, 3):
        return shape[1], shape[2], shape[3], False
    if shape[3] in (1, 3):
        return shape[3], shape[1], shape[2], True
    raise RtpickError(
        f"a folder of images feeds an input with 1 or 3 channels, but {spec.describe()} (as {shape}) has neither "
        "on axis 1 or 3; give an .npz instead"
    )


def image_files(path: Path) -> list[Path]:
    """The image files under `path` (subfolders included, e.g. one per class), in a stable sorted order."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(path: str | Path, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    """Every image under `path` as one array for input `spec`: [N, C, H, W] (or [N, H, W, C] for such inputs).

    Images are converted to the input's channel count (grey or RGB), resized to its height and width
    (bilinear), and scaled to [0, 1] for float inputs (kept 0-255 for uint8 ones). No mean/std normalisation:
    a model that wants it needs an .npz prepared by the user. Needs Pillow, imported only here.
    """
    path = Path(path)
    if not path.is_dir():
        raise RtpickError(f"image folder {str(path)!r} does not exist or is not a folder")
    if importlib.util.find_spec("PIL") is None:
        raise RtpickError("reading a folder of images needs Pillow; install it with: pip install pillow")
    from PIL import Image

    channels, height, width, channels_last = _image_layout(spec, shape)
    dtype = np.dtype(spec.dtype)
    if dtype.kind != "f" and dtype != np.uint8:
        raise RtpickError(f"a folder of images cannot feed {spec.describe()} (images are float or uint8 inputs)")
    files = image_files(path)
    if not files:
        raise RtpickError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {str(path)!r}")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                converted = image.convert("L" if channels == 1 else "RGB")
                resized = converted.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(resized, dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - Pillow raises several types for a bad file
            raise RtpickError(f"{file} is not a readable image ({type(exc).__name__}: {exc})") from exc
        pixels = pixels.reshape(height, width, channels)
        arrays.append(pixels if channels_last else pixels.transpose(2, 0, 1))
    batch = np.stack(arrays)
    if dtype.kind == "f":
        return (batch.astype(np.float32) / 255.0).astype(dtype)
    return batch


# ---------------------------------------------------------------------------------------------------- checks


def _cast(spec: TensorSpec, value: np.ndarray) -> tuple[np.ndarray | None, str]:
    """`value` as the input's dtype where the intent is plain; otherwise (None, why not)."""
    want = np.dtype(spec.dtype)
    have = value.dtype
    if have == want:
        return value, ""
    if have == np.float64 and want == np.float32:
        return value.astype(np.float32), ""  # numpy's default float: the user meant float32
    if have.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        if value.size == 0 or (int(value.min()) >= info.min and int(value.max()) <= info.max):
            return value.astype(want), ""
        return None, f"input {spec.name!r} is {have} with values outside {want}'s range; the model wants {want}"
    return None, (
        f"input {spec.name!r} is {have} but the model wants {want}; convert it (array.astype(np.{want})) "
        "if that is what you mean"
    )


def validate_feeds(inputs: Sequence[TensorSpec], feeds: Mapping[str, Any], source: str = "the feeds"
                   ) -> dict[str, np.ndarray]:
    """`feeds` checked against `inputs` and cast where the intent is plain (float64 -> float32, ints that fit).

    Every mistake gets one line; all of them are raised together as one `RtpickError`. Symbolic dims must take
    one size across inputs (two inputs with ``batch`` must have the same batch).
    """
    problems: list[str] = []
    names = [t.name for t in inputs]
    for unknown in sorted(set(feeds) - set(names)):
        problems.append(f"{source} has {unknown!r}, which is not an input; the inputs are {names}")
    for missing in [n for n in names if n not in feeds]:
        problems.append(f"{source} has no {missing!r}; add an array for that input")
    symbols: dict[str, tuple[int, str]] = {}
    checked: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.name not in feeds:
            continue
        value = np.asarray(feeds[spec.name])
        if value.ndim != len(spec.shape):
            problems.append(
                f"input {spec.name!r} has {value.ndim} dims {tuple(value.shape)} but the model wants "
                f"{len(spec.shape)} ({spec.describe()})"
            )
            continue
        wrong = [axis for axis, (declared, size) in enumerate(zip(spec.shape, value.shape))
                 if isinstance(declared, int) and declared != size]
        if wrong:
            problems.append(
                f"input {spec.name!r} has shape {tuple(value.shape)} but the model fixes "
                f"{'axes' if len(wrong) > 1 else 'axis'} {', '.join(map(str, wrong))} ({spec.describe()})"
            )
        for declared, size in zip(spec.shape, value.shape):
            if isinstance(declared, str) and declared != "?":  # "?": an unnamed dim, shared with nothing
                seen = symbols.setdefault(declared, (size, spec.name))
                if seen[0] != size:
                    problems.append(
                        f"dim {declared!r} is {seen[0]} in {seen[1]!r} but {size} in {spec.name!r}; "
                        "inputs sharing a dim must agree"
                    )
        cast, why = _cast(spec, value)
        if cast is None:
            problems.append(why)
            continue
        checked[spec.name] = np.asarray(cast, order="C")  # not ascontiguousarray: it makes a scalar 1-d
    if problems:
        raise RtpickError("\n".join(problems))
    return checked


# ---------------------------------------------------------------------------------------------------- feeds


def read_inputs(spec: ModelSpec, shapes: Mapping[str, tuple[int, ...]], path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from a file or folder, keyed by input name but not yet checked against the spec.

    .npz (keys are input names), .npy (a one-input model) or a folder of images (a one-input image model).
    Calibration reads this way, then checks each slice it feeds; everything else calls `load_inputs`.
    """
    path = Path(path)
    if not path.exists():
        raise RtpickError(f"input {str(path)!r} does not exist; give an .npz, an .npy or a folder of images")
    if path.is_dir():
        if len(spec.inputs) != 1:
            raise RtpickError(
                f"a folder of images feeds a model with one input, but this one has {spec.input_names()}; "
                "give an .npz with one array per input"
            )
        only = spec.inputs[0]
        return {only.name: load_image_folder(path, only, shapes[only.name])}
    if path.suffix not in (".npz", ".npy"):
        raise RtpickError(f"input {str(path)!r} is not an .npz, an .npy or a folder of images")
    arrays = load_npz(path)
    if "" in arrays:  # an .npy: one unnamed array
        if len(spec.inputs) != 1:
            raise RtpickError(
                f"{path} (an .npy) holds one array but the model has inputs {spec.input_names()}; "
                "give an .npz with one array per input name"
            )
        arrays = {spec.inputs[0].name: arrays[""]}
    return arrays


def load_inputs(spec: ModelSpec, shapes: Mapping[str, tuple[int, ...]], path: str | Path) -> dict[str, np.ndarray]:
    """Feeds from an .npz, an .npy or a folder of images, checked against the spec (see `validate_feeds`)."""
    return validate_feeds(spec.inputs, read_inputs(spec, shapes, path), source=str(path))


def feeds_for(
    spec: ModelSpec,
    shapes: Mapping[str, tuple[int, ...]],
    *,
    seed: int = 0,
    input_path: str | Path | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """The feeds a command runs: the user's (validated) when `input_path` is given, else synthetic ones.

    `shapes` are the resolved input shapes: synthetic feeds take them, an image folder takes its height and
    width from them; loaded arrays keep their own shapes. `ranges` only shapes synthetic data.
    """
    if input_path is not None and str(input_path) != "":
        return load_inputs(spec, shapes, input_path)
    return synthetic_feeds(spec.inputs, shapes, seed=seed, ranges=ranges)


def parse_range(text: str) -> tuple[str, tuple[float, float]]:
    """``name:lo:hi`` -> (name, (lo, hi))."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3:
        raise RtpickError(f"--input-range {text!r} must look like name:lo:hi, e.g. input_ids:0:30522")
    name, low, high = parts
    try:
        lo, hi = float(low), float(high)
    except ValueError as exc:
        raise RtpickError(f"--input-range {text!r}: lo and hi must be numbers") from exc
    if not lo < hi:
        raise RtpickError(f"--input-range {text!r}: lo must be below hi")
    return name, (lo, hi)


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``name:1x3x224x224`` -> (name, (1, 3, 224, 224))."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise RtpickError(f"--shape {text!r} must look like name:1x3x224x224")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError as exc:
        raise RtpickError(f"--shape {text!r}: dims must be whole numbers separated by x") from exc
    return name, shape
