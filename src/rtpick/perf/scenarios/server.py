"""Server (MLPerf): open-loop Poisson arrivals on the per-batch scheduler; or the highest rate meeting a p99.

The scheduler is the one `rtpick serve` and `rtpick streams` run on, with the server's queue rules, so the rate
this scenario finds is the rate the server delivers.
"""

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
from rtpick.perf.scenarios.openloop import warm_batches, warm_text
from rtpick.perf.stats import latency_summary, split_blocks
from rtpick.runtimes.base import Session


def queue_delay_field() -> Any:
    return flag("--max-queue-delay-ms", "The batch window: how long a batch may wait to fill, ms.",
                check="non-negative")


@dataclass
class ServerParams(Params):
    """A rate (--rate) or a search for the highest rate under a p99 bound (--find-max --p99-ms)."""

    rate_qps: float | None = flag("--rate", "server: target queries per second (Poisson).", check="positive")
    find_max: bool = flag("--find-max", "server: search the highest rate meeting --p99-ms.", False)
    p99_ms: float | None = flag("--p99-ms", "server --find-max: the p99 bound in milliseconds.", check="positive")
    max_queue_delay_ms: float | None = queue_delay_field()
    duration_s: float | None = duration_field()
    blocks: int | None = blocks_field()
    max_batch: int | None = flag(None, "The scheduler's largest batch (the configuration's batch).", minimum=1)
    seed: int = flag(None, "Seed of the arrival times.", 0)
    max_queue: int | None = flag("--max-queue-size", "server: requests allowed to wait, as `rtpick serve`'s; "
                                 "more are refused and counted (default: no bound).", minimum=1)
    timeout_ms: float | None = flag("--timeout-ms", "server: each request's deadline after its arrival, ms, as "
                                    "`rtpick serve`'s; one that cannot make it is dropped before it runs and "
                                    "counted (default: none).", check="positive")

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
    max_queue: int | None = None,
    timeout_ms: float | None = None,
    predictor: Any = None,
) -> dict[str, Any]:
    """Open-loop Poisson arrivals at `rate_qps` through the per-batch scheduler (MLPerf server).

    Arrival times are drawn (seeded) before the run and computed, not slept towards: the scheduler's request
    policy (`rtpick.perf.request_arrivals`) admits them as their time comes, with the server's rules (a queue
    of at most `max_queue` waiting requests, more are refused; a deadline `timeout_ms` after arrival, a request
    that cannot make it is dropped before it runs). Each query's latency runs from its scheduled arrival to the
    end of the batch that carried it. Queries still unfinished `drain_s` after the last arrival are counted
    `incomplete`, with their waiting time so far as a lower bound of their latency. The p50/p99 intervals
    come from sectioning the run into `blocks` consecutive stretches of arrivals (at least 20 queries each).
    """
    from rtpick.perf.request_arrivals import ScheduledRequests
    from rtpick.perf.scheduler import ComputePredictor, Scheduler, measure_batches

    if not rate_qps > 0:
        raise RtpickError(f"--rate must be a positive number of queries per second, not {rate_qps}")
    if not duration_s > 0:
        raise RtpickError(f"the duration must be positive, not {duration_s}")
    if max_queue is not None and max_queue < 1:
        raise RtpickError(f"the server's queue must hold at least 1 request, not {max_queue}")
    if timeout_ms is not None and not timeout_ms > 0:
        raise RtpickError(f"the request deadline must be a positive number of ms, not {timeout_ms}")
    max_batch = max_batch or batch_of(feeds)
    if max_batch > batch_of(feeds):
        raise RtpickError(f"the server's max batch {max_batch} exceeds the feeds' batch {batch_of(feeds)}")
    warm_s = warm_batches(session, feeds, max_batch) if warm else None
    rng = np.random.default_rng(seed)
    expected = rate_qps * duration_s
    gaps = rng.exponential(1.0 / rate_qps, size=int(expected + 6 * math.sqrt(expected) + 10))
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets <= duration_s]
    if offsets.size == 0:
        offsets = np.zeros(1)
    drain = drain_s if drain_s is not None else max(2.0, duration_s)
    timeout_s = timeout_ms / 1e3 if timeout_ms is not None else math.inf
    staging = host_staging(session, feeds, max_batch)
    if predictor is None or predictor.max_batch < max_batch:
        predictor = ComputePredictor(max_batch)
    if not predictor.table_ms():
        measure_batches(session, predictor, sorted({1, max_batch}), lambda n: slice_feeds(feeds, n))
    with EnergyTracker.for_session(session) as energy:
        # the arrival clock starts inside the window: entering it can wait for an NVML counter update, and
        # queries scheduled before that wait would all start late
        t0 = time.perf_counter() + 0.005
        cutoff = t0 + float(offsets[-1]) + drain
        requests = ScheduledRequests(t0 + offsets, max_queue=max_queue, timeout_s=timeout_s, cutoff=cutoff,
                                     feeds=feeds)
        scheduler = Scheduler(session, requests, max_batch=max_batch, max_queue_delay_s=max_queue_delay_s,
                              staging=staging, predictor=predictor)
        pipeline = scheduler.run().to_dict()
    counts = requests.counts
    completed, queries = counts["completed"], int(offsets.size)
    done = requests.done_at[~np.isnan(requests.done_at)]
    end = float(done.max()) if done.size else t0
    latencies = requests.latencies(min(time.perf_counter(), cutoff))
    sections = min(blocks, latencies.size // 20)
    summary = (latency_summary(blocks_s=split_blocks(latencies, sections)) if sections >= 2
               else latency_summary(latencies))
    refused = counts["rejected_full"] + counts["dropped_late"]
    unfinished = queries - completed - refused
    return {
        "scenario": ServerMeasurement.kind,
        "target_qps": rate_qps,
        "offered_qps": queries / duration_s,
        "achieved_qps": completed / max(end - t0, 1e-9),
        "queries": queries,
        "completed": completed,
        "incomplete": unfinished,
        "rejected": counts["rejected_full"],
        "dropped_late": counts["dropped_late"],
        "max_queue": max_queue,
        "timeout_ms": timeout_ms,
        "max_batch": max_batch,
        "max_queue_delay_ms": max_queue_delay_s * 1e3,
        "mean_batch": pipeline["mean_batch"],
        "pipeline": pipeline,
        "predicted_batch_ms": predictor.table_ms(),
        "latency_ms": summary,
        "duration_s": duration_s,
        "batch_warmup_s": warm_s,
        "energy": energy.report(completed),
        "method": (
            f"{warm_text(max_batch, warm_s)}; "
            f"open loop: {queries:,} Poisson arrivals (seed {seed}) at {rate_qps:g} q/s scheduled over "
            f"{duration_s:g} s, computed (not slept towards); latency from each query's scheduled arrival to the "
            f"end of its batch (host clock, after synchronize); per-batch scheduler, max batch {max_batch}, "
            f"batch window {max_queue_delay_s * 1e3:g} ms, "
            + (f"queue of {max_queue} requests (more refused: rejected)" if max_queue is not None
               else "queue unbounded")
            + (f", deadline {timeout_ms:g} ms after arrival (a query that cannot make it is dropped before it "
               "runs: dropped_late)" if timeout_ms is not None else ", no deadline")
            + "; latency percentiles over answered queries and those still waiting at the end; 95% CI "
            + (f"by sectioning over {sections} consecutive stretches of arrivals" if sections >= 2
               else "by bootstrap over queries (too few for blocks)")
            + (f"; {unfinished} queries unfinished after {drain:g} s of drain, counted with "
               "their wait so far (a lower bound)" if unfinished else "")
            + (f"; {refused} refused ({counts['rejected_full']} queue full, {counts['dropped_late']} past "
               "their deadline), counted, without a latency" if refused else "")
            + ("; inputs staged in pinned memory, copied on a second CUDA stream" if staging is not None else "")
        ),
    }


def host_staging(session: Session, feeds: Feeds, max_batch: int) -> Any:
    """Pinned staging rows (the synthetic inputs written once) for a CUDA session fed from host memory, as the
    multistream scenario stages them; None (plain slices of the feeds) otherwise."""
    if session.device != "cuda" or not all(isinstance(v, np.ndarray) for v in feeds.values()):
        return None
    from rtpick.perf.staging import staging_for

    staging = staging_for(session, {k: tuple(v.shape[1:]) for k, v in feeds.items()}, max_batch)
    staging.fill(feeds)
    return staging


def server_meets(result: Mapping[str, Any], p99_bound_ms: float) -> bool:
    """A server run meets the bound when its p99 is under it and (almost) every query was answered (at most 1%
    unfinished, refused or dropped past its deadline together)."""
    unanswered = result["incomplete"] + result.get("rejected", 0) + result.get("dropped_late", 0)
    return result["latency_ms"]["p99"] <= p99_bound_ms and unanswered <= 0.01 * result["queries"]


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
    max_queue: int | None = None,
    timeout_ms: float | None = None,
) -> dict[str, Any]:
    """The highest Poisson rate whose p99 (from scheduled arrival) stays under `p99_bound_ms`.

    The search starts from the closed-loop capacity at the largest batch (no rate can beat it for long), checks
    a low rate, then bisects. Every trial is kept in the result so the curve can be plotted. The trials share
    one compute predictor (seeded once here, refined by every batch they run).
    """
    from rtpick.perf.scheduler import ComputePredictor, measure_batches

    if not p99_bound_ms > 0:
        raise RtpickError(f"--p99-ms must be positive, not {p99_bound_ms}")
    max_batch = max_batch or batch_of(feeds)
    warm_s = warm_batches(session, feeds, max_batch)
    probe = closed_loop(session, slice_feeds(feeds, max_batch), scenario=CapacityMeasurement.kind, min_duration_s=0.5,
                        min_queries=10, warmup=0, split=False, blocks=1)
    capacity = probe.throughput
    predictor = ComputePredictor(max_batch)
    measure_batches(session, predictor, sorted({1, max_batch}), lambda n: slice_feeds(feeds, n), 5)
    trials: list[dict[str, Any]] = []

    def trial(rate: float) -> bool:
        result = server(session, feeds, rate_qps=rate, duration_s=duration_s, max_batch=max_batch,
                        max_queue_delay_s=max_queue_delay_s, seed=seed + len(trials), warm=False,
                        max_queue=max_queue, timeout_ms=timeout_ms, predictor=predictor)
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
            f"Poisson runs of {duration_s:g} s each on the per-batch scheduler, bisecting the rate in log space "
            f"for p99 <= {p99_bound_ms:g} ms"
            " with at most 1% of queries unfinished, refused or dropped"
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
    summary = "Poisson arrivals on the per-batch scheduler: latency from scheduled arrival (open loop)"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        assert isinstance(params, ServerParams)
        duration = params.duration_s
        if duration is None:
            duration = (1.5 if quick else 5.0) if params.find_max else (2.0 if quick else 10.0)
        blocks = params.blocks if params.blocks is not None else (QUICK_BLOCKS if quick else DEFAULT_BLOCKS)
        delay = params.max_queue_delay_ms if params.max_queue_delay_ms is not None else 2.0
        return ServerParams(rate_qps=params.rate_qps, find_max=params.find_max, p99_ms=params.p99_ms,
                            max_queue_delay_ms=delay, duration_s=duration, blocks=blocks, max_batch=batch, seed=seed,
                            max_queue=params.max_queue, timeout_ms=params.timeout_ms)

    def run(self, session: Any, feeds: Feeds, params: Params) -> Measurement:
        assert isinstance(params, ServerParams)
        delay_s = float(params.max_queue_delay_ms or 0.0) / 1e3
        if params.find_max:
            return ServerSearchMeasurement(find_max_rate(
                session, feeds, p99_bound_ms=float(params.p99_ms or 0), duration_s=float(params.duration_s or 0),
                max_batch=params.max_batch, max_queue_delay_s=delay_s, seed=params.seed,
                max_queue=params.max_queue, timeout_ms=params.timeout_ms))
        return ServerMeasurement(server(
            session, feeds, rate_qps=float(params.rate_qps or 0), duration_s=float(params.duration_s or 0),
            max_batch=params.max_batch, max_queue_delay_s=delay_s, seed=params.seed,
            blocks=int(params.blocks or DEFAULT_BLOCKS), max_queue=params.max_queue, timeout_ms=params.timeout_ms))
