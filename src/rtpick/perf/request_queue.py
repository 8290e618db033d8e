"""The server's policy for the scheduler: a bounded FIFO of requests pushed from other threads.

Why a policy of its own: requests are not cameras. They come from any thread (HTTP or gRPC handlers), each with
its own deadline and its own number of rows (a request of batch n fills n rows of a batch and is never split
across batches), and overload must be refused at once rather than queued without bound: `submit` raises
`QueueFull` when `max_queue` requests wait (the caller answers 503). A request that can no longer finish before
its deadline is dropped before it runs (its `done` callback gets status "late"; the caller answers 503 too).

Admission from the predicted completion (when the owner gives `cost`, the scheduler's predicted compute seconds of
a batch of n rows): `submit` also refuses at once, with `WouldMissDeadline`, a request whose predicted completion
(the end of the batch running now, then the rows queued ahead of it and its own in full batches) is past its
deadline. Dropping late work only before it runs is not enough under overload: a request admitted into a queue
that cannot be served in time waits, and its answer (a 503 after the wait, or a 200 past the budget) comes late;
refused at the door, the admitted ones keep the budget and the rest are told at once.

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

    reason = "queue_full"


class WouldMissDeadline(QueueFull):
    """The request's predicted completion (queue wait + compute) is past its deadline: refuse it now."""

    reason = "predicted_late"


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
                 wake: Callable[[], None] | None = None, cost: Callable[[int], float] | None = None) -> None:
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
        # admission: predicted compute seconds of a batch of n rows (None: admit on the queue bound alone), and
        # the predicted end of the batch running now (set when a batch is taken, cleared when it completes)
        self.cost = cost
        self.window_s = 0.0  # the scheduler's batch window (an idle runtime may wait that long for more rows)
        self._busy_until = -math.inf
        self.counts = {"submitted": 0, "rejected_full": 0, "rejected_late": 0, "dropped_late": 0, "completed": 0,
                       "failed": 0}

    # ------------------------------------------------------------------------------- producer side (any thread)

    def submit(self, feeds: Mapping[str, np.ndarray], deadline: float, done: Callable[[RequestResult], None],
               arrival: float | None = None) -> Request:
        """Queue a request of n rows (the feeds' leading dimension); raises `QueueFull` at once when full, and
        `WouldMissDeadline` when `cost` is set and the request's predicted completion is past `deadline`."""
        rows = int(next(iter(feeds.values())).shape[0])
        if not 1 <= rows <= self.max_batch:
            raise RtpickError(f"a request of {rows} rows cannot run: the batch holds 1 to {self.max_batch}")
        request = Request(feeds, rows, self.clock() if arrival is None else arrival, deadline, done)
        with self._lock:
            if len(self._fifo) >= self.max_queue:
                self.counts["rejected_full"] += 1
                raise QueueFull(f"the queue holds {self.max_queue} requests already; try again later")
            if self.cost is not None:
                finish, ahead = self.predicted_finish(rows, self.clock())
                if finish > min(deadline, ahead):
                    self.counts["rejected_late"] += 1
                    whose = "its" if deadline <= ahead else "an earlier request's (its batch would grow)"
                    raise WouldMissDeadline(f"predicted to finish {(finish - min(deadline, ahead)) * 1e3:.1f} ms "
                                            f"after {whose} deadline behind the requests queued now; try again "
                                            "later")
            self._seq += 1
            request.seq = self._seq
            self._fifo.append(request)
            heapq.heappush(self._deadlines, (deadline, request.seq))
            self._live.add(request.seq)
            self._rows += rows
            self.counts["submitted"] += 1
        self.wake()
        return request

    def predicted_finish(self, rows: int, now: float) -> tuple[float, float]:
        """(when a new request of `rows` rows would be done, the earliest deadline among the requests queued in
        the batch it would join), with the lock held. The queue runs FIFO in full batches after the batch running
        now; an idle runtime waits for the batch window unless the batch is full. Adding a row to a part-full batch
        makes that batch longer, so it must also fit the deadlines of those already in it. Optimistic where
        requests of several rows leave batches part empty (they are never split); `take` still drops, before it
        runs, whatever the prediction let in and cannot make it."""
        assert self.cost is not None
        total = self._rows + rows
        if self._busy_until > now:
            start = self._busy_until
        elif total >= self.max_batch:
            start = now
        else:
            start = max(now, (self._fifo[0].arrival if self._fifo else now) + self.window_s)
        full, rest = divmod(total, self.max_batch)
        finish = start + full * self.cost(self.max_batch) + (self.cost(rest) if rest else 0.0)
        mates = (rest or self.max_batch) - rows  # rows queued in the batch this request would join
        ahead = math.inf
        for request in reversed(self._fifo):
            if mates <= 0:
                break
            ahead = min(ahead, request.deadline)
            mates -= request.rows
        return finish, ahead

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
            if chosen:
                self._busy_until = finish_at(rows)
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
        self._busy_until = -math.inf
        offset = 0
        for request in taken.keys:
            mine = {name: value[offset:offset + request.rows] for name, value in outputs.items()}
            offset += request.rows
            self.counts["completed"] += 1
            request.done(RequestResult("ok", mine, queued_s=request.started - request.arrival,
                                       latency_s=done - request.arrival, batch_rows=taken.rows))

    def fail(self, taken: Taken, error: BaseException) -> None:
        self._busy_until = -math.inf
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
