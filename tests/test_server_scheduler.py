"""The server scenario on the per-batch scheduler: computed arrivals, the server's queue bound and deadline drop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bench_fakes import SpinSession, feeds

from rtpick.errors import RtpickError
from rtpick.perf import scenarios
from rtpick.perf.request_arrivals import DONE, LATE, REJECTED, ScheduledRequests
from rtpick.perf.scheduler import ComputePredictor, FakeClock, Scheduler


class FakeSession:
    """Costs `cost` seconds of fake time per call (whatever the batch) and records each batch's rows."""

    def __init__(self, clock: FakeClock, cost: float) -> None:
        self.clock, self.cost = clock, cost
        self.sizes: list[int] = []

    def run(self, feeds: dict) -> dict:
        self.sizes.append(int(feeds["x"].shape[0]))
        self.clock.advance(self.cost)
        return {"y": feeds["x"]}

    def synchronize(self) -> None:
        return None


def rows_of(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 3), dtype=np.float32)}


def run_requests(arrival: np.ndarray, cost: float, *, max_batch: int, window_s: float = 0.0,
                 max_queue: int | None = None, timeout_s: float = math.inf,
                 cutoff: float = math.inf) -> tuple[ScheduledRequests, Scheduler, FakeSession]:
    clock = FakeClock()
    session = FakeSession(clock, cost)
    policy = ScheduledRequests(arrival, max_queue=max_queue, timeout_s=timeout_s, cutoff=cutoff,
                               feeds=rows_of(max_batch))
    predictor = ComputePredictor(max_batch)
    predictor.seed({1: cost, max_batch: cost})
    scheduler = Scheduler(session, policy, max_batch=max_batch, max_queue_delay_s=window_s, clock=clock,
                          predictor=predictor)
    scheduler.run()
    return policy, scheduler, session


def test_every_request_of_a_calm_run_is_answered_in_batches_with_latency_from_its_arrival() -> None:
    arrival = np.arange(40) * 0.001  # 1,000 q/s against a runtime of 2 ms per batch of up to 8
    policy, scheduler, session = run_requests(arrival, 0.002, max_batch=8, window_s=0.001)
    assert (policy.status == DONE).all() and policy.counts["completed"] == 40
    latency = policy.latencies(cutoff=math.inf)
    assert latency.size == 40 and (latency >= 0.002 - 1e-12).all() and latency.max() < 0.010
    assert max(session.sizes) <= 8 and scheduler.stats.batches < 40  # batched, not one call per request
    assert sum(session.sizes) == 40


def test_a_full_queue_refuses_arrivals_at_once_and_counts_them() -> None:
    # 10 arrivals at once, a queue of 3, one request per 10 ms batch: 3 wait, 7 are refused on arrival
    policy, _, _ = run_requests(np.zeros(10), 0.010, max_batch=1, max_queue=3)
    assert policy.counts["rejected_full"] == 7 and policy.counts["completed"] == 3
    assert (policy.status == REJECTED).sum() == 7
    assert policy.latencies(cutoff=math.inf).size == 3  # refused requests have no latency


def test_requests_that_cannot_make_their_deadline_are_dropped_before_they_run() -> None:
    # 20 arrivals at once, 10 ms per single-request batch, deadline 35 ms: the first 3 make it, the rest
    # are dropped before running (none runs late)
    policy, _, session = run_requests(np.zeros(20), 0.010, max_batch=1, timeout_s=0.035)
    assert policy.counts["completed"] == 3 and policy.counts["dropped_late"] == 17
    assert (policy.status == LATE).sum() == 17 and len(session.sizes) == 3
    done = policy.done_at[policy.status == DONE]
    assert (done <= 0.035 + 1e-12).all()


def test_a_batch_shrinks_to_what_the_earliest_deadline_allows() -> None:
    clock = FakeClock()
    policy = ScheduledRequests(np.zeros(8), timeout_s=0.030, feeds=rows_of(8))
    policy.poll(0.0)
    # a batch of n finishes at 0.010 * n: the earliest deadline (30 ms) allows 3
    taken = policy.take(0.0, 8, lambda n: 0.010 * np.asarray(n, dtype=np.float64))
    assert taken is not None and taken.rows == 3 and isinstance(taken.keys, np.ndarray)
    assert list(taken.keys) == [0, 1, 2] and policy.rows_ready() == 5
    assert clock.now() == 0.0


def test_requests_still_waiting_at_the_cutoff_are_incomplete_with_their_wait_as_a_lower_bound() -> None:
    policy, _, _ = run_requests(np.zeros(10), 0.010, max_batch=1, cutoff=0.045)
    assert policy.counts["completed"] + policy.counts["incomplete"] == 10
    assert policy.counts["incomplete"] >= 4
    assert policy.latencies(cutoff=0.045).size == 10


def test_arrivals_must_be_sorted() -> None:
    with pytest.raises(RtpickError, match="sorted"):
        ScheduledRequests(np.array([0.2, 0.1]))


def test_the_server_scenario_reports_refusals_and_misses_the_bound_when_it_refuses() -> None:
    # 10 ms per query, one at a time (capacity ~100 q/s), offered 300 q/s into a queue of 4: most are refused
    result = scenarios.server(SpinSession(0.010, sleep=True), feeds(1), rate_qps=300, duration_s=0.5, max_batch=1,
                              max_queue=4, warm=False)
    assert result["rejected"] > 0 and result["max_queue"] == 4
    assert result["completed"] + result["incomplete"] + result["rejected"] + result["dropped_late"] \
        == result["queries"]
    assert not scenarios.server_meets(result, p99_bound_ms=1e6)  # refusing is not meeting the bound
    assert "per-batch scheduler" in result["method"] and "refused" in result["method"]
    assert result["pipeline"]["batches"] == result["completed"]


def test_the_server_scenario_drops_late_queries_with_a_deadline() -> None:
    result = scenarios.server(SpinSession(0.010, sleep=True), feeds(1), rate_qps=300, duration_s=0.5, max_batch=1,
                              timeout_ms=40, warm=False)
    assert result["dropped_late"] > 0 and result["timeout_ms"] == 40
    assert result["latency_ms"]["p50"] < 1e3


def test_a_slow_start_of_the_energy_window_makes_no_query_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entering the energy window can wait ~100 ms for an NVML counter update; the arrival clock must start after
    it, or every query scheduled during that wait is measured as queued behind it."""
    import importlib
    import time

    module = importlib.import_module("rtpick.perf.scenarios.server")  # the package re-exports the function

    class SlowStart:
        def __enter__(self):  # type: ignore[no-untyped-def]
            time.sleep(0.5)
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def report(self, count: int) -> dict:
            return {"energy": "not measured: a test"}

    monkeypatch.setattr(module.EnergyTracker, "for_session", classmethod(lambda cls, session: SlowStart()))
    result = scenarios.server(SpinSession(0.0005, sleep=True), feeds(2), rate_qps=40, duration_s=1.0, max_batch=2,
                              warm=False, seed=3)
    assert result["completed"] == result["queries"] > 10
    # a clock started before the 500 ms wait would put the first queries ~500 ms late
    assert result["latency_ms"]["max"] < 250, result["latency_ms"]
