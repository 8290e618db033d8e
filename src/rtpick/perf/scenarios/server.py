"""Server (MLPerf): open-loop Poisson arrivals through a dynamic batcher; or the highest rate meeting a p99."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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
    interval,
    number,
)
from rtpick.perf.scenarios.closedloop import (
    DEFAULT_BLOCKS,
    QUICK_BLOCKS,
    CapacityMeasurement,
    batch_of,
    blocks_field,
    closed_loop,
    duration_field,
    slice_feeds,
)
from rtpick.perf.scenarios.openloop import OpenLoop, Query, warm_batches, warm_text
from rtpick.perf.stats import latency_summary, split_blocks
from rtpick.runtimes.base import Session


def queue_delay_field() -> Any:
    return flag("--max-queue-delay-ms", "Dynamic batcher queue delay, ms.", check="non-negative")


@dataclass
class ServerParams(Params):
    """A rate (--rate) or a search for the highest rate under a p99 bound (--find-max --p99-ms)."""

    rate_qps: float | None = flag("--rate", "server: target queries per second (Poisson).", check="positive")
    find_max: bool = flag("--find-max", "server: search the highest rate meeting --p99-ms.", False)
    p99_ms: float | None = flag("--p99-ms", "server --find-max: the p99 bound in milliseconds.", check="positive")
    max_queue_delay_ms: float | None = queue_delay_field()
    duration_s: float | None = duration_field()
    blocks: int | None = blocks_field()
    max_batch: int | None = flag(None, "The batcher's largest batch (the configuration's batch).", minimum=1)
    seed: int = flag(None, "Seed of the arrival times.", 0)

    def check(self) -> None:
        if self.find_max:
            if self.p99_ms is None:
                raise RtpickError("--find-max needs --p99-ms with a positive bound in milliseconds")
        elif self.rate_qps is None:
            raise RtpickError("the server scenario needs --rate QPS, or --find-max --p99-ms X")


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
    warm_s = warm_batches(session, feeds, max_batch) if warm else None
    rng = np.random.default_rng(seed)
    expected = rate_qps * duration_s
    gaps = rng.exponential(1.0 / rate_qps, size=int(expected + 6 * math.sqrt(expected) + 10))
    offsets = [float(t) for t in np.cumsum(gaps) if t <= duration_s] or [0.0]
    queries = [Query(0.0) for _ in offsets]
    drain = drain_s if drain_s is not None else max(2.0, duration_s)
    loop = OpenLoop(session, feeds, max_batch, max_queue_delay_s)
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
        "scenario": ServerMeasurement.kind,
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
            f"{warm_text(max_batch, warm_s)}; "
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
    warm_s = warm_batches(session, feeds, max_batch)
    probe = closed_loop(session, slice_feeds(feeds, max_batch), scenario=CapacityMeasurement.kind, min_duration_s=0.5,
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
        "scenario": ServerSearchMeasurement.kind,
        "p99_bound_ms": p99_bound_ms,
        "capacity_qps": capacity,
        "max_qps": best,
        "batch_warmup_s": warm_s,
        "best": max(passing, key=lambda t: t["target_qps"]) if passing else None,
        "trials": trials,
        "method": (
            f"{warm_text(max_batch, warm_s)}; "
            f"closed-loop capacity at batch {max_batch} ({capacity:,.1f} samples/s), then {len(trials)} open-loop "
            f"Poisson runs of {duration_s:g} s each, bisecting the rate in log space for p99 <= {p99_bound_ms:g} ms"
            " with at most 1% of queries unfinished"
            + ("; no rate met the bound" if best is None else "")
        ),
    }




class ServerMeasurement(Measurement):
    kind = "server"
    required = {"achieved_qps": NUMBER, "queries": int, "incomplete": int, "method": str,
                "latency_ms": {"p50": NUMBER, "p99": NUMBER}}

    def headline(self) -> Headline:
        lat, ci = self.data["latency_ms"], self.ci()
        return Headline(p50=number(lat["p50"]), p90=number(lat.get("p90")), p99=number(lat["p99"]),
                        mean=number(lat.get("mean")), max=number(lat.get("max")), ci_p50=interval(ci.get("p50")),
                        ci_p99=interval(ci.get("p99")), throughput=number(self.data["achieved_qps"]),
                        n=self.data["queries"])


class ServerSearchMeasurement(Measurement):
    kind = "server-find-max"
    required = {"max_qps": OPTIONAL_NUMBER, "trials": list, "method": str}

    def headline(self) -> Headline:
        best = self.data.get("best") if isinstance(self.data.get("best"), dict) else None
        lat = (best or {}).get("latency_ms") if isinstance((best or {}).get("latency_ms"), dict) else {}
        curve = []
        for trial in self.data["trials"]:
            if isinstance(trial, dict) and isinstance(trial.get("latency_ms"), dict):
                qps, p99 = number(trial.get("achieved_qps")), number(trial["latency_ms"].get("p99"))
                if qps is not None and p99 is not None:
                    curve.append((qps, p99))
        max_qps = number(self.data["max_qps"])
        return Headline(p99=number(lat.get("p99")), throughput=number((best or {}).get("achieved_qps")),
                        max_qps=max_qps, curve=tuple(curve),
                        result=f"max {_rate(max_qps)} q/s under the p99 bound")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


class Server(Scenario):
    name = "server"
    loop = "open"
    params = ServerParams
    measurements = (ServerMeasurement, ServerSearchMeasurement)
    default_batches = (8,)
    examples = ({"rate_qps": 50.0}, {"find_max": True, "p99_ms": 50.0})
    summary = "Poisson arrivals through a dynamic batcher: latency from scheduled arrival (open loop)"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        assert isinstance(params, ServerParams)
        duration = params.duration_s
        if duration is None:
            duration = (1.5 if quick else 5.0) if params.find_max else (2.0 if quick else 10.0)
        blocks = params.blocks if params.blocks is not None else (QUICK_BLOCKS if quick else DEFAULT_BLOCKS)
        delay = params.max_queue_delay_ms if params.max_queue_delay_ms is not None else 2.0
        return ServerParams(rate_qps=params.rate_qps, find_max=params.find_max, p99_ms=params.p99_ms,
                            max_queue_delay_ms=delay, duration_s=duration, blocks=blocks, max_batch=batch, seed=seed)

    def run(self, session: Any, feeds: Feeds, params: Params) -> Measurement:
        assert isinstance(params, ServerParams)
        delay_s = float(params.max_queue_delay_ms or 0.0) / 1e3
        if params.find_max:
            return ServerSearchMeasurement(find_max_rate(
                session, feeds, p99_bound_ms=float(params.p99_ms or 0), duration_s=float(params.duration_s or 0),
                max_batch=params.max_batch, max_queue_delay_s=delay_s, seed=params.seed))
        return ServerMeasurement(server(
            session, feeds, rate_qps=float(params.rate_qps or 0), duration_s=float(params.duration_s or 0),
            max_batch=params.max_batch, max_queue_delay_s=delay_s, seed=params.seed,
            blocks=int(params.blocks or DEFAULT_BLOCKS)))
