"""Multistream: N cameras at F fps, frames batched across cameras, each due within its deadline.

The measurement runs on the per-batch scheduler (`rtpick.perf.scheduler`), the engine `rtpick streams` and
`rtpick serve` run on too; this module holds the contract around it (params, measurement kinds, headline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.energy import EnergyTracker
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
from rtpick.perf.scenarios.closedloop import batch_of, duration_field, slice_feeds, warm_up
from rtpick.perf.scenarios.openloop import WARM_CALLS_PER_BATCH
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
    max_batch: int | None = flag(None, "The scheduler's largest batch (the configuration's batch).", minimum=1)
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
    queue_frames: int = 2,
    batch_sizes: list[int] | None = None,
    predictor: Any = None,
    per_camera: bool = True,
) -> dict[str, Any]:
    """`streams` cameras at `fps` each, frames batched across cameras; each frame due within its deadline.

    Runs on the per-batch scheduler (`rtpick.perf.scheduler`): arrivals are computed from seeded random phases
    (unsynchronised cameras), each camera keeps at most `queue_frames` frames (latest wins; older ones count as
    `dropped_queue`), a frame that can no longer make its deadline is skipped before its batch (`dropped_late`),
    one processed after it is `late`, the rest are on time. Latency runs from each frame's scheduled capture.
    `batch_sizes` pads batches up to the sizes a static runtime holds (e.g. captured CUDA graphs).
    """
    from rtpick.perf.camera_slots import SyntheticCameras
    from rtpick.perf.scheduler import ComputePredictor, Scheduler, bucket_sizes, measure_batches
    from rtpick.perf.staging import staging_for

    if streams < 1:
        raise RtpickError(f"--streams must be at least 1, not {streams}")
    if not fps > 0:
        raise RtpickError(f"--fps must be a positive number of frames per second, not {fps}")
    if deadline_ms is not None and not deadline_ms > 0:
        raise RtpickError(f"--deadline-ms must be positive, not {deadline_ms}")
    if not duration_s > 0:
        raise RtpickError(f"the duration must be positive, not {duration_s}")
    deadline_s = (deadline_ms / 1e3) if deadline_ms is not None else 1.0 / fps
    max_batch = min(max_batch or batch_of(feeds), streams * queue_frames, batch_of(feeds))
    if max_queue_delay_s is None:
        max_queue_delay_s = deadline_s / 4
    warm_s = None
    if warm and batch_sizes is None:
        warm_s = _warm_batches(session, feeds, max_batch)
    elif warm:  # padded batches: only the allowed sizes ever run (a CUDA graph each, not one per size 1..max)
        started = time.perf_counter()
        for size in sorted({int(s) for s in bucket_sizes(max_batch, batch_sizes)[1:]}):
            warm_up(session, slice_feeds(feeds, size), WARM_CALLS_PER_BATCH)
        warm_s = time.perf_counter() - started
    staging = None
    if session.device == "cuda" and all(isinstance(v, np.ndarray) for v in feeds.values()):
        # frames start on the host: pinned rows (the synthetic frames, written once) copied in on a side stream
        staging = staging_for(session, {k: tuple(v.shape[1:]) for k, v in feeds.items()}, max_batch)
        staging.fill(feeds)
    if predictor is None or predictor.max_batch < max_batch:
        predictor = ComputePredictor(max_batch)
    frames_each = max(1, int(duration_s * fps))
    if not predictor.table_ms():
        measure_batches(session, predictor, sorted({1, max_batch}), lambda n: slice_feeds(feeds, n))
    with EnergyTracker.for_session(session) as energy:
        # the cameras' clock starts inside the window: entering it waits for an NVML counter update, and frames
        # scheduled before that wait would all start late
        cameras = SyntheticCameras(streams, fps, frames_each, deadline_s, start=time.perf_counter() + 0.005,
                                   queue_frames=queue_frames, seed=seed, feeds=feeds)
        scheduler = Scheduler(session, cameras, max_batch=max_batch, max_queue_delay_s=max_queue_delay_s,
                              staging=staging, batch_sizes=batch_sizes, predictor=predictor)
        pipeline = scheduler.run().to_dict()
    cameras.close_counts()
    total = _frame_counts(cameras.stats)
    return {
        "scenario": "multistream",
        "streams": streams,
        "fps": fps,
        "deadline_ms": deadline_s * 1e3,
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_s * 1e3,
        "queue_frames": queue_frames,
        "mean_batch": pipeline["mean_batch"],
        "duration_s": duration_s,
        "total": total,
        "per_camera": cameras.stats.per_camera() if per_camera else None,
        "pipeline": pipeline,
        "predicted_batch_ms": predictor.table_ms(),
        "energy": energy.report(total["processed"]),
        "goodput_fps": total["on_time"] / pipeline["wall_s"] if pipeline["wall_s"] > 0 else 0.0,
        "meets": total["on_time_fraction"] >= 0.99,
        "batch_warmup_s": warm_s,
        "method": (
            f"{_warm_text(max_batch, warm_s)}; "
            f"{streams} cameras x {fps:g} fps for {duration_s:g} s ({total['frames']:,} frames, seeded random "
            f"phases, arrivals computed); per-batch scheduler: each camera keeps its newest {queue_frames} "
            f"frame(s), a batch (max {max_batch}) goes when the runtime is free and it is full, or "
            f"{max_queue_delay_s * 1e3:g} ms after its oldest frame, never later than the earliest deadline minus "
            f"the predicted compute; deadline {deadline_s * 1e3:g} ms from each frame's scheduled capture; a frame "
            "that cannot make it is skipped (dropped_late); latency on the host clock after the batch finished"
            + ("; inputs staged in pinned memory, copied on a second CUDA stream" if staging is not None else "")
        ),
    }


def _frame_counts(queries: Any) -> dict[str, Any]:
    """The totals of a multistream run: `queries` is the scheduler's per-camera counters (`CameraStats`)."""
    return queries.total()


