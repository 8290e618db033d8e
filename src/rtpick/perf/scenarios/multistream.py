"""Multistream: N cameras at F fps, frames batched across cameras, each due within its deadline.

The measurement functions (`multistream`, `_frame_counts`, `find_max_streams`) are kept as they were when
this package was split out; the streams work moves their bodies onto the per-batch scheduler
(`rtpick.perf.scheduler`). The contract around them (params, measurement kinds, headline) is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.scenarios.base import (
    NUMBER,
    OPTIONAL_NUMBER,
    Feeds,
    Headline,
    Measurement,
    Params,
    Scenario,
    flag,
    number,
)
from rtpick.perf.scenarios.closedloop import batch_of, duration_field
from rtpick.perf.scenarios.openloop import OpenLoop as _OpenLoop
from rtpick.perf.scenarios.openloop import Query as _Query
from rtpick.perf.scenarios.openloop import warm_batches as _warm_batches
from rtpick.perf.scenarios.openloop import warm_text as _warm_text
from rtpick.perf.scenarios.server import queue_delay_field
from rtpick.runtimes.base import Session

ON_TIME_NEEDED = 0.99  # the fraction of frames on time a run must keep to "meet" its cameras


@dataclass
class MultistreamParams(Params):
    """N cameras (--streams) at --fps each, or a search for the most cameras (--find-max-streams)."""

    streams: int | None = flag("--streams", "multistream: number of cameras.", minimum=1)
    fps: float | None = flag("--fps", "multistream: frames per second per camera.", check="positive")
    deadline_ms: float | None = flag("--deadline-ms", "multistream: frame deadline (default 1/fps).",
                                     check="positive")
    find_max_streams: bool = flag("--find-max-streams",
                                  "multistream: the most cameras keeping 99% of frames on time.", False)
    max_queue_delay_ms: float | None = queue_delay_field()
    duration_s: float | None = duration_field()
    max_batch: int | None = flag(None, "The batcher's largest batch (the configuration's batch).", minimum=1)
    seed: int = flag(None, "Seed of the cameras' phases.", 0)

    def check(self) -> None:
        if self.fps is None:
            raise RtpickError("the multistream scenario needs --fps F (frames per second per camera)")
        if not self.find_max_streams and self.streams is None:
            raise RtpickError("the multistream scenario needs --streams N (N >= 1), or --find-max-streams")


def multistream(
    session: Session,
    feeds: Feeds,
    *,
    streams: int,
    fps: float,
    duration_s: float,
    deadline_ms: float | None = None,
    max_batch: int | None = None,
    max_queue_delay_s: float | None = None,
    seed: int = 0,
    warm: bool = True,
) -> dict[str, Any]:
    """`streams` cameras at `fps` each, frames batched across cameras; each frame due within its deadline.

    Cameras run at a fixed rate with random (seeded) phases, as unsynchronised cameras do. A frame still queued
    when its deadline has passed is dropped (a late frame is useless to a tracker); a frame processed after its
    deadline is late; the rest are on time.
    """
    if streams < 1:
        raise RtpickError(f"--streams must be at least 1, not {streams}")
    if not fps > 0:
        raise RtpickError(f"--fps must be a positive number of frames per second, not {fps}")
    if deadline_ms is not None and not deadline_ms > 0:
        raise RtpickError(f"--deadline-ms must be positive, not {deadline_ms}")
    if not duration_s > 0:
        raise RtpickError(f"the duration must be positive, not {duration_s}")
    deadline_s = (deadline_ms / 1e3) if deadline_ms is not None else 1.0 / fps
    max_batch = min(max_batch or batch_of(feeds), streams, batch_of(feeds))
    if max_queue_delay_s is None:
        max_queue_delay_s = deadline_s / 4
    warm_s = _warm_batches(session, feeds, max_batch) if warm else None
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0.0, 1.0 / fps, size=streams)
    frames_each = max(1, int(duration_s * fps))
    schedule = sorted(
        (float(phases[c] + k / fps), c) for c in range(streams) for k in range(frames_each)
    )
    offsets = [t for t, _ in schedule]
    queries = [_Query(0.0, camera=c, due=deadline_s) for _, c in schedule]
    loop = _OpenLoop(session, feeds, max_batch, max_queue_delay_s, drop_stale=True)
    drain = max(deadline_s * 2, 1.0)
    t0, batches = loop.drive(offsets, queries, drain)
    per_camera = []
    for camera in range(streams):
        mine = [q for q in queries if q.camera == camera]
        per_camera.append({"camera": camera, **_frame_counts(mine)})
    total = _frame_counts(queries)
    return {
        "scenario": "multistream",
        "streams": streams,
        "fps": fps,
        "deadline_ms": deadline_s * 1e3,
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_s * 1e3,
        "mean_batch": float(np.mean([b.size for b in batches])) if batches else 0.0,
        "duration_s": duration_s,
        "total": total,
        "per_camera": per_camera,
        "meets": total["on_time_fraction"] >= 0.99,
        "batch_warmup_s": warm_s,
        "method": (
            f"{_warm_text(max_batch, warm_s)}; "
            f"{streams} cameras x {fps:g} fps for {duration_s:g} s ({len(queries):,} frames, seeded random phases); "
            f"deadline {deadline_s * 1e3:g} ms from each frame's scheduled capture; frames batched across cameras "
            f"(max batch {max_batch}, max queue delay {max_queue_delay_s * 1e3:g} ms); a frame still queued past "
            "its deadline is dropped; latency on the host clock after synchronize"
        ),
    }


def _frame_counts(queries: list[_Query]) -> dict[str, Any]:
    processed = [q for q in queries if q.status == "done"]
    late = sum(q.done is not None and q.done > q.due for q in processed)
    dropped = len(queries) - len(processed)
    on_time = len(processed) - late
    lat = [q.done - q.scheduled for q in processed if q.done is not None]
    return {
        "frames": len(queries),
        "processed": len(processed),
        "on_time": on_time,
        "late": late,
        "dropped": dropped,
        "on_time_fraction": on_time / len(queries) if queries else 0.0,
        "p99_ms": float(np.percentile(np.asarray(lat) * 1e3, 99)) if lat else None,
        "p50_ms": float(np.percentile(np.asarray(lat) * 1e3, 50)) if lat else None,
    }


def find_max_streams(
    session: Session,
    feeds: Feeds,
    *,
    fps: float,
    duration_s: float,
    deadline_ms: float | None = None,
    max_batch: int | None = None,
    limit: int = 1024,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The most cameras at `fps` that keep 99% of frames on time: doubling, then bisection."""
    trials: dict[int, dict[str, Any]] = {}
    # Trials with more cameras form larger batches: warm every size any trial can form, once, up front.
    warm_s = _warm_batches(session, feeds, min(max_batch or batch_of(feeds), batch_of(feeds)))

    def trial(n: int) -> bool:
        result = multistream(session, feeds, streams=n, fps=fps, duration_s=duration_s,
                             deadline_ms=deadline_ms, max_batch=max_batch, seed=n, warm=False)
        trials[n] = result
        if progress is not None:
            progress(f"{n} cameras: {result['total']['on_time_fraction']:.1%} frames on time")
        return bool(result["meets"])

    best = 0
    n = 1
    while n <= limit and trial(n):
        best, n = n, n * 2
    high = min(n, limit + 1)
    while high - best > 1 and best > 0:
        mid = (best + high) // 2
        if trial(mid):
            best = mid
        else:
            high = mid
    return {
        "scenario": "multistream-find-max",
        "fps": fps,
        "max_streams": best,
        "batch_warmup_s": warm_s,
        "best": trials.get(best),
        "trials": [trials[k] for k in sorted(trials)],
        "method": (
            f"{_warm_text(min(max_batch or batch_of(feeds), batch_of(feeds)), warm_s)}; "
            f"multistream runs of {duration_s:g} s, doubling then bisecting the number of cameras at {fps:g} fps "
            "for the most that keep >= 99% of frames on time"
            + (f" (search capped at {limit})" if best >= limit else "")
        ),
    }


