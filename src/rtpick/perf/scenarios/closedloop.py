"""The closed loop shared by single-stream and offline: back-to-back calls, cut into blocks for the intervals.

Closed-loop scenarios time back-to-back calls (MLPerf LoadGen's single-stream and offline). Every result says
how it was measured, in words, beside the figures. This module also holds the measurement kind both store
and the parameters both take.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.energy import EnergyTracker
from rtpick.perf.scenarios.base import (
    NUMBER,
    Feeds,
    Headline,
    Measurement,
    Params,
    flag,
    interval,
    number,
)
from rtpick.perf.stats import latency_summary
from rtpick.perf.timing import cuda_events_for, split_transfers, time_call
from rtpick.runtimes.base import Session

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


DURATION_HELP = "Seconds of measurement per configuration (per trial of a search)."


def duration_field() -> Any:
    """--duration, spelled once for every scenario that takes it."""
    return flag("--duration", DURATION_HELP, check="positive")


def blocks_field() -> Any:
    return flag("--blocks", "Blocks per measurement for the CIs (default 10, quick 5).", minimum=2)


@dataclass
class ClosedLoopParams(Params):
    """Single-stream and offline: how long to measure, in how many blocks, and whether to keep the samples."""

    duration_s: float | None = duration_field()
    blocks: int | None = blocks_field()
    block_pause_s: float = flag("--block-pause", "Idle seconds between blocks.", 0.0, check="non-negative")
    keep_samples: bool = flag("--samples", "Store raw latency samples in the results.", False)
    min_queries: int | None = flag(None, "Calls at least (default 1000, quick 100).", minimum=1)
    warmup: int | None = flag(None, "Warm-up calls (None: until stable).", minimum=0)


def resolve_closed_loop(params: ClosedLoopParams, quick: bool) -> ClosedLoopParams:
    base = QUICK if quick else FULL
    return ClosedLoopParams(
        duration_s=params.duration_s if params.duration_s is not None else float(base["min_duration_s"]),
        blocks=params.blocks if params.blocks is not None else (QUICK_BLOCKS if quick else DEFAULT_BLOCKS),
        block_pause_s=params.block_pause_s, keep_samples=params.keep_samples,
        min_queries=params.min_queries if params.min_queries is not None else int(base["min_queries"]),
        warmup=params.warmup,
    )


class ClosedLoopMeasurement(Measurement):
    """Latency percentiles (ms) with their intervals and throughput (samples/s) of back-to-back calls."""

    required = {"batch": int, "n": int, "duration_s": NUMBER, "throughput": NUMBER, "method": str,
                "latency_ms": {"p50": NUMBER, "p90": NUMBER, "p99": NUMBER, "mean": NUMBER, "max": NUMBER}}

    def headline(self) -> Headline:
        lat, ci = self.data["latency_ms"], self.ci()
        return Headline(p50=number(lat["p50"]), p90=number(lat["p90"]), p99=number(lat["p99"]),
                        mean=number(lat["mean"]), max=number(lat["max"]), ci_p50=interval(ci.get("p50")),
                        ci_p99=interval(ci.get("p99")), throughput=number(self.data["throughput"]),
                        n=self.data["n"])


class SingleStreamMeasurement(ClosedLoopMeasurement):
    kind = "single-stream"


class OfflineMeasurement(ClosedLoopMeasurement):
    kind = "offline"


class CapacityMeasurement(ClosedLoopMeasurement):
    kind = "capacity"  # the probe a server search starts from; never a record's own measurement


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




def run_closed_loop(session: Session, feeds: Feeds, params: ClosedLoopParams, kind: type[ClosedLoopMeasurement]
                    ) -> ClosedLoopMeasurement:
    """A scenario's `run`: the closed loop with `params` (resolved), stored as `kind`."""
    result = closed_loop(
        session, feeds, scenario=kind.kind, min_duration_s=float(params.duration_s or 0.0),
        min_queries=int(params.min_queries or 1), warmup=params.warmup, keep_samples=params.keep_samples,
        blocks=int(params.blocks or DEFAULT_BLOCKS), block_pause_s=params.block_pause_s,
    )
    return kind(result.to_dict())
