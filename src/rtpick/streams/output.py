"""Per-frame results as JSON lines: one line per processed frame, written as batches finish.

Why a temporary file renamed at the end: a reader never sees a half-written results file under its final name,
and the name is never opened through a link someone planted (`rtpick.files` rules). Ctrl-C and SIGTERM reach
`close()`, which flushes and renames what was written so far.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rtpick.files import check_writable, current_umask
from rtpick.streams.processor import StreamBatch

SUMMARY_KEYS = ("mean", "min", "max")


def frame_records(batch: StreamBatch, labels: list[str], start: float, top_k: int) -> list[dict[str, Any]]:
    """One dict per row: camera, source, frame index, capture (s since start), latency, on time, and either the
    top-k (class, score) pairs of a 2-D output (class scores) or a summary of each raw output."""
    rows = len(batch.cameras)
    per_output: dict[str, list[Any]] = {}
    for name, value in batch.outputs.items():
        array = np.asarray(value)
        if array.ndim == 2 and array.shape[1] > 1 and top_k > 0:
            k = min(top_k, array.shape[1])
            idx = np.argpartition(-array, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(array, idx, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            idx, scores = np.take_along_axis(idx, order, 1), np.take_along_axis(scores, order, 1)
            per_output[name] = [{"top_k": [[int(i), float(s)] for i, s in zip(idx[r], scores[r])]}
                                for r in range(rows)]
        else:
            flat = array.reshape(rows, -1).astype(np.float64)
            stats = np.stack([flat.mean(1), flat.min(1), flat.max(1)], 1) if flat.shape[1] else np.zeros((rows, 3))
            per_output[name] = [{"shape": list(array.shape[1:]), **dict(zip(SUMMARY_KEYS, map(float, stats[r])))}
                                for r in range(rows)]
    records = []
    for r in range(rows):
        camera = int(batch.cameras[r])
        records.append({
            "camera": camera, "source": labels[camera], "frame": int(batch.frames[r]),
            "capture_s": round(float(batch.capture[r] - start), 6),
            "latency_ms": round(float(batch.latency_s[r] * 1e3), 4), "on_time": bool(batch.on_time[r]),
            "outputs": {name: rows_[r] for name, rows_ in per_output.items()},
        })
    return records


class JsonLines:
    """Append JSON lines to a temporary file beside `path` (or to stdout); `close()` renames it into place."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.lines = 0
        self._tmp: str | None = None
        self._handle: TextIO
        if self.path is None:
            self._handle = sys.stdout
            return
        check_writable(self.path, "per-frame results")
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name[:200]}.", suffix=".tmp",
                                         dir=self.path.parent if str(self.path.parent) else ".")
        os.fchmod(fd, 0o666 & ~current_umask())
        self._handle = os.fdopen(fd, "w", buffering=1 << 16)

    def write(self, records: list[dict[str, Any]]) -> None:
        self._handle.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        self.lines += len(records)

    def close(self) -> None:
        if self._tmp is None:
            self._handle.flush()
            return
        handle, tmp, self._tmp = self._handle, self._tmp, None
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp, self.path)  # type: ignore[arg-type]
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
