"""The server scenario on the per-batch scheduler: computed arrivals, the server's queue bound and deadline drop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bench_fakes import SlowEnergyWindow, SpinSession, feeds
from scheduler_fakes import FakeSession, HostRows, rows_of, seeded_predictor

from rtpick.errors import RtpickError
from rtpick.perf import scenarios
from rtpick.perf.request_arrivals import DONE, LATE, REJECTED, ScheduledRequests
from rtpick.perf.scheduler import FakeClock, Scheduler


def run_requests(arrival: np.ndarray, cost: float, *, max_batch: int, window_s: float = 0.0,
                 max_queue: int | None = None, timeout_s: float = math.inf,
                 cutoff: float = math.inf, per_row: float = 0.0) -> tuple[ScheduledRequests, Scheduler, FakeSession]:
    clock = FakeClock()
    session = FakeSession(clock, cost, per_row)
    policy = ScheduledRequests(arrival, max_queue=max_queue, timeout_s=timeout_s, cutoff=cutoff,
                               feeds=rows_of(max_batch))
    predictor = seeded_predictor(max_batch, cost, per_row)
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
    SlowEnergyWindow.install(monkeypatch, "server")
    result = scenarios.server(SpinSession(0.0005, sleep=True), feeds(2), rate_qps=40, duration_s=1.0, max_batch=2,
                              warm=False, seed=3)
    assert result["completed"] == result["queries"] > 10
    # a clock started before the 500 ms wait would put the first queries ~500 ms late
    assert result["latency_ms"]["max"] < 250, result["latency_ms"]


def test_computed_arrivals_batch_drop_and_refuse_exactly_as_the_servers_own_queue() -> None:
    """The reference: `rtpick serve`'s `RequestQueue`, fed each arrival when its time comes (as a handler thread
    would submit it and wake the loop). On the same Poisson arrivals, the same fake clock and costs, the
    computed-arrival policy must form the same batches, answer each request at the same time and refuse and drop
    the same ones."""
    from rtpick.perf.request_queue import QueueFull, RequestQueue

    class Submitting(RequestQueue):
        def __init__(self, arrival: np.ndarray, timeout_s: float, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            self.arrival, self.timeout_s, self.next = arrival, timeout_s, 0
            self.done_at = np.full(arrival.size, np.nan)
            self.outcome = np.zeros(arrival.size, dtype=np.int8)

        def poll(self, now: float) -> None:
            while self.next < self.arrival.size and self.arrival[self.next] <= now:
                i, at = self.next, float(self.arrival[self.next])
                self.next += 1

                def done(result: object, i: int = i, at: float = at) -> None:
                    self.outcome[i] = DONE if result.status == "ok" else LATE  # type: ignore[attr-defined]
                    self.done_at[i] = at + result.latency_s  # type: ignore[attr-defined]
                try:
                    self.submit(rows_of(1), at + self.timeout_s, done, arrival=at)
                except QueueFull:
                    self.outcome[i] = REJECTED

        def next_arrival(self) -> float:
            return float(self.arrival[self.next]) if self.next < self.arrival.size else math.inf

        def fill_time(self, rows: int) -> float:
            return self.next_arrival()  # a handler wakes the loop at each arrival

        def finished(self, now: float) -> bool:
            return self.next >= self.arrival.size and self.rows_ready() == 0

    rng = np.random.default_rng(5)
    exercised = {"rejected_full": 0, "dropped_late": 0}
    for rate, cost, window, queue, timeout in ((1500, 0.002, 0.002, 6, 0.008), (300, 0.001, 0.001, 3, 0.012),
                                              (2000, 0.0015, 0.0005, 10, math.inf)):
        per_row = cost / 2  # a batch of 4 costs 3x a batch of 1: the deadline decides how many go
        arrival = np.cumsum(rng.exponential(1 / rate, size=400))
        mine, _, my_session = run_requests(arrival, cost, max_batch=4, window_s=window, max_queue=queue,
                                           timeout_s=timeout, per_row=per_row)
        clock = FakeClock()
        session = FakeSession(clock, cost, per_row)
        reference = Submitting(arrival, timeout, max_queue=queue, max_batch=4, clock=clock.now)
        predictor = seeded_predictor(4, cost, per_row)
        Scheduler(session, reference, max_batch=4, max_queue_delay_s=window, clock=clock, staging=HostRows(4),
                  predictor=predictor).run()
        assert my_session.sizes == session.sizes
        assert (mine.status == reference.outcome).all()
        assert np.allclose(mine.done_at[mine.status == DONE], reference.done_at[reference.outcome == DONE])
        assert mine.counts["rejected_full"] == reference.counts["rejected_full"]
        assert mine.counts["dropped_late"] == reference.counts["dropped_late"]
        exercised["rejected_full"] += mine.counts["rejected_full"]
        exercised["dropped_late"] += mine.counts["dropped_late"]
    # the rules were exercised: refusals, drops
    assert exercised["rejected_full"] > 0 and exercised["dropped_late"] > 0
