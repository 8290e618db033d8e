"""Scheduled requests for the scheduler: the server benchmark's arrivals, computed, held as index ranges.

Why not `RequestQueue`: that queue is for requests pushed from other threads (HTTP, gRPC), one object, one
callback and a lock each. The server *benchmark* knows every arrival time before it starts (seeded Poisson
gaps), so, as `camera_slots.SyntheticCameras` does for cameras, arrivals are a sorted numpy array and the queue
is a range of indices into it: admitting, dropping and completing are a few array operations per batch, never
one per query, and no producer thread sleeps towards each arrival (which, on a busy host, would itself make
queries late).

The rules are the server's (`RequestQueue`, `rtpick serve`): a FIFO of one-row requests bounded at `max_queue`
waiting requests (an arrival that finds it full is refused at once: `rejected_full`, the server's 503), a
deadline `timeout_s` after each arrival (a request that can no longer finish by it is dropped before it runs:
`dropped_late`), batches taken in arrival order while the earliest deadline in the batch can still be met.
Latency runs from each request's *scheduled* arrival (no coordinated omission). At `cutoff` (the end of the
drain) requests still waiting are given up as `incomplete`, their wait so far kept as a lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.scheduler import Policy, Taken
from rtpick.perf.staging import synthetic_batch

PENDING, DONE, REJECTED, LATE, INCOMPLETE = 0, 1, 2, 3, 4


class ScheduledRequests(Policy):
    """One-row requests arriving at the computed times `arrival` (sorted, perf_counter seconds)."""

    def __init__(self, arrival: np.ndarray, *, max_queue: int | None = None, timeout_s: float = math.inf,
                 cutoff: float = math.inf, feeds: Mapping[str, Any] | None = None) -> None:
        arrival = np.asarray(arrival, dtype=np.float64)
        if arrival.ndim != 1 or (arrival.size > 1 and bool((np.diff(arrival) < 0).any())):
            raise RtpickError("scheduled arrivals must be a sorted 1-D array of times")
        if max_queue is not None and max_queue < 1:
            raise RtpickError(f"the request queue must hold at least 1 request, not {max_queue}")
        if not timeout_s > 0:
            raise RtpickError(f"the request deadline must be positive, not {timeout_s} s")
        self.arrival = arrival
        self.max_queue = arrival.size if max_queue is None else max_queue
        self.timeout_s, self.cutoff, self.feeds = timeout_s, cutoff, feeds
        self.done_at = np.full(arrival.size, np.nan)
        self.status = np.zeros(arrival.size, dtype=np.int8)
        # the waiting requests, in arrival order: accepted indices in `_queue[_head:_tail]`
        self._queue = np.empty(arrival.size, dtype=np.int64)
        self._head = self._tail = 0
        self._admitted = 0  # arrivals looked at so far (accepted or refused)
        self.counts = {"rejected_full": 0, "dropped_late": 0, "completed": 0, "incomplete": 0}

    # ------------------------------------------------------------------------------------------ admission

    def poll(self, now: float) -> None:
        if now > self.cutoff:  # the drain is over: what waits is given up, what has not arrived never will
            self._give_up()
            return
        arrived = int(np.searchsorted(self.arrival, now, side="right"))
        new = arrived - self._admitted
        if new <= 0:
            return
        # nothing was taken between the last poll and now, so the queue only grew: the first `room` newcomers
        # find a place, every later one finds it full
        room = max(0, self.max_queue - (self._tail - self._head))
        accept = min(new, room)
        self._queue[self._tail:self._tail + accept] = np.arange(self._admitted, self._admitted + accept)
        self._tail += accept
        if accept < new:
            self.status[self._admitted + accept:arrived] = REJECTED
            self.counts["rejected_full"] += new - accept
        self._admitted = arrived

    def _give_up(self) -> None:
        waiting = self._queue[self._head:self._tail]
        self.status[waiting] = INCOMPLETE
        self.counts["incomplete"] += int(waiting.size)
        self._head = self._tail
        self.status[self._admitted:] = INCOMPLETE
        self.counts["incomplete"] += self.arrival.size - self._admitted
        self._admitted = self.arrival.size

    def rows_ready(self) -> int:
        return self._tail - self._head

    def oldest_arrival(self) -> float:
        return float(self.arrival[self._queue[self._head]]) if self._tail > self._head else math.inf

    def earliest_deadline(self) -> float:  # FIFO with one timeout: the oldest request's is the earliest
        return self.oldest_arrival() + self.timeout_s

    def next_arrival(self) -> float:
        return float(self.arrival[self._admitted]) if self._admitted < self.arrival.size else math.inf

    def fill_time(self, rows: int) -> float:
        need = rows - self.rows_ready()
        if need <= 0:
            return -math.inf
        if need > self.max_queue - self.rows_ready() or self._admitted + need > self.arrival.size:
            return math.inf  # the queue cannot hold that many, or they never come: the window sends the batch
        return float(self.arrival[self._admitted + need - 1])

    def finished(self, now: float) -> bool:
        return self._admitted >= self.arrival.size and self._tail == self._head

    # ------------------------------------------------------------------------------------------- batches

    def take(self, now: float, max_rows: int, finish_at: Callable[[Any], Any]) -> Taken | None:
        waiting = self._queue[self._head:self._tail]
        if waiting.size == 0:
            return None
        deadline = self.arrival[waiting] + self.timeout_s  # non-decreasing: FIFO, one timeout
        if math.isfinite(self.timeout_s):
            late = int(np.searchsorted(deadline, float(finish_at(1)), side="left"))  # not even alone in time
            if late:
                self.status[waiting[:late]] = LATE
                self.counts["dropped_late"] += late
                self._head += late
                waiting, deadline = waiting[late:], deadline[late:]
            if waiting.size == 0:
                return None
            m = min(waiting.size, max_rows)
            ends = np.asarray(finish_at(np.arange(1, m + 1)), dtype=np.float64)
            n = max(1, int(np.count_nonzero(ends <= deadline[0])))  # the first's deadline is the batch's earliest
        else:
            n = min(waiting.size, max_rows)
        self._head += n
        return Taken(n, self.arrival[waiting[:n]], deadline[:n], waiting[:n])

    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        return synthetic_batch(self.feeds, size, staging, "scheduled requests")

    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        self.done_at[taken.keys] = done
        self.status[taken.keys] = DONE
        self.counts["completed"] += taken.rows

    def latencies(self, cutoff: float) -> np.ndarray:
        """Seconds from each answered-or-waiting request's scheduled arrival, in arrival order: completed ones
        to their batch's end, ones still waiting (or never admitted) at the end to `cutoff` (a lower bound).
        Refused and dropped requests have no latency; they are counted."""
        kept = (self.status == DONE) | (self.status == INCOMPLETE) | (self.status == PENDING)
        end = np.where(self.status == DONE, self.done_at, cutoff)
        return (end - self.arrival)[kept]
