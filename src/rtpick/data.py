"""Feeds for a model: synthetic (seeded, in sensible ranges), from .npz/.npy files, or from an image folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rtpick.errors import RtpickError
from rtpick.model import TensorSpec

# Integer inputs are usually token ids or indices: keep them small so any embedding table accepts them.
DEFAULT_INT_HIGH = 100


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
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    feeds = {}
    for spec in inputs:
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        low, high = ranges.get(spec.name, (0.0, 1.0 if dtype.kind == "f" else DEFAULT_INT_HIGH))
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(low, high, size=shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(int(low), max(int(high), int(low) + 1), size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise RtpickError(f"cannot make synthetic data for input {spec.name!r} of dtype {spec.dtype}")
    return feeds


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
