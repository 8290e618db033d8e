"""Single-stream (MLPerf): one query at a time, the next issued when the last finished."""

from __future__ import annotations

from typing import Any

from rtpick.perf.scenarios.base import Feeds, Params, Scenario
from rtpick.perf.scenarios.closedloop import (
    DEFAULT_BLOCKS,
    FULL,
    ClosedLoopParams,
    LatencyResult,
    SingleStreamMeasurement,
    closed_loop,
    resolve_closed_loop,
    run_closed_loop,
)
from rtpick.runtimes.base import Session


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
    """One query at a time (MLPerf single-stream); `warmup=None` warms up until latencies are stable.

    Throughput counts samples (queries x batch) per second of measured call time. This is the function
    `rtpick demo` calls in-process.
    """
    return closed_loop(
        session, feeds, scenario=SingleStream.name, min_duration_s=min_duration_s, min_queries=min_queries,
        warmup=warmup, keep_samples=keep_samples, blocks=blocks, block_pause_s=block_pause_s,
    )


class SingleStream(Scenario):
    name = "single-stream"
    loop = "closed"
    params = ClosedLoopParams
    measurements = (SingleStreamMeasurement,)
    default_batches = (1,)
    budget = "latency"
    summary = "one query at a time: latency percentiles (closed loop)"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        assert isinstance(params, ClosedLoopParams)
        return resolve_closed_loop(params, quick)

    def run(self, session: Any, feeds: Feeds, params: Params) -> SingleStreamMeasurement:
        assert isinstance(params, ClosedLoopParams)
        out = run_closed_loop(session, feeds, params, SingleStreamMeasurement)
        assert isinstance(out, SingleStreamMeasurement)
        return out
