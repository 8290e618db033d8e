"""Admission from the predicted completion (`RequestQueue.cost`): under 10x overload, on a fake clock.

The server's `RequestQueue` on the real `Scheduler` loop, fed Poisson arrivals as handler threads would submit
them; a fake session costs fixed fake time per batch, so every figure is exact and nothing sleeps.
"""

from __future__ import annotations

import math

import numpy as np
from scheduler_fakes import FakeSession, HostRows, seeded_predictor

from rtpick.perf.request_queue import QueueFull, RequestQueue, RequestResult, WouldMissDeadline
from rtpick.perf.scheduler import FakeClock, Scheduler


class Arrivals(RequestQueue):
    """Submits each arrival when the loop's clock reaches it; records how each request ended and when."""

    def __init__(self, arrival: np.ndarray, timeout_s: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.arrival, self.timeout_s, self.next = arrival, timeout_s, 0
        self.ended = np.full(arrival.size, "", dtype=object)
        self.latency = np.full(arrival.size, np.nan)

    def poll(self, now: float) -> None:
        while self.next < self.arrival.size and self.arrival[self.next] <= now:
            i, at = self.next, float(self.arrival[self.next])
            self.next += 1

            def done(result: RequestResult, i: int = i) -> None:
                self.ended[i], self.latency[i] = result.status, result.latency_s
            try:
                self.submit({"x": np.ones((1, 3), np.float32)}, at + self.timeout_s, done, arrival=at)
            except QueueFull as exc:  # WouldMissDeadline is a QueueFull with its own reason
                self.ended[i] = exc.reason

    def next_arrival(self) -> float:
        return float(self.arrival[self.next]) if self.next < self.arrival.size else math.inf

    def fill_time(self, rows: int) -> float:
        return self.next_arrival()

    def finished(self, now: float) -> bool:
        return self.next >= self.arrival.size and self.rows_ready() == 0


def overload(admission: bool, *, factor: float = 10.0, timeout_s: float = 0.050, max_queue: int = 512,
             seed: int = 1) -> Arrivals:
    """2 s of Poisson arrivals at `factor` x capacity: batches of 8 cost 20 ms (capacity 400 req/s)."""
    max_batch, cost, per_row = 8, 0.004, 0.002
    capacity = max_batch / (cost + per_row * max_batch)
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / (capacity * factor), size=int(capacity * factor * 2)))
    clock = FakeClock()
    predictor = seeded_predictor(max_batch, cost, per_row)
    queue = Arrivals(arrival, timeout_s, max_queue=max_queue, max_batch=max_batch, clock=clock.now)
    scheduler = Scheduler(FakeSession(clock, cost, per_row), queue, max_batch=max_batch, max_queue_delay_s=0.002,
                          clock=clock, staging=HostRows(max_batch), predictor=predictor)
    if admission:
        queue.window_s = scheduler.window_s
        queue.cost = lambda rows: predictor(int(scheduler.buckets[min(max(rows, 1), max_batch)]))
    scheduler.run()
    return queue


def test_under_10x_overload_every_admitted_request_finishes_within_its_deadline_and_the_rest_are_refused() -> None:
    queue = overload(admission=True)
    ok = queue.ended == "ok"
    assert set(queue.ended) <= {"ok", "predicted_late"}  # nothing dropped after waiting, no queue_full
    assert (queue.latency[ok] <= 0.050 + 1e-9).all()
    refused = int((queue.ended == "predicted_late").sum())
    assert refused == queue.counts["rejected_late"] and refused > 0.8 * queue.arrival.size  # 10x: ~90% refused
    # refusing does not starve the model: it still serves about its capacity (400 req/s over 2 s)
    assert int(ok.sum()) > 0.9 * 400 * (queue.arrival[-1])


def test_without_admission_the_same_load_waits_and_is_dropped_late_or_refused_only_when_full() -> None:
    """The reference: the queue bound alone lets requests in that then wait and are dropped (late 503s)."""
    queue = overload(admission=False, max_queue=64)
    assert queue.counts["dropped_late"] > 0 and queue.counts["rejected_late"] == 0
    late = queue.ended == "late"
    assert late.sum() == queue.counts["dropped_late"]
    assert (queue.latency[queue.ended == "ok"] <= 0.050 + 1e-9).all()  # the drop rule still holds


def test_predicted_finish_counts_the_running_batch_the_rows_ahead_and_their_deadlines() -> None:
    clock = FakeClock()
    queue = RequestQueue(100, 4, clock=clock.now, cost=lambda rows: 0.010 * rows)

    def submit(deadline: float, at: float) -> None:
        queue.submit({"x": np.ones((1, 3), np.float32)}, deadline, lambda result: None, arrival=at)

    for _ in range(5):  # 5 rows queued, then one arrives: 6 rows = one full batch (40 ms) + 2 rows (20 ms)
        submit(math.inf, 0.0)
    assert np.allclose(queue.predicted_finish(1, 0.0), (0.060, math.inf))
    taken = queue.take(0.0, 4, lambda rows: 0.5 + 0.010 * rows)  # a batch of 4 runs until 0.54
    assert taken is not None and taken.rows == 4
    assert np.allclose(queue.predicted_finish(1, 0.1), (0.56, math.inf))  # after it: the 1 row left + this one
    try:
        submit(0.55, 0.1)
    except WouldMissDeadline as exc:
        assert exc.reason == "predicted_late" and "after its deadline" in str(exc)
    else:
        raise AssertionError("a request predicted to finish at 0.56 s was admitted with a deadline at 0.55 s")
    submit(0.565, 0.1)  # fits: done at 0.56
    # a third row in that batch would end it at 0.57: past the deadline of the one admitted just before
    assert np.allclose(queue.predicted_finish(1, 0.1), (0.57, 0.565))
    try:
        submit(math.inf, 0.1)
    except WouldMissDeadline as exc:
        assert "earlier request" in str(exc)
    else:
        raise AssertionError("a request that would make its batch late for the one ahead was admitted")
    assert queue.counts["rejected_late"] == 2 and queue.pending() == 2


def test_an_idle_runtime_counts_the_batch_window() -> None:
    queue = RequestQueue(100, 4, cost=lambda rows: 0.010)
    queue.window_s = 0.005
    assert np.allclose(queue.predicted_finish(1, 1.0), (1.015, math.inf))  # waits the window, then 10 ms
    assert np.allclose(queue.predicted_finish(4, 1.0), (1.010, math.inf))  # a full batch goes at once
