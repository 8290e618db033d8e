"""Camera slots for decoded frames pushed by decoder threads: the scheduler's policy for `rtpick streams`.

Each camera owns `queue_frames` preallocated rows of the model's input; a decoder thread preprocesses each frame
straight into its camera's next row (`push`). When the slot is full the oldest frame is overwritten (latest
frame wins, counted `dropped_queue`), so memory is cameras x queue_frames x one input row, whatever the sources
do. `take` picks the oldest frames that can still make their deadline and copies them into the scheduler's
staging rows while it holds the lock, so a later push can never overwrite a frame that is about to run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.camera_slots import CameraStats, pick_earliest, skipped_older
from rtpick.perf.scheduler import Policy, Taken


class FrameSlots(Policy):
    """`cameras` rings of `depth` rows of one input (`name`, `row` shape, `dtype`), filled by `push`."""

    def __init__(self, cameras: int, depth: int, name: str, row: tuple[int, ...], dtype: str,
                 deadline_s: np.ndarray, convert: Callable[[np.ndarray, np.ndarray], None], staging: Any,
                 wake: Callable[[], None] = lambda: None) -> None:
        if depth < 1:
            raise RtpickError(f"--queue-frames must be at least 1, not {depth}")
        self.cameras, self.depth, self.name = cameras, depth, name
        self.rows = np.zeros((cameras, depth, *row), dtype=dtype)
        self.capture = np.zeros((cameras, depth))
        self.index = np.zeros((cameras, depth), dtype=np.int64)
        self.head = np.zeros(cameras, dtype=np.int64)  # ring position of the oldest waiting frame
        self.count = np.zeros(cameras, dtype=np.int64)  # frames waiting
        self.deadline_s = np.broadcast_to(np.asarray(deadline_s, dtype=np.float64), (cameras,)).copy()
        self.convert, self.staging, self.wake = convert, staging, wake
        self.stats = CameraStats(cameras)
        self.open = np.ones(cameras, dtype=bool)  # False once a source has ended for good
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when `take` frees rows
        self._ready = 0

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes)

    # ---------------------------------------------------------------------------- decoder threads' side

    def push(self, camera: int, index: int, capture: float, frame: np.ndarray) -> None:
        """A decoded frame: preprocess it into the camera's next row, replacing the oldest when full."""
        with self._lock:
            if self.count[camera] == self.depth:
                self.head[camera] = (self.head[camera] + 1) % self.depth
                self.count[camera] -= 1
                self.stats.dropped_queue[camera] += 1
                self._ready -= 1
            pos = (self.head[camera] + self.count[camera]) % self.depth
            self.convert(frame, self.rows[camera, pos])
            self.capture[camera, pos] = capture
            self.index[camera, pos] = index
            self.count[camera] += 1
            self.stats.frames_in[camera] += 1
            self._ready += 1
        self.wake()

    def wait_for_room(self, camera: int, stop: threading.Event, poll_s: float = 0.05) -> None:
        """Block until `camera` has a free row or `stop` is set.

        Why: a file read as fast as possible has no frame rate to keep up with, so its decoder waits for the
        model instead of overwriting frames it decoded (it dropped most of a short clip before). Live sources
        never wait: a camera does not pause, and the latest frame must win.
        """
        with self._room:
            while self.count[camera] >= self.depth and not stop.is_set():
                self._room.wait(poll_s)

    def close_camera(self, camera: int) -> None:
        self.open[camera] = False
        self.wake()

    # ---------------------------------------------------------------------------- the scheduler's side

    def poll(self, now: float) -> None:
        """Nothing to compute: decoder threads push."""

    def rows_ready(self) -> int:
        return self._ready

    def _pending(self) -> tuple[np.ndarray, np.ndarray]:
        cams = np.repeat(np.arange(self.cameras), self.count)
        offsets = np.arange(cams.size) - np.repeat(np.cumsum(self.count) - self.count, self.count)
        return cams, (self.head[cams] + offsets) % self.depth

    def oldest_arrival(self) -> float:
        with self._lock:
            cams = np.flatnonzero(self.count)
            return float(self.capture[cams, self.head[cams]].min()) if cams.size else math.inf

    def earliest_deadline(self) -> float:
        with self._lock:
            cams = np.flatnonzero(self.count)
            if not cams.size:
                return math.inf
            return float((self.capture[cams, self.head[cams]] + self.deadline_s[cams]).min())

    def finished(self, now: float) -> bool:
        return not self.open.any() and self._ready == 0

    def take(self, now: float, max_rows: int, finish_at: Callable[[int], float]) -> Taken | None:
        with self._lock:
            cams, pos = self._pending()
            if cams.size == 0:
                return None
            capture = self.capture[cams, pos]
            deadline = capture + self.deadline_s[cams]
            chosen, late = pick_earliest(capture, deadline, max_rows, finish_at)
            late |= skipped_older(cams, self.index[cams, pos], chosen, late, self.cameras)
            self.stats.count(self.stats.dropped_late, cams[late])
            if chosen.size:
                target = self.staging.host(self.name)
                target[:chosen.size] = self.rows[cams[chosen], pos[chosen]]
            gone = np.bincount(cams[late], minlength=self.cameras) + np.bincount(cams[chosen],
                                                                                 minlength=self.cameras)
            self.head = (self.head + gone) % self.depth
            self.count -= gone
            self._ready -= int(gone.sum())
            self._room.notify_all()
            if not chosen.size:
                return None
            return Taken(int(chosen.size), capture[chosen], deadline[chosen],
                         (cams[chosen], self.index[cams[chosen], pos[chosen]].copy()))

    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        return staging.stage(size)  # the rows were copied in by `take`, under the lock

    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        self.stats.completed(taken.keys[0], taken.arrival, taken.deadline, done)

    def close_counts(self) -> None:
        """At the end: frames still waiting count as dropped (queue)."""
        with self._lock:
            self.stats.dropped_queue += self.count
            self.count[:] = 0
            self._ready = 0
