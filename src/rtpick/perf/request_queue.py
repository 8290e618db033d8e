"""The server's policy for the scheduler: a bounded FIFO of requests pushed from other threads.

Why a policy of its own: requests are not cameras. They come from any thread (HTTP or gRPC handlers), each with
its own deadline and its own number of rows (a request of batch n fills n rows of a batch and is never split
across batches), and overload must be refused at once rather than queued without bound: `submit` raises
`QueueFull` when `max_queue` requests wait (the caller answers 503). A request that can no longer finish before
its deadline is dropped before it runs (its `done` callback gets status "late"; the caller answers 503 too).

Each request's `done(result)` is called from the scheduler's thread with its own slice of the batch's outputs
(views into that batch's output arrays: copy them if you keep them past the callback), or the error the batch
raised. Keep `done` short (hand the result to an event loop, set a future): it runs on the dispatch thread.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.scheduler import Policy, Taken


class QueueFull(RtpickError):
    """The request queue holds `max_queue` requests already: refuse this one now (HTTP 503 / 429)."""


@dataclass
class RequestResult:
    """What a request's `done` callback receives."""

    status: str  # "ok", "late" (dropped before running: it could not make its deadline), "error"
    outputs: dict[str, Any] | None = None
    error: BaseException | None = None
    queued_s: float = 0.0  # from arrival to the batch's start
    latency_s: float = 0.0  # from arrival to done
    batch_rows: int = 0


@dataclass
class Request:
    """One request: its feeds (n rows each), arrival and deadline (perf_counter seconds), and its callback."""

    feeds: Mapping[str, np.ndarray]
    rows: int
    arrival: float
    deadline: float
    done: Callable[[RequestResult], None]
    seq: int = 0
    cancelled: bool = False
    started: float = field(default=math.nan)