class MultistreamMeasurement(Measurement):
    kind = "multistream"
    required = {"streams": int, "fps": NUMBER, "duration_s": NUMBER, "method": str,
                "total": {"frames": int, "processed": int, "late": int, "dropped": int,
                          "on_time_fraction": NUMBER, "p50_ms": OPTIONAL_NUMBER, "p99_ms": OPTIONAL_NUMBER}}

    def headline(self) -> Headline:
        total = self.data["total"]
        duration = number(self.data["duration_s"])
        on_time = number(total["on_time_fraction"])
        return Headline(
            p50=number(total["p50_ms"]), p99=number(total["p99_ms"]), n=total["frames"],
            throughput=total["processed"] / duration if duration else None, on_time_fraction=on_time,
            streams=self.data["streams"], fps=number(self.data["fps"]),
            result=f"{on_time or 0:.1%} on time, {total['late']} late, {total['dropped']} dropped",
        )


class StreamsSearchMeasurement(Measurement):
    kind = "multistream-find-max"
    required = {"max_streams": int, "fps": NUMBER, "trials": list, "method": str}

    def headline(self) -> Headline:
        return Headline(max_streams=self.data["max_streams"], fps=number(self.data["fps"]),
                        result=f"max {self.data['max_streams']} cameras")


class Multistream(Scenario):
    name = "multistream"
    loop = "open"
    params = MultistreamParams
    measurements = (MultistreamMeasurement, StreamsSearchMeasurement)
    default_batches = (8,)
    budget = "streams"
    examples = ({"streams": 2, "fps": 20.0}, {"find_max_streams": True, "fps": 20.0})
    summary = "cameras at a fixed rate, frames batched across them, each due within its deadline (open loop)"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        assert isinstance(params, MultistreamParams)
        duration = params.duration_s
        if duration is None:
            duration = (1.5 if quick else 5.0) if params.find_max_streams else (2.0 if quick else 10.0)
        return MultistreamParams(streams=params.streams, fps=params.fps, deadline_ms=params.deadline_ms,
                                 find_max_streams=params.find_max_streams,
                                 max_queue_delay_ms=params.max_queue_delay_ms, duration_s=duration,
                                 max_batch=batch, seed=seed)

    def run(self, session: Any, feeds: Feeds, params: Params) -> Measurement:
        assert isinstance(params, MultistreamParams)
        if params.find_max_streams:
            return StreamsSearchMeasurement(find_max_streams(
                session, feeds, fps=float(params.fps or 0), duration_s=float(params.duration_s or 0),
                deadline_ms=params.deadline_ms, max_batch=params.max_batch))
        delay = None if params.max_queue_delay_ms is None else params.max_queue_delay_ms / 1e3
        return MultistreamMeasurement(multistream(
            session, feeds, streams=int(params.streams or 1), fps=float(params.fps or 0),
            duration_s=float(params.duration_s or 0), deadline_ms=params.deadline_ms,
            max_batch=params.max_batch, max_queue_delay_s=delay, seed=params.seed))
