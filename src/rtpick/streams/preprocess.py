"""Declared preprocessing: a decoded frame (H x W x 3 uint8 RGB) to one row of the model's input.

Why declared, never hard-coded: every model wants its own resize, colour order, scale, mean/std and layout, and
a wrong guess gives plausible-looking garbage rather than an error. The spec is written out
(``resize=224,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw,color=rgb``, or the same
keys as a ``preprocess`` object in deploy.json) and checked against the model's input before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from rtpick.errors import RtpickError

KEYS = ("resize", "scale", "mean", "std", "layout", "color", "input")
COLORS = {"rgb": 3, "bgr": 3, "gray": 1}
HELP = ("resize=H[xW],scale=1/255,mean=a/b/c,std=a/b/c,layout=nchw|nhwc,color=rgb|bgr|gray[,input=NAME]")


def _number(key: str, text: str) -> float:
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as exc:
        raise RtpickError(f"--preprocess {key}={text!r} is not a number (give 0.5 or 1/255)") from exc


def _numbers(key: str, value: Any) -> tuple[float, ...]:
    """Per-channel values: a/b/c in text, or a list in a deploy file."""
    parts = list(value) if isinstance(value, list | tuple) else str(value).split("/")
    return tuple(_number(key, str(p)) for p in parts)


@dataclass(frozen=True)
class Preprocess:
    """What to do to each frame; `check(spec)` fits it to one model input and returns the row shape."""

    height: int | None = None
    width: int | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None  # None: nhwc where only the last dim is a channel count (1 or 3), else nchw
    color: str | None = None  # None: gray for a one-channel model, else rgb (`fit` settles it)
    input: str | None = None

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | None) -> Preprocess:
        """From ``key=value,...`` text or a deploy file's ``preprocess`` object; one line on any mistake."""
        if spec is None or spec == "":
            return cls()
        if isinstance(spec, str):
            items: dict[str, Any] = {}
            for part in spec.split(","):
                key, sep, value = part.partition("=")
                if not sep or not value.strip():
                    raise RtpickError(f"--preprocess: {part!r} is not key=value; expected {HELP}")
                items[key.strip()] = value.strip()
        elif isinstance(spec, Mapping):
            items = dict(spec)
        else:
            raise RtpickError(f"a preprocess spec must be text or an object, not {type(spec).__name__}")
        unknown = sorted(set(items) - set(KEYS))
        if unknown:
            raise RtpickError(f"--preprocess has no key {unknown[0]!r}; expected {HELP}")
        height = width = None
        if "resize" in items:
            dims = str(items["resize"]).lower().split("x")
            try:
                sizes = [int(d) for d in dims]
            except ValueError as exc:
                raise RtpickError(f"--preprocess resize={items['resize']!r} must be H or HxW in pixels") from exc
            if len(sizes) not in (1, 2) or min(sizes) < 1:
                raise RtpickError(f"--preprocess resize={items['resize']!r} must be H or HxW, positive")
            height, width = sizes[0], sizes[-1]
        layout = None if items.get("layout") is None else str(items["layout"]).lower()
        color = None if items.get("color") is None else str(items["color"]).lower()
        if layout is not None and layout not in ("nchw", "nhwc"):
            raise RtpickError(f"--preprocess layout={layout!r} must be nchw or nhwc")
        if color is not None and color not in COLORS:
            raise RtpickError(f"--preprocess color={color!r} must be one of {', '.join(COLORS)}")
        scale = _number("scale", str(items["scale"])) if "scale" in items else 1.0
        mean = _numbers("mean", items["mean"]) if "mean" in items else (0.0,)
        std = _numbers("std", items["std"]) if "std" in items else (1.0,)
        if any(s == 0 for s in std):
            raise RtpickError("--preprocess std cannot contain 0")
        for key, values in (("mean", mean), ("std", std)):
            if color is not None and len(values) not in (1, COLORS[color]):
                raise RtpickError(f"--preprocess {key} has {len(values)} values; color={color} has "
                                  f"{COLORS[color]} channel(s)")
        return cls(height, width, scale, mean, std, layout, color, items.get("input"))

    def to_dict(self) -> dict[str, Any]:
        return {"resize": f"{self.height}x{self.width}" if self.height else None, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "layout": self.layout, "color": self.color,
                "input": self.input}

    def fit(self, inputs: tuple[Any, ...]) -> tuple[Preprocess, str, tuple[int, ...], str]:
        """This spec fitted to the model: (spec with the size filled in, input name, row shape, dtype).

        The model must take one image input of rank 4 in the declared layout, with the declared channel count;
        fixed spatial dims must equal the resize (or give it), symbolic ones need a resize.
        """
        images = [t for t in inputs if self.input in (None, t.name)]
        if self.input is not None and not images:
            raise RtpickError(f"--preprocess input={self.input!r}: the model's inputs are "
                              f"{[t.name for t in inputs]}")
        if len(images) != 1:
            raise RtpickError(f"the model has {len(inputs)} inputs; streams feed one image input "
                              "(name it with --preprocess input=NAME)")
        spec = images[0]
        if len(spec.shape) != 4:
            raise RtpickError(f"the model's input {spec.describe()} is not an image batch (rank 4); "
                              "streams cannot feed it")
        # a TensorFlow-style [N, H, W, 3] input says so by its shape; nothing else is guessed
        layout = self.layout or ("nhwc" if spec.shape[3] in (1, 3) and spec.shape[1] not in (1, 3) else "nchw")
        channels, height, width = ((spec.shape[1], spec.shape[2], spec.shape[3]) if layout == "nchw"
                                   else (spec.shape[3], spec.shape[1], spec.shape[2]))
        # one channel can only be luma; between rgb and bgr nothing in the model tells, so rgb unless declared
        color = self.color or ("gray" if channels == 1 else "rgb")
        want = COLORS[color]
        if isinstance(channels, int) and channels != want:
            raise RtpickError(f"the model's input {spec.describe()} has {channels} channel(s) in layout "
                              f"{layout}, but color={color} gives {want}; fix --preprocess")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, want):
                raise RtpickError(f"--preprocess {key} has {len(values)} values; the model's input has {want} "
                                  "channel(s)")
        h, w = self.height, self.width
        for name, dim, mine in (("height", height, h), ("width", width, w)):
            if isinstance(dim, int) and mine is not None and dim != mine:
                raise RtpickError(f"--preprocess resize gives {name} {mine}, but the model's input "
                                  f"{spec.describe()} wants {dim}")
            if not isinstance(dim, int) and mine is None:
                raise RtpickError(f"the model's input {spec.describe()} has a free {name}: give "
                                  "--preprocess resize=H[xW]")
        h = h if h is not None else int(height)
        w = w if w is not None else int(width)
        if spec.dtype not in ("float32", "float16", "uint8"):
            raise RtpickError(f"the model's input {spec.describe()} is {spec.dtype}; streams feed float32, "
                              "float16 or uint8 images")
        row = (want, h, w) if layout == "nchw" else (h, w, want)
        fitted = Preprocess(h, w, self.scale, self.mean, self.std, layout, color, spec.name)
        return fitted, spec.name, row, spec.dtype

    def apply(self, frame: np.ndarray, dtype: str = "float32", out: np.ndarray | None = None) -> np.ndarray:
        """One H x W x 3 uint8 RGB frame -> one row of the model input (resized, coloured, scaled, laid out)."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise RtpickError(f"a frame must be H x W x 3 RGB, not shape {list(frame.shape)}")
        if self.height is not None and frame.shape[:2] != (self.height, self.width):
            frame = resize_bilinear(frame, self.height, int(self.width or self.height))
        pixels = frame.astype(np.float32)
        if self.color == "bgr":
            pixels = pixels[:, :, ::-1]
        elif self.color == "gray":  # ITU-R BT.601 luma, as video decoders convert
            pixels = (pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
        pixels = (pixels * np.float32(self.scale) - np.asarray(self.mean, np.float32)) / np.asarray(self.std,
                                                                                                      np.float32)
        if self.layout != "nhwc":
            pixels = pixels.transpose(2, 0, 1)
        if dtype == "uint8":
            pixels = np.clip(np.rint(pixels), 0, 255)
        if out is not None:
            out[...] = pixels
            return out
        return np.ascontiguousarray(pixels, dtype=dtype)


def resize_bilinear(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an H x W x C image (half-pixel centres, as OpenCV and PIL do), uint8 in and out."""
    src_h, src_w = frame.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * src_h / height - 0.5, 0, src_h - 1)
    xs = np.clip((np.arange(width) + 0.5) * src_w / width - 0.5, 0, src_w - 1)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, src_h - 1), np.minimum(x0 + 1, src_w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = frame.astype(np.float32)
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bottom = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)