class RequestQueue(Policy):
    """Bounded FIFO; batches take requests in arrival order while they fit, never splitting one."""

    def __init__(self, max_queue: int, max_batch: int, *, clock: Callable[[], float] = time.perf_counter,
                 wake: Callable[[], None] | None = None) -> None:
        if max_queue < 1:
            raise RtpickError(f"the request queue must hold at least 1 request, not {max_queue}")
        self.max_queue, self.max_batch = max_queue, max_batch
        self.clock = clock
        self.wake = wake or (lambda: None)
        self._lock = threading.Lock()
        self._fifo: deque[Request] = deque()
        self._deadlines: list[tuple[float, int]] = []  # min-heap with lazy deletion of taken requests
        self._live: set[int] = set()
        self._rows = 0
        self._seq = 0
        self.counts = {"submitted": 0, "rejected_full": 0, "dropped_late": 0, "completed": 0, "failed": 0}

    # ------------------------------------------------------------------------------- producer side (any thread)

    def submit(self, feeds: Mapping[str, np.ndarray], deadline: float, done: Callable[[RequestResult], None],
               arrival: float | None = None) -> Request:
        """Queue a request of n rows (the feeds' leading dimension); raises `QueueFull` at once when full."""
        rows = int(next(iter(feeds.values())).shape[0])
        if not 1 <= rows <= self.max_batch:
            raise RtpickError(f"a request of {rows} rows cannot run: the batch holds 1 to {self.max_batch}")
        request = Request(feeds, rows, self.clock() if arrival is None else arrival, deadline, done)
        with self._lock:
            if len(self._fifo) >= self.max_queue:
                self.counts["rejected_full"] += 1
                raise QueueFull(f"the queue holds {self.max_queue} requests already; try again later")
            self._seq += 1
            request.seq = self._seq
            self._fifo.append(request)
            heapq.heappush(self._deadlines, (deadline, request.seq))
            self._live.add(request.seq)
            self._rows += rows
            self.counts["submitted"] += 1
        self.wake()
        return request

    def pending(self) -> int:
        """Requests waiting (the `nv_inference_pending_request_count` gauge)."""
        return len(self._fifo)

    # ------------------------------------------------------------------------------- the scheduler's side

    def poll(self, now: float) -> None:
        """Nothing to admit: producers push."""

    def rows_ready(self) -> int:
        return self._rows

    def oldest_arrival(self) -> float:
        with self._lock:
            return self._fifo[0].arrival if self._fifo else math.inf

    def earliest_deadline(self) -> float:
        with self._lock:
            while self._deadlines and self._deadlines[0][1] not in self._live:
                heapq.heappop(self._deadlines)
            return self._deadlines[0][0] if self._deadlines else math.inf

    def take(self, now: float, max_rows: int, finish_at: Callable[[int], float]) -> Taken | None:
        late: list[Request] = []
        chosen: list[Request] = []
        with self._lock:
            rows, earliest = 0, math.inf
            while self._fifo:
                head = self._fifo[0]
                if head.deadline < finish_at(head.rows):  # it cannot make it even in a batch of its own
                    late.append(self._pop())
                    continue
                if rows + head.rows > max_rows or min(earliest, head.deadline) < finish_at(rows + head.rows):
                    break  # full, or adding it would make this batch late for someone: it waits for the next
                chosen.append(self._pop())
                rows += head.rows
                earliest = min(earliest, head.deadline)
        for request in late:
            self.counts["dropped_late"] += 1
            request.done(RequestResult("late", queued_s=now - request.arrival, latency_s=now - request.arrival))
        if not chosen:
            return None
        for request in chosen:
            request.started = now
        arrival = np.repeat([r.arrival for r in chosen], [r.rows for r in chosen])
        deadline = np.repeat([r.deadline for r in chosen], [r.rows for r in chosen])
        return Taken(rows, arrival, deadline, chosen)

    def _pop(self) -> Request:
        request = self._fifo.popleft()
        self._live.discard(request.seq)
        self._rows -= request.rows
        return request

    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        if staging is None:
            raise RtpickError("the request queue stages into preallocated buffers: give the scheduler a staging")
        offset = 0
        for request in taken.keys:
            for name, value in request.feeds.items():
                staging.host(name)[offset:offset + request.rows] = value
            offset += request.rows
        return staging.stage(size)

    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        offset = 0
        for request in taken.keys:
            mine = {name: value[offset:offset + request.rows] for name, value in outputs.items()}
            offset += request.rows
            self.counts["completed"] += 1
            request.done(RequestResult("ok", mine, queued_s=request.started - request.arrival,
                                       latency_s=done - request.arrival, batch_rows=taken.rows))

    def fail(self, taken: Taken, error: BaseException) -> None:
        for request in taken.keys:
            self.counts["failed"] += 1
            request.done(RequestResult("error", error=error, queued_s=request.started - request.arrival,
                                       batch_rows=taken.rows))

    def drain(self, status: str = "late") -> int:
        """Answer every waiting request with `status` (at shutdown); returns how many."""
        with self._lock:
            waiting = list(self._fifo)
            self._fifo.clear()
            self._live.clear()
            self._deadlines.clear()
            self._rows = 0
        for request in waiting:
            request.done(RequestResult(status))
        return len(waiting)


def request_scheduler(session: Any, rows: Mapping[str, tuple[int, ...]], *, max_batch: int, max_queue: int,
                      max_queue_delay_s: float, batch_sizes: list[int] | None = None,
                      measure: bool = True) -> tuple[Any, RequestQueue]:
    """A `Scheduler` over a `RequestQueue`, wired together, with staging buffers and a seeded predictor.

    `rows` is each input's per-row shape (`rtpick.perf.staging.sample_shapes`). Start it with
    `scheduler.start()`, push with `queue.submit(...)`, stop with `scheduler.stop(); scheduler.join()`.
    """
    from rtpick.perf.scheduler import Scheduler
    from rtpick.perf.staging import staging_for

    staging = staging_for(session, rows, max_batch)
    queue = RequestQueue(max_queue, max_batch)
    scheduler = Scheduler(session, queue, max_batch=max_batch, max_queue_delay_s=max_queue_delay_s,
                          staging=staging, batch_sizes=batch_sizes)
    queue.wake = scheduler.wake
    if measure:
        scheduler.measure(sorted({1, max_batch}), staging.stage)
    return scheduler, queue
