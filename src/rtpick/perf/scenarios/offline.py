"""Offline (MLPerf): batches back to back at each batch size of a sweep; throughput in samples/s."""

from __future__ import annotations

from typing import Any

from rtpick.perf.scenarios.base import Feeds, Params, Scenario
from rtpick.perf.scenarios.closedloop import (
    ClosedLoopParams,
    LatencyResult,
    OfflineMeasurement,
    closed_loop,
    resolve_closed_loop,
    run_closed_loop,
)
from rtpick.runtimes.base import Session

DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def offline_point(session: Session, feeds: Feeds, **kwargs: Any) -> LatencyResult:
    """One batch size of the offline sweep: batches back to back; throughput in samples/s."""
    return closed_loop(session, feeds, scenario=Offline.name, **kwargs)


def saturation_batch(points: list[tuple[int, float]], gain: float = 0.05) -> int | None:
    """The smallest batch whose throughput is within `gain` of the best: where adding batch stops paying."""
    if not points:
        return None
    best = max(tp for _, tp in points)
    for batch, tp in sorted(points):
        if tp >= (1.0 - gain) * best:
            return batch
    return None  # pragma: no cover - the best point always qualifies


class Offline(Scenario):
    name = "offline"
    loop = "closed"
    params = ClosedLoopParams
    measurements = (OfflineMeasurement,)
    default_batches = DEFAULT_SWEEP
    sweeps_batches = True
    budget = "throughput"
    summary = "batches back to back over a sweep of batch sizes: throughput (closed loop)"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        assert isinstance(params, ClosedLoopParams)
        return resolve_closed_loop(params, quick)

    def run(self, session: Any, feeds: Feeds, params: Params) -> OfflineMeasurement:
        assert isinstance(params, ClosedLoopParams)
        out = run_closed_loop(session, feeds, params, OfflineMeasurement)
        assert isinstance(out, OfflineMeasurement)
        return out
