"""A small test video written with PyAV, and the reference decode of it (what a stream must have processed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_video(path: Path, frames: int = 45, fps: int = 30, size: int = 32, seed: int = 0) -> Path:
    """`frames` random RGB frames of size x size, MPEG-4 in an .mp4, at `fps`."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decode(path: Path, size: int) -> list[np.ndarray]:
    """Every frame of `path` as size x size RGB uint8, decoded as the stream processor decodes it."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(width=size, height=size, format="rgb24") for f in container.decode(video=0)]