def _limit_of(trial: dict[str, Any]) -> dict[str, Any]:
    """Whether a failing trial was limited by the device (busy >= 80% of the wall time) or by the host (the
    device mostly idle while frames dropped, with batches not full or full: the host's cost per batch)."""
    pipe = trial["pipeline"]
    busy, full = pipe["busy_fraction"], pipe["full_batch_fraction"]
    by = "device" if busy >= 0.8 else "host"
    return {
        "by": by, "streams": trial["streams"], "busy_fraction": busy, "full_batch_fraction": full,
        "mean_batch": pipe["mean_batch"], "max_batch": trial["max_batch"],
        "why": (f"at {trial['streams']} cameras the device was busy {busy:.0%} of the time and "
                f"{full:.0%} of batches were full (mean {pipe['mean_batch']:.1f} of {trial['max_batch']})"
                + ("; the runtime is the limit (a faster configuration or a larger max batch)" if by == "device"
                   else "; the device was mostly idle while frames dropped: the host side (scheduling, staging, "
                        "the Python around each call) is the limit"
                   + (", at full batches: its cost per batch" if full >= 0.5 else ", with batches not full"))),
    }


def find_max_streams(
    session: Session,
    feeds: Feeds,
    *,
    fps: float,
    duration_s: float,
    deadline_ms: float | None = None,
    max_batch: int | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    queue_frames: int = 2,
    batch_sizes: list[int] | None = None,
    precision: float = 0.02,
) -> dict[str, Any]:
    """The most cameras at `fps` that keep 99% of frames on time.

    The search starts near the device bound (the measured max-batch throughput / fps), walks down by halves
    until a trial passes and up by doubling until one fails, then bisects to within `precision` (relative).
    `limit` caps it (default: 4 x the device bound). The first failing count says what limited it.
    """
    from rtpick.perf.scheduler import ComputePredictor, bucket_sizes, measure_batches

    if not fps > 0:
        raise RtpickError(f"--fps must be a positive number of frames per second, not {fps}")
    top = min(max_batch or batch_of(feeds), batch_of(feeds))
    # Trials with more cameras form larger batches: warm every size any trial can form, once, up front.
    if batch_sizes is None:
        warm_s = _warm_batches(session, feeds, top)
    else:
        started = time.perf_counter()
        for size in sorted({int(s) for s in bucket_sizes(top, batch_sizes)[1:]}):
            warm_up(session, slice_feeds(feeds, size), WARM_CALLS_PER_BATCH)
        warm_s = time.perf_counter() - started
    predictor = ComputePredictor(top)
    sizes = bucket_sizes(top, batch_sizes)
    measure_batches(session, predictor, sorted({int(sizes[1]), top}), lambda n: slice_feeds(feeds, n), 5)
    bound = top / max(predictor(top), 1e-9) / fps
    cap = limit if limit is not None else max(4, int(4 * bound))
    trials: dict[int, dict[str, Any]] = {}

    def trial(n: int) -> bool:
        result = multistream(session, feeds, streams=n, fps=fps, duration_s=duration_s, deadline_ms=deadline_ms,
                             max_batch=max_batch, seed=n, warm=False, queue_frames=queue_frames,
                             batch_sizes=batch_sizes, predictor=predictor)
        trials[n] = result
        if progress is not None:
            progress(f"{n} cameras: {result['total']['on_time_fraction']:.1%} frames on time "
                     f"(mean batch {result['mean_batch']:.1f}, busy {result['pipeline']['busy_fraction']:.0%})")
        return bool(result["meets"])

    best, high = 0, cap + 1
    n = max(1, min(cap, int(bound / 2)))
    while n >= 1 and not trial(n):
        high = n
        n = n // 2 if n > 1 else 0
    if n >= 1:
        best = n
        while best < cap and high > cap:
            n = min(cap, best * 2)
            if trial(n):
                best = n
            else:
                high = n
        while high - best > max(1, int(best * precision)):
            mid = (best + high) // 2
            if trial(mid):
                best = mid
            else:
                high = mid
    for n, result in trials.items():  # keep the per-camera table of the best trial only (results stay small)
        if n != best:
            result["per_camera"] = None
    failing = [trials[k] for k in sorted(trials) if not trials[k]["meets"] and k > best]
    return {
        "scenario": "multistream-find-max",
        "fps": fps,
        "max_streams": best,
        "device_bound_streams": bound,
        "limit": _limit_of(failing[0]) if failing else None,
        "batch_warmup_s": warm_s,
        "best": trials.get(best),
        "trials": [trials[k] for k in sorted(trials)],
        "method": (
            f"{_warm_text(top, warm_s)}; device bound {bound:,.0f} cameras (batch {top} in "
            f"{predictor(top) * 1e3:.3g} ms, median of 5, / {fps:g} fps); multistream runs of {duration_s:g} s "
            "on the per-batch scheduler, searching down by halves, up by doubling, then bisecting to within "
            f"{precision:.0%} for the most cameras that keep >= 99% of frames on time"
            + (f" (search capped at {cap})" if best >= cap else "")
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
