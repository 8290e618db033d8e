"""Camera slots for the scheduler: one bounded slot per camera, latest frame wins, bookkeeping as arrays.

`CameraStats` counts what happened to every camera's frames (in, processed, on time, late, dropped because the
slot was full, dropped because it could no longer make its deadline) and keeps processed frames' latencies as a
few arrays per batch, so summaries per camera come from one sort, not a loop over frames.

`SyntheticCameras` is the multistream benchmark's policy: `cameras` cameras at `fps` with seeded random phases,
whose arrivals are *computed* (frame k of camera c is captured at ``start + phase_c + k / fps``), never
materialised as objects. A camera's slot is the range of its frame indices ``[next_take, arrived)``; when more
than `queue_frames` are pending, the oldest are dropped (`dropped_queue`), so a slot holds the newest frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.scheduler import Policy, Taken
from rtpick.perf.staging import synthetic_batch

DEFAULT_QUEUE_FRAMES = 2
LATENCY_SAMPLES = 1_000_000  # latencies kept exactly; beyond, a uniform reservoir sample of this size
RESERVOIR_SEED = 7


class CameraStats:
    """Per-camera counters and the latencies of processed frames (seconds, from scheduled capture)."""

    def __init__(self, cameras: int) -> None:
        self.cameras = cameras
        zeros = lambda: np.zeros(cameras, dtype=np.int64)  # noqa: E731
        self.frames_in, self.processed, self.on_time = zeros(), zeros(), zeros()
        self.dropped_queue, self.dropped_late = zeros(), zeros()
        # latencies of processed frames: every one up to `LATENCY_SAMPLES`, then a uniform reservoir sample of
        # that size (so a stream processor that runs for days holds a fixed amount, not one float per frame)
        self._cams = np.zeros(1024, dtype=np.int64)
        self._lat = np.zeros(1024)
        self._kept = 0
        self._seen = 0
        self._rng = np.random.default_rng(RESERVOIR_SEED)

    def count(self, counter: np.ndarray, cams: np.ndarray) -> None:
        if cams.size:
            counter += np.bincount(cams, minlength=self.cameras)

    def completed(self, cams: np.ndarray, capture: np.ndarray, deadline: np.ndarray, done: float) -> None:
        self.count(self.processed, cams)
        self.count(self.on_time, cams[done <= deadline])
        latency = done - capture
        take = min(LATENCY_SAMPLES - self._kept, cams.size)
        if take > 0:
            if self._kept + take > self._lat.size:  # grow by doubling, up to the cap: amortised O(1) per frame
                size = min(LATENCY_SAMPLES, max(2 * self._lat.size, self._kept + take))
                self._cams = np.concatenate((self._cams[:self._kept], np.zeros(size - self._kept, np.int64)))
                self._lat = np.concatenate((self._lat[:self._kept], np.zeros(size - self._kept)))
            self._cams[self._kept:self._kept + take] = cams[:take]
            self._lat[self._kept:self._kept + take] = latency[:take]
            self._kept += take
        if take < cams.size:  # Algorithm R, vectorised: item i replaces a random slot with probability cap / i
            index = self._seen + take + np.arange(cams.size - take)
            slot = (self._rng.random(index.size) * (index + 1)).astype(np.int64)
            keep = slot < LATENCY_SAMPLES
            self._cams[slot[keep]] = cams[take:][keep]
            self._lat[slot[keep]] = latency[take:][keep]
        self._seen += cams.size

    @property
    def sampled(self) -> bool:
        """True when percentiles come from a reservoir sample rather than every frame."""
        return self._seen > LATENCY_SAMPLES

    def latencies(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cams[:self._kept], self._lat[:self._kept]

    def per_camera(self) -> list[dict[str, Any]]:
        """One dict per camera: frames in, processed, on time, late, dropped (queue, late), on-time %, p50/p99."""
        cams, lat = self.latencies()
        p50, p99 = grouped_percentiles(cams, lat, self.cameras, (50, 99))
        rows = []
        for c in range(self.cameras):
            rows.append({"camera": c, **_counts(int(self.frames_in[c]), int(self.processed[c]),
                                                int(self.on_time[c]), int(self.dropped_queue[c]),
                                                int(self.dropped_late[c]), p50[c], p99[c])})
        return rows

    def total(self) -> dict[str, Any]:
        _, lat = self.latencies()
        p50, p99 = (float(np.percentile(lat, q) * 1e3) if lat.size else None for q in (50, 99))
        out = _counts(int(self.frames_in.sum()), int(self.processed.sum()), int(self.on_time.sum()),
                      int(self.dropped_queue.sum()), int(self.dropped_late.sum()), p50, p99)
        out["latency_sampled"] = self.sampled  # percentiles from a uniform sample of LATENCY_SAMPLES frames
        return out


def _counts(frames: int, processed: int, on_time: int, dropped_queue: int, dropped_late: int,
            p50: float | None, p99: float | None) -> dict[str, Any]:
    return {
        "frames": frames, "processed": processed, "on_time": on_time, "late": processed - on_time,
        "dropped": frames - processed, "dropped_queue": dropped_queue, "dropped_late": dropped_late,
        "on_time_fraction": on_time / frames if frames else 0.0, "p50_ms": p50, "p99_ms": p99,
    }


def grouped_percentiles(groups: np.ndarray, values: np.ndarray, count: int,
                        qs: tuple[float, ...]) -> list[list[float | None]]:
    """Percentiles (linear interpolation, as np.percentile) of `values` per group 0..count-1, in ms."""
    out: list[list[float | None]] = [[None] * count for _ in qs]
    if values.size == 0:
        return out
    order = np.lexsort((values, groups))
    sorted_values = values[order] * 1e3
    sizes = np.bincount(groups, minlength=count)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    present = np.flatnonzero(sizes)
    for i, q in enumerate(qs):
        pos = starts[present] + (sizes[present] - 1) * (q / 100.0)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, starts[present] + sizes[present] - 1)
        frac = pos - low
        result = sorted_values[low] * (1 - frac) + sorted_values[high] * frac
        for camera, value in zip(present, result):
            out[i][camera] = float(value)
    return out


def pick_earliest(capture: np.ndarray, deadline: np.ndarray, max_rows: int,
                  finish_at: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates go, and which are too late to try at all.

    Late: the deadline falls before even a batch of one would finish. Of the rest, the batch is the largest n
    (up to `max_rows`) for which n candidates can still make it when a batch of n finishes — so a slow model
    under overload runs smaller batches that make their deadlines instead of full ones that miss them — and the
    n earliest of those go. `finish_at` takes an array of batch sizes. Returns (indices taken, earliest first;
    boolean mask of late candidates).
    """
    def ends(sizes: np.ndarray) -> np.ndarray:
        out = np.asarray(finish_at(sizes), dtype=np.float64)
        return out if out.shape == sizes.shape else np.full(sizes.shape, float(out))

    late = deadline < ends(np.array([1]))[0]
    alive = np.flatnonzero(~late)
    if alive.size == 0:
        return alive, late
    m = min(alive.size, max_rows)
    latest = -np.partition(-deadline[alive], m - 1)[:m] if m < alive.size else deadline[alive]
    latest = np.sort(latest)[::-1][:m]  # the m latest deadlines, latest first: the n-th is the n-th latest
    fits = latest >= ends(np.arange(1, m + 1))
    n = m if fits.all() else int(np.argmin(fits))  # a prefix holds: deadlines fall and batch ends rise with n
    eligible = alive[deadline[alive] >= ends(np.array([n]))[0]]
    if eligible.size > n:
        eligible = eligible[np.argpartition(deadline[eligible], n - 1)[:n]]
    return eligible[np.lexsort((capture[eligible], deadline[eligible]))], late


