"""The measurement scenarios, each driving one built `Session`: single-stream, offline, server, multistream.

They follow MLPerf LoadGen's definitions. Closed-loop scenarios (single-stream, offline) time back-to-back
calls. Open-loop scenarios (server, multistream) fix every arrival time before the run starts and measure each
query from its *scheduled* arrival, so a system that falls behind shows the queueing it caused instead of
hiding it (no coordinated omission). Every result says how it was measured, in words, beside the figures.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.batcher import DynamicBatcher
from rtpick.perf.energy import EnergyTracker
from rtpick.perf.stats import latency_summary, split_blocks
from rtpick.perf.timing import cuda_events_for, split_transfers, time_call
from rtpick.runtimes.base import Session

Feeds = Mapping[str, Any]

# Defaults: a full run follows MLPerf's spirit (enough queries for a stable p99); --quick takes a few seconds.
FULL = {"min_duration_s": 10.0, "min_queries": 1000}
QUICK = {"min_duration_s": 2.0, "min_queries": 100}
WARMUP_MAX_S = 5.0
WARMUP_MAX_ITERS = 500
WARMUP_MIN_ITERS = 5
# Blocks per closed-loop measurement: enough for a t-interval that is not absurdly wide (t = 2.26 for 10
# blocks, 2.78 for 5), few enough that each block still holds hundreds of calls in a full run.
DEFAULT_BLOCKS = 10
QUICK_BLOCKS = 5


@dataclass
class LatencyResult:
    """A closed-loop measurement: latency percentiles (ms) with CIs, throughput (samples/s), and the method."""

    scenario: str
    batch: int
    n: int
    duration_s: float
    warmup: int
    latency_ms: dict[str, Any]
    throughput: float
    method: str
    device_latency_ms: dict[str, Any] | None = None
    transfers: dict[str, Any] | None = None
    samples_ms: list[float] | None = None
    load_avg: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None  # rtpick.perf.energy: joules per inference, clock events

    @property
    def p50(self) -> float:
        return float(self.latency_ms["p50"])

    @property
    def p90(self) -> float:
        return float(self.latency_ms["p90"])

    @property
    def p99(self) -> float:
        return float(self.latency_ms["p99"])

    @property
    def mean(self) -> float:
        return float(self.latency_ms["mean"])

    @property
    def ci_p50(self) -> tuple[float, float]:
        low, high = self.latency_ms["ci"]["p50"]
        return float(low), float(high)

    @property
    def ci_p99(self) -> tuple[float, float]:
        low, high = self.latency_ms["ci"]["p99"]
        return float(low), float(high)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["samples_ms"] is None:
            del out["samples_ms"]
        return out


def batch_of(feeds: Feeds) -> int:
    """The leading dimension of the feeds: how many samples one call processes."""
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if len(first.shape) else 1


def slice_feeds(feeds: Feeds, count: int) -> dict[str, Any]:
    """The first `count` samples of every feed: a view, no copy (numpy and torch both)."""
    return {name: value[:count] for name, value in feeds.items()}


def warm_up(session: Session, feeds: Feeds, warmup: int | None) -> int:
    """Run `warmup` calls, or (None) until latencies are stable; returns how many calls it made."""
    from rtpick.perf.stats import is_stable

    if warmup is not None:
        if warmup < 0:
            raise RtpickError(f"warm-up must be zero or more calls, not {warmup}")
        for _ in range(warmup):
            time_call(session, feeds)
        return warmup
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        samples.append(time_call(session, feeds))
        if len(samples) >= WARMUP_MIN_ITERS and is_stable(samples):
            break
        if len(samples) >= WARMUP_MAX_ITERS or time.perf_counter() - start > WARMUP_MAX_S:
            break
    return len(samples)


def closed_loop(
    session: Session,
    feeds: Feeds,
    *,
    scenario: str,
    min_duration_s: float,
    min_queries: int,
    warmup: int | None,
    max_duration_s: float | None = None,
    keep_samples: bool = False,
    split: bool = True,
    blocks: int = DEFAULT_BLOCKS,
    block_pause_s: float = 0.0,
) -> LatencyResult:
    """Back-to-back calls until both `min_duration_s` and `min_queries` are reached (or `max_duration_s`).

    The run is cut into `blocks` consecutive blocks, each with its share of the duration and of the queries
    (and `block_pause_s` of idle time between blocks), so that the p50/p99 intervals can include the drift
    between blocks (sectioning, see `rtpick.perf.stats`).
    """
    if min_duration_s < 0 or min_queries < 1:
        raise RtpickError("a measurement needs a duration of zero or more seconds and at least one query")
    if blocks < 1:
        raise RtpickError(f"a measurement needs at least one block, not {blocks}")
    if block_pause_s < 0:
        raise RtpickError(f"the pause between blocks cannot be negative ({block_pause_s} s)")
    if max_duration_s is None:
        max_duration_s = max(5 * min_duration_s, min_duration_s + 30.0)
    batch = batch_of(feeds)
    warm = warm_up(session, feeds, warmup)
    events = cuda_events_for(session)
    block_s, block_q = min_duration_s / blocks, max(1, math.ceil(min_queries / blocks))
    block_max_s = max_duration_s / blocks
    per_block: list[list[float]] = []
    load_before = machine_load()
    with EnergyTracker.for_session(session) as energy:
        start = time.perf_counter()
        for index in range(blocks):
            if index and block_pause_s:
                time.sleep(block_pause_s)
            host: list[float] = []
            block_start = time.perf_counter()
            while True:
                host.append(time_call(session, feeds, events))
                elapsed = time.perf_counter() - block_start
                if elapsed >= block_s and (len(host) >= block_q or elapsed >= block_max_s):
                    break
            per_block.append(host)
        duration = time.perf_counter() - start
    load = {"before": load_before, "after": machine_load(), "cpus": os.cpu_count(),
            "what": "1-minute load average of the whole machine (runnable threads, all tenants)"}
    samples = np.asarray([s for block in per_block for s in block])
    method = (
        f"host clock (perf_counter) around run() and synchronize(), {samples.size:,} calls of batch {batch} "
        f"back to back in {blocks} blocks over {duration:.1f} s"
        + (f" ({block_pause_s:g} s pause between blocks)" if block_pause_s and blocks > 1 else "")
        + f" after {warm} warm-up calls" + (" (until stable within 5%)" if warmup is None else "")
        + ("; 95% CI by sectioning over the blocks (includes drift between blocks)" if blocks > 1 else
           "; 95% CI by bootstrap over calls (one block: sampling noise only)")
    )
    device = None
    if events is not None:
        device_s = events.seconds()
        sizes = np.cumsum([len(b) for b in per_block])[:-1]
        device = latency_summary(blocks_s=np.split(np.asarray(device_s), sizes)) if blocks > 1 \
            else latency_summary(device_s)
        method += "; device time from CUDA events around each call"
    transfers = None
    if split and session.device == "cuda":
        transfers = split_transfers(session, feeds, min(samples.size, 200))
    return LatencyResult(
        scenario=scenario,
        batch=batch,
        n=int(samples.size),
        duration_s=duration,
        warmup=warm,
        latency_ms=latency_summary(blocks_s=per_block) if blocks > 1 else latency_summary(samples),
        throughput=batch * samples.size / float(samples.sum()),
        method=method,
        device_latency_ms=device,
        transfers=transfers,
        samples_ms=[float(s * 1e3) for s in samples] if keep_samples else None,
        load_avg=load,
        energy=energy.report(batch * samples.size),
    )


def machine_load() -> float | None:
    """The machine's 1-minute load average, or None where the OS has none.

    Recorded before and after each measurement because on a shared machine other tenants move the figures
    more than anything rtpick controls: two runs under different load need not agree, and a diff says so.
    """
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def single_stream(
    session: Session,
    feeds: Feeds,
    *,
    min_duration_s: float = FULL["min_duration_s"],
    min_queries: int = int(FULL["min_queries"]),
    warmup: int | None = None,
    keep_samples: bool = False,
    blocks: int = DEFAULT_BLOCKS,
    block_pause_s: float = 0.0,
) -> LatencyResult:
    """One query at a time, the next issued when the last finished (MLPerf single-stream).

    `warmup=None` warms up until latencies are stable. Throughput counts samples (queries x batch) per second
    of measured call time. This is the function `rtpick demo` calls in-process.
    """
    return closed_loop(
        session, feeds, scenario="single-stream", min_duration_s=min_duration_s, min_queries=min_queries,
        warmup=warmup, keep_samples=keep_samples, blocks=blocks, block_pause_s=block_pause_s,
    )


def offline_point(session: Session, feeds: Feeds, **kwargs: Any) -> LatencyResult:
    """One batch size of the offline sweep: batches back to back; throughput in samples/s."""
    return closed_loop(session, feeds, scenario="offline", **kwargs)


def saturation_batch(points: list[tuple[int, float]], gain: float = 0.05) -> int | None:
    """The smallest batch whose throughput is within `gain` of the best: where adding batch stops paying."""
    if not points:
        return None
    best = max(tp for _, tp in points)
    for batch, tp in sorted(points):
        if tp >= (1.0 - gain) * best:
            return batch
    return None  # pragma: no cover - the best point always qualifies


# ------------------------------------------------------------------------------------------ open-loop scenarios


@dataclass
class _Query:
    scheduled: float
    done: float | None = None
    status: str = "pending"  # "done", "dropped", "pending"
    camera: int = 0
    due: float = math.inf


@dataclass
class _OpenLoop:
    """Drives a schedule of queries through a `DynamicBatcher` over one session, recording completion times."""

    session: Session
    feeds: Feeds
    max_batch: int
    max_queue_delay_s: float
    drop_stale: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def run_batch(self, queries: list[_Query]) -> list[None]:
        if self.cancelled.is_set():
            return [None] * len(queries)
        live = queries
        if self.drop_stale:
            now = time.perf_counter()
            live = []
            for query in queries:
                if now > query.due:
                    query.status = "dropped"
                else:
                    live.append(query)
        if live:
            self.session.run(slice_feeds(self.feeds, len(live)))
            self.session.synchronize()
            done = time.perf_counter()
            for query in live:
                query.done, query.status = done, "done"
        return [None] * len(queries)

    def drive(self, offsets: list[float], queries: list[_Query], drain_s: float) -> tuple[float, list[Any]]:
        """Issue each query at its offset from now; wait for them (at most `drain_s` past the last arrival)."""
        batcher = DynamicBatcher(self.run_batch, self.max_batch, self.max_queue_delay_s, record_batches=True)
        batcher.start()
        t0 = time.perf_counter()
        futures = []
        for offset, query in zip(offsets, queries):
            query.scheduled = t0 + offset
            query.due = query.scheduled + (query.due if math.isfinite(query.due) else math.inf)
            delay = query.scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(batcher.submit(query))
        cutoff = t0 + (offsets[-1] if offsets else 0.0) + drain_s
        for future in futures:
            remaining = cutoff - time.perf_counter()
            if remaining <= 0:
                break
            try:
                future.result(timeout=remaining)
            except TimeoutError:
                break
        self.cancelled.set()
        batcher.close(timeout_s=30.0)
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return t0, batcher.batches


WARM_CALLS_PER_BATCH = 3


def _warm_batches(session: Session, feeds: Feeds, max_batch: int) -> float:
    """Run every batch size the batcher can form (1..max_batch) before measuring; returns the seconds it took.

    A runtime with static shapes (torch.compile, TensorRT, CUDA graphs) builds or captures at each new batch
    size on first sight, which can take seconds (15 s per size for ResNet-50 under torch.compile on an H100);
    seen live, that would be measured as queueing. Each size gets a few calls first (a compile, then a graph
    capture, then a replay); then the smallest and largest warm up until their latencies are stable, with the
    stability clock started after their compile rather than spent on it.
    """
    start = time.perf_counter()
    for size in range(1, max_batch + 1):
        warm_up(session, slice_feeds(feeds, size), WARM_CALLS_PER_BATCH)
    for size in sorted({1, max_batch}):
        warm_up(session, slice_feeds(feeds, size), None)
    return time.perf_counter() - start


def _warm_text(max_batch: int, warm_s: float | None) -> str:
    """How the batch sizes were warmed, for the method text (None: the caller warmed them before the trials)."""
    if warm_s is None:
        return f"every batch size 1-{max_batch} run before the trials"
    return f"every batch size 1-{max_batch} run before measuring ({warm_s:.3g} s, not measured)"


def server(
    session: Session,
    feeds: Feeds,
    *,
    rate_qps: float,
    duration_s: float,
    max_batch: int | None = None,
    max_queue_delay_s: float = 0.002,
    seed: int = 0,
    drain_s: float | None = None,
    warm: bool = True,
    blocks: int = DEFAULT_BLOCKS,
) -> dict[str, Any]:
    """Open-loop Poisson arrivals at `rate_qps` through a dynamic batcher (MLPerf server).

    Arrival times are drawn (seeded) before the run; each query's latency runs from its scheduled arrival to
    the end of the batch that carried it. Queries still unfinished `drain_s` after the last arrival are counted
    `incomplete`, with their waiting time so far as a lower bound of their latency. The p50/p99 intervals
    come from sectioning the run into `blocks` consecutive stretches of arrivals (at least 20 queries each).
    """
    if not rate_qps > 0:
        raise RtpickError(f"--rate must be a positive number of queries per second, not {rate_qps}")
    if not duration_s > 0:
        raise RtpickError(f"the duration must be positive, not {duration_s}")
    max_batch = max_batch or batch_of(feeds)
    if max_batch > batch_of(feeds):
        raise RtpickError(f"the server's max batch {max_batch} exceeds the feeds' batch {batch_of(feeds)}")
    warm_s = _warm_batches(session, feeds, max_batch) if warm else None
    rng = np.random.default_rng(seed)
    expected = rate_qps * duration_s
    gaps = rng.exponential(1.0 / rate_qps, size=int(expected + 6 * math.sqrt(expected) + 10))
    offsets = [float(t) for t in np.cumsum(gaps) if t <= duration_s] or [0.0]
    queries = [_Query(0.0) for _ in offsets]
    drain = drain_s if drain_s is not None else max(2.0, duration_s)
    loop = _OpenLoop(session, feeds, max_batch, max_queue_delay_s)
    with EnergyTracker.for_session(session) as energy:
        t0, batches = loop.drive(offsets, queries, drain)
    end = max((q.done for q in queries if q.done is not None), default=t0)
    cutoff = time.perf_counter()
    latencies = [(q.done if q.done is not None else cutoff) - q.scheduled for q in queries]
    completed = sum(q.status == "done" for q in queries)
    sections = min(blocks, len(latencies) // 20)
    summary = (latency_summary(blocks_s=split_blocks(latencies, sections)) if sections >= 2
               else latency_summary(latencies))
    return {
        "scenario": "server",
        "target_qps": rate_qps,
        "offered_qps": len(queries) / duration_s,
        "achieved_qps": completed / max(end - t0, 1e-9),
        "queries": len(queries),
        "completed": completed,
        "incomplete": len(queries) - completed,
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_s * 1e3,
        "mean_batch": float(np.mean([b.size for b in batches])) if batches else 0.0,
        "latency_ms": summary,
        "duration_s": duration_s,
        "batch_warmup_s": warm_s,
        "energy": energy.report(completed),
        "method": (
            f"{_warm_text(max_batch, warm_s)}; "
            f"open loop: {len(queries):,} Poisson arrivals (seed {seed}) at {rate_qps:g} q/s scheduled over "
            f"{duration_s:g} s; latency from each query's scheduled arrival to the end of its batch "
            f"(host clock, after synchronize); dynamic batcher max batch {max_batch}, "
            f"max queue delay {max_queue_delay_s * 1e3:g} ms; 95% CI "
            + (f"by sectioning over {sections} consecutive stretches of arrivals" if sections >= 2
               else "by bootstrap over queries (too few for blocks)")
            + (f"; {len(queries) - completed} queries unfinished after {drain:g} s of drain, counted with "
               "their wait so far (a lower bound)" if completed < len(queries) else "")
        ),
    }


def server_meets(result: Mapping[str, Any], p99_bound_ms: float) -> bool:
    """A server run meets the bound when its p99 is under it and (almost) every query finished."""
    return (
        result["latency_ms"]["p99"] <= p99_bound_ms
        and result["incomplete"] <= 0.01 * result["queries"]
    )


def find_max_rate(
    session: Session,
    feeds: Feeds,
    *,
    p99_bound_ms: float,
    duration_s: float,
    max_batch: int | None = None,
    max_queue_delay_s: float = 0.002,
    seed: int = 0,
    steps: int = 6,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The highest Poisson rate whose p99 (from scheduled arrival) stays under `p99_bound_ms`.

    The search starts from the closed-loop capacity at the largest batch (no rate can beat it for long), checks
    a low rate, then bisects. Every trial is kept in the result so the curve can be plotted.
    """
    if not p99_bound_ms > 0:
        raise RtpickError(f"--p99-ms must be positive, not {p99_bound_ms}")
    max_batch = max_batch or batch_of(feeds)
    warm_s = _warm_batches(session, feeds, max_batch)
    probe = closed_loop(session, slice_feeds(feeds, max_batch), scenario="capacity", min_duration_s=0.5,
                        min_queries=10, warmup=0, split=False, blocks=1)
    capacity = probe.throughput
    trials: list[dict[str, Any]] = []

    def trial(rate: float) -> bool:
        result = server(session, feeds, rate_qps=rate, duration_s=duration_s, max_batch=max_batch,
                        max_queue_delay_s=max_queue_delay_s, seed=seed + len(trials), warm=False)
        ok = server_meets(result, p99_bound_ms)
        result["meets_bound"] = ok
        trials.append(result)
        if progress is not None:
            progress(f"{rate:,.1f} q/s: p99 {result['latency_ms']['p99']:.2f} ms "
                     f"({'meets' if ok else 'misses'} {p99_bound_ms:g} ms)")
        return ok

    low, high = 0.05 * capacity, 1.2 * capacity
    best: float | None = None
    if trial(high):
        best = high
    elif trial(low):
        best = low
        for _ in range(steps):
            mid = math.sqrt(low * high)  # rates span decades: bisect in log space
            if trial(mid):
                low = best = mid
            else:
                high = mid
    passing = [t for t in trials if t["meets_bound"]]
    return {
        "scenario": "server-find-max",
        "p99_bound_ms": p99_bound_ms,
        "capacity_qps": capacity,
        "max_qps": best,
        "batch_warmup_s": warm_s,
        "best": max(passing, key=lambda t: t["target_qps"]) if passing else None,
        "trials": trials,
        "method": (
            f"{_warm_text(max_batch, warm_s)}; "
            f"closed-loop capacity at batch {max_batch} ({capacity:,.1f} samples/s), then {len(trials)} open-loop "
            f"Poisson runs of {duration_s:g} s each, bisecting the rate in log space for p99 <= {p99_bound_ms:g} ms"
            " with at most 1% of queries unfinished"
            + ("; no rate met the bound" if best is None else "")
        ),
    }


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
    with EnergyTracker.for_session(session) as energy:
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
        "energy": energy.report(total["processed"]),
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