def skipped_older(cams: np.ndarray, index: np.ndarray, chosen: np.ndarray, late: np.ndarray,
                  cameras: int) -> np.ndarray:
    """Frames left behind by a newer frame of the same camera in this batch: they count as late, so that each
    camera's slot stays a run of consecutive frames (and a tracker never receives a frame out of order)."""
    newest = np.full(cameras, -1, dtype=np.int64)
    np.maximum.at(newest, cams[chosen], index[chosen])
    mask = ~late & (index < newest[cams])
    mask[chosen] = False
    return mask


class SyntheticCameras(Policy):
    """`cameras` cameras at `fps` for `frames_each` frames each, arrivals computed from seeded phases."""

    def __init__(self, cameras: int, fps: float, frames_each: int, deadline_s: float, *, start: float,
                 queue_frames: int = DEFAULT_QUEUE_FRAMES, seed: int = 0,
                 feeds: Mapping[str, Any] | None = None) -> None:
        if cameras < 1:
            raise RtpickError(f"--streams must be at least 1, not {cameras}")
        if not fps > 0:
            raise RtpickError(f"--fps must be a positive number of frames per second, not {fps}")
        if queue_frames < 1:
            raise RtpickError(f"--queue-frames must be at least 1, not {queue_frames}")
        self.cameras, self.period, self.frames_each = cameras, 1.0 / fps, frames_each
        self.deadline_s, self.depth = deadline_s, queue_frames
        rng = np.random.default_rng(seed)
        self.first = start + rng.uniform(0.0, self.period, size=cameras)
        self.arrived = np.zeros(cameras, dtype=np.int64)
        self.next_take = np.zeros(cameras, dtype=np.int64)
        self.stats = CameraStats(cameras)
        self.feeds = feeds
        self._ids = np.arange(cameras)
        self._ready = 0
        self._oldest: float | None = None

    def poll(self, now: float) -> None:
        self._oldest = None
        # (+1e-9 of a period: a wait that ends exactly at an arrival time must see that frame despite rounding)
        arrived = np.floor((now - self.first) / self.period + 1e-9).astype(np.int64) + 1
        arrived = np.minimum(np.maximum(arrived, 0), self.frames_each)  # (np.clip costs ~10 us more a call)
        self.arrived = arrived
        pending = arrived - self.next_take
        over = pending - self.depth
        if over.max() > 0:
            over = np.maximum(over, 0)
            self.stats.dropped_queue += over
            self.next_take += over
            pending -= over
        self._ready = int(pending.sum())

    def rows_ready(self) -> int:
        return self._ready

    def _pending(self) -> np.ndarray:
        return np.flatnonzero(self.arrived > self.next_take)

    def oldest_arrival(self) -> float:
        if self._oldest is None:  # cached until the slots change (poll or take)
            cams = self._pending()
            self._oldest = (float((self.first[cams] + self.next_take[cams] * self.period).min()) if cams.size
                            else math.inf)
        return self._oldest

    def earliest_deadline(self) -> float:
        return self.oldest_arrival() + self.deadline_s

    def next_arrival(self) -> float:
        open_ = self.arrived < self.frames_each
        if not open_.any():
            return math.inf
        return float((self.first[open_] + self.arrived[open_] * self.period).min())

    def fill_time(self, rows: int) -> float:
        need = rows - self._ready
        if need <= 0:
            return -math.inf
        room = np.minimum(self.depth - (self.arrived - self.next_take), self.frames_each - self.arrived)
        cams = np.flatnonzero(room > 0)
        if room[cams].sum() < need:
            return math.inf  # the slots cannot hold that many: only the window or a deadline sends the batch
        steps = np.arange(int(room[cams].max()))
        times = self.first[cams, None] + (self.arrived[cams, None] + steps[None, :]) * self.period
        times = times[steps[None, :] < room[cams, None]]
        return float(np.partition(times, need - 1)[need - 1])

    def finished(self, now: float) -> bool:
        return bool((self.arrived >= self.frames_each).all()) and self._ready == 0

    def take(self, now: float, max_rows: int, finish_at: Callable[[int], float]) -> Taken | None:
        self._oldest = None
        pending = self.arrived - self.next_take
        cams = np.repeat(self._ids, pending)
        if cams.size == 0:
            return None
        # frame indices: each camera's pending range, in order
        offsets = np.arange(cams.size) - np.repeat(np.cumsum(pending) - pending, pending)
        index = self.next_take[cams] + offsets
        capture = self.first[cams] + index * self.period
        deadline = capture + self.deadline_s
        chosen, late = pick_earliest(capture, deadline, max_rows, finish_at)
        late |= skipped_older(cams, index, chosen, late, self.cameras)
        self.stats.count(self.stats.dropped_late, cams[late])
        # within a camera, late frames are its oldest and chosen ones the next oldest: a prefix of its slot
        gone = np.bincount(cams[late], minlength=self.cameras) + np.bincount(cams[chosen], minlength=self.cameras)
        self.next_take += gone
        self._ready -= int(gone.sum())
        if chosen.size == 0:
            return None
        return Taken(int(chosen.size), capture[chosen], deadline[chosen], (cams[chosen], index[chosen]))

    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        return synthetic_batch(self.feeds, size, staging, "synthetic cameras")

    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        self.stats.completed(taken.keys[0], taken.arrival, taken.deadline, done)

    def close_counts(self) -> None:
        """At the end of a run: frames in = frames captured so far (those still in a slot count as dropped)."""
        self.stats.frames_in[:] = self.arrived
        self.stats.dropped_queue += self.arrived - self.next_take
        self.next_take[:] = self.arrived
