"""The per-batch scheduler: one engine under the multistream benchmark, `rtpick streams` and `rtpick serve`.

Why per batch: the first multistream scenario gave every frame a Python object, a `Future` and a sleep of its
own, so on a 2-core host it topped out near 900 frames/s while the GPU could do 30,000 (issue 13). Here the host
cost is per *batch*: a `Policy` keeps what is waiting (camera slots whose arrivals are computed, frames pushed by
decoder threads, or a bounded FIFO of requests) as arrays, and the `Scheduler` loop only asks it four questions
(how many rows are ready, the oldest arrival, the earliest deadline, when the batch would be full), takes a batch,
stages it, runs it and hands the completion time back for the whole batch at once.

When a batch goes: as soon as the runtime is free and `max_batch` rows are ready; otherwise when the batch window
(`max_queue_delay_s` after the oldest ready row) closes, and never later than the earliest deadline minus the
predicted compute time of the batch it would form. Rows that can no longer make their deadline are dropped by the
policy before the batch runs (`dropped_late`). The loop never waits on a source: it sleeps until the next time
something can change (an arrival it can compute, a window, a deadline) or until a producer wakes it.

The policy (what waits, in what order, what is dropped) is separate from the loop (when to run, staging, timing),
so stream slots and the server's request queue share the same loop.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.batch_rows import rows_problem

MAX_IDLE_WAIT_S = 0.05  # an idle loop re-checks its stop flag at least this often
SPIN_BELOW_S = 0.001  # shorter waits yield and re-check: a sleep can overshoot by ~1 ms on a busy host
PREDICTOR_WEIGHT = 0.1  # weight of a new measurement in the running estimate of a batch size's compute time


class Clock:
    """The host clock (perf_counter) and a wait that a producer can cut short by setting `wake`."""

    def now(self) -> float:
        return time.perf_counter()

    def wait(self, until: float, wake: threading.Event) -> None:
        """Sleep until `until` (or a wake-up); a wait shorter than the OS's sleep granularity returns at once,
        since an oversleep of a few hundred microseconds is a missed deadline at high frame rates."""
        delay = min(until - self.now(), MAX_IDLE_WAIT_S)
        if delay > SPIN_BELOW_S:
            wake.wait(delay - SPIN_BELOW_S / 2)
            wake.clear()
        elif delay > 0:
            time.sleep(0)  # yield the GIL to producers, then look again


class FakeClock(Clock):
    """A clock that moves only when told: waits jump to their end, a fake session advances it by its cost.

    It makes scheduler tests deterministic (no sleeping, no timing asserts that a busy machine breaks).
    """

    def __init__(self, start: float = 0.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def wait(self, until: float, wake: threading.Event) -> None:
        if math.isfinite(until):
            self.t = max(self.t, until)
        else:
            self.t += MAX_IDLE_WAIT_S
        wake.clear()


class ComputePredictor:
    """Predicted compute seconds per batch size: measured at a few sizes, interpolated, updated as it runs.

    Each observed size keeps a running estimate (exponentially weighted); sizes never run are interpolated
    linearly between observed ones (a batch's cost is close to affine in its size) and the table is made
    non-decreasing, so a larger batch is never predicted cheaper than a smaller one.
    """

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._seen = np.full(max_batch + 1, np.nan)
        self._table = np.zeros(max_batch + 1)
        self._dirty = False

    def observe(self, size: int, seconds: float) -> None:
        old = self._seen[size]
        self._seen[size] = seconds if np.isnan(old) else (1 - PREDICTOR_WEIGHT) * old + PREDICTOR_WEIGHT * seconds
        self._dirty = True

    def seed(self, measured: Mapping[int, float]) -> None:
        for size, seconds in measured.items():
            self._seen[size] = seconds
        self._dirty = True

    def __call__(self, size: int) -> float:
        if self._dirty:
            known = np.flatnonzero(~np.isnan(self._seen))
            if known.size:
                table = np.interp(np.arange(self.max_batch + 1), known, self._seen[known])
                self._table = np.maximum.accumulate(table)
            self._dirty = False
        return float(self._table[min(max(size, 1), self.max_batch)])

    def many(self, sizes: np.ndarray) -> np.ndarray:
        """`self(size)` for an array of sizes at once."""
        self(1)  # refresh the table
        return self._table[np.minimum(np.maximum(sizes, 1), self.max_batch)]

    def table_ms(self) -> dict[int, float]:
        """The observed sizes' current estimates, in ms (for reports)."""
        return {int(k): float(self._seen[k] * 1e3) for k in np.flatnonzero(~np.isnan(self._seen))}


@dataclass
class Taken:
    """The rows of one batch, chosen by a policy: their arrival and deadline times, and the policy's own keys."""

    rows: int
    arrival: np.ndarray
    deadline: np.ndarray
    keys: Any = None  # the policy's: camera ids and frame indices, or the requests


class Policy(ABC):
    """What waits, in which order, and what gets dropped. The `Scheduler` decides when, the policy decides what."""

    @abstractmethod
    def poll(self, now: float) -> None:
        """Bring the waiting set up to `now` (admit computed arrivals, enforce slot depths)."""

    @abstractmethod
    def rows_ready(self) -> int:
        """Rows waiting now."""

    @abstractmethod
    def oldest_arrival(self) -> float:
        """Arrival time of the oldest waiting row (inf when none)."""

    @abstractmethod
    def earliest_deadline(self) -> float:
        """The earliest deadline among waiting rows (inf when none)."""

    def fill_time(self, rows: int) -> float:
        """When `rows` rows will be waiting if none is taken (inf: unknown, a producer will wake the loop)."""
        return math.inf

    def next_arrival(self) -> float:
        """When the next row arrives, if the policy can compute it (inf otherwise)."""
        return math.inf

    @abstractmethod
    def take(self, now: float, max_rows: int, finish_at: Callable[[int], float]) -> Taken | None:
        """Remove and return up to `max_rows` rows (never splitting a request); drop, and count, every waiting
        row whose deadline is before `finish_at(rows the batch would hold)`. None when nothing is left."""

    @abstractmethod
    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        """The feeds of a batch of `size` rows (>= taken.rows; the rest is padding) for `session.run`."""

    @abstractmethod
    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        """The batch finished at `done`; `outputs` hold at least `taken.rows` rows."""

    def fail(self, taken: Taken, error: BaseException) -> None:
        """The batch raised. The benchmark's policies re-raise; the server's answers each request and goes on."""
        raise error

    def finished(self, now: float) -> bool:
        """True when no row will ever arrive again (computed arrivals all done); pushed sources say False."""
        return False


@dataclass
class PipelineStats:
    """Per-batch bookkeeping of one run: sizes, padding, ready rows at dispatch, device busy time."""

    max_batch: int
    batches: int = 0
    rows: int = 0
    padded_rows: int = 0
    busy_s: float = 0.0
    ready_sum: int = 0
    ready_max: int = 0
    started: float = math.nan
    ended: float = math.nan
    histogram: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.histogram = np.zeros(self.max_batch + 1, dtype=np.int64)

    def record(self, rows: int, size: int, ready: int, busy_s: float) -> None:
        self.batches += 1
        self.rows += rows
        self.padded_rows += size - rows
        self.histogram[rows] += 1
        self.busy_s += busy_s
        self.ready_sum += ready
        self.ready_max = max(self.ready_max, ready)

    def to_dict(self) -> dict[str, Any]:
        wall = self.ended - self.started if math.isfinite(self.ended - self.started) else 0.0
        sizes = np.flatnonzero(self.histogram)
        return {
            "batches": self.batches,
            "rows": self.rows,
            "padded_rows": self.padded_rows,
            "mean_batch": self.rows / self.batches if self.batches else 0.0,
            "batch_histogram": {int(k): int(self.histogram[k]) for k in sizes},
            "full_batch_fraction": float(self.histogram[self.max_batch] / self.batches) if self.batches else 0.0,
            "queue_depth": {"mean": self.ready_sum / self.batches if self.batches else 0.0, "max": self.ready_max,
                            "what": "rows waiting when each batch was formed"},
            "busy_s": self.busy_s,
            "wall_s": wall,
            "busy_fraction": self.busy_s / wall if wall > 0 else 0.0,
            "busy_method": "device busy time (CUDA events around each batch's compute on a GPU session; the host "
                           "clock around run() and synchronize() on a CPU session) / wall time of the run",
        }


def measure_batches(session: Any, predictor: ComputePredictor, sizes: Sequence[int],
                    feeds_for: Callable[[int], Mapping[str, Any]], calls: int = 3) -> None:
    """Seed `predictor` with the median of `calls` timed runs at each size (after the caller's own warm-up):
    the short warm-up measurement the batch window's "earliest deadline minus predicted compute" starts from."""
    measured = {}
    for size in sorted(set(sizes)):
        feeds = feeds_for(size)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            session.run(feeds)
            session.synchronize()
            samples.append(time.perf_counter() - start)
        measured[size] = float(np.median(samples))
    predictor.seed(measured)


def bucket_sizes(max_batch: int, sizes: Sequence[int] | None) -> np.ndarray:
    """For each row count 0..max_batch, the batch size the session runs (padding up to the next allowed size).

    `sizes` None: every size (a runtime with a dynamic batch axis). A list (e.g. the CUDA graphs captured):
    padded up to the smallest allowed size that holds the rows; max_batch is always allowed.
    """
    if sizes is None:
        return np.arange(max_batch + 1)
    allowed = sorted({int(s) for s in sizes if 1 <= int(s) <= max_batch} | {max_batch})
    table = np.empty(max_batch + 1, dtype=np.int64)
    table[0] = 0
    for rows in range(1, max_batch + 1):
        table[rows] = next(s for s in allowed if s >= rows)
    return table


class Scheduler:
    """The dispatch loop over one session and one policy.

    `run()` loops in the calling thread until the policy is finished or `stop()` is called; `start()` runs it in
    a thread of its own (the server's way). `wake()` is what producers call after pushing work. `on_batch` is
    called after each batch with (taken, done_time, outputs) — outputs as the session returned them.
    """

    def __init__(
        self,
        session: Any,
        policy: Policy,
        *,
        max_batch: int,
        max_queue_delay_s: float,
        staging: Any = None,
        clock: Clock | None = None,
        batch_sizes: Sequence[int] | None = None,
        predictor: ComputePredictor | None = None,
        on_batch: Callable[[Taken, float, Mapping[str, Any]], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise RtpickError(f"the scheduler's max batch must be at least 1, not {max_batch}")
        if not max_queue_delay_s >= 0:
            raise RtpickError(f"the batch window cannot be negative ({max_queue_delay_s} s)")
        self.session = session
        self.policy = policy
        self.max_batch = max_batch
        self.window_s = max_queue_delay_s
        self.staging = staging
        self.clock = clock or Clock()
        self.buckets = bucket_sizes(max_batch, batch_sizes)
        self.predict = predictor or ComputePredictor(max_batch)
        self.on_batch = on_batch
        self.stats = PipelineStats(max_batch)
        self.error: BaseException | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------- control

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop after the batch in flight (rows still waiting stay in the policy, uncounted as processed)."""
        self._stop.set()
        self._wake.set()

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._run_catching, name="rtpick-scheduler", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run_catching(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - kept for the owner thread to re-raise
            self.error = exc

    # -------------------------------------------------------------------------------------------- warm-up

    def measure(self, sizes: Sequence[int], feeds_for: Callable[[int], Mapping[str, Any]], calls: int = 3) -> None:
        """Seed the predictor at `sizes` (padded as the loop would pad them); see `measure_batches`."""
        padded = [int(self.buckets[max(1, min(s, self.max_batch))]) for s in sizes]
        measure_batches(self.session, self.predict, padded, feeds_for, calls)

    # ------------------------------------------------------------------------------------------- the loop

    def run(self, *, stop_when_idle: bool = False) -> PipelineStats:
        """Loop until the policy is finished, `stop()` is called or (`stop_when_idle`) nothing waits."""
        clock, policy = self.clock, self.policy
        pipelined = bool(getattr(self.staging, "asynchronous", False))
        inflight: _InFlight | None = None
        self.stats.started = clock.now()
        try:
            while not self._stop.is_set():
                now = clock.now()
                policy.poll(now)
                ready = policy.rows_ready()
                if ready == 0:
                    if inflight is not None:
                        inflight = self._finish(inflight)
                    elif stop_when_idle or policy.finished(now):
                        break
                    else:
                        clock.wait(policy.next_arrival(), self._wake)
                    continue
                free_at = max(now, inflight.predicted_end) if inflight is not None else now
                rows = min(ready, self.max_batch)
                go_at = min(policy.oldest_arrival() + self.window_s,
                            policy.earliest_deadline() - self.predict(int(self.buckets[rows])))
                if rows < self.max_batch and now < go_at:
                    if inflight is not None:  # the device is the bottleneck: let it finish, then look again
                        inflight = self._finish(inflight)
                    else:
                        clock.wait(min(go_at, policy.fill_time(self.max_batch)), self._wake)
                    continue
                staged = self._take_and_stage(now, free_at, ready)
                if staged is None:
                    continue
                if inflight is not None:  # this batch's copy was issued while that one computed
                    inflight = self._finish(inflight)
                inflight = self._launch(*staged)
                if not pipelined:
                    inflight = self._finish(inflight)
            if inflight is not None:
                self._finish(inflight)
        finally:
            self.stats.ended = clock.now()
        return self.stats

    def _take_and_stage(self, now: float, free_at: float, ready: int) -> tuple[Taken, int, Any, int] | None:
        predict, buckets, top = self.predict, self.buckets, self.max_batch
        def finish_at(rows: Any) -> Any:
            """When a batch of `rows` (an int or an array of them) started now would finish."""
            if isinstance(rows, np.ndarray):
                return free_at + predict.many(buckets[np.minimum(np.maximum(rows, 1), top)])
            return free_at + predict(int(buckets[min(max(rows, 1), top)]))

        taken = self.policy.take(now, top, finish_at)
        if taken is None or taken.rows == 0:
            return None
        size = int(buckets[taken.rows])
        return taken, size, self.policy.stage(taken, size, self.staging), ready

    def _launch(self, taken: Taken, size: int, feeds: Mapping[str, Any], ready: int) -> _InFlight | None:
        start = self.clock.now()
        try:
            if self.staging is not None:
                self.staging.before_run()
            outputs = self.session.run(feeds)
            timer = self.staging.after_run() if self.staging is not None else None
            problem = rows_problem(outputs, size)
            if problem is not None:
                raise RtpickError(problem)
        except Exception as exc:  # noqa: BLE001 - the policy decides: re-raise (benchmarks) or answer (server)
            self.policy.fail(taken, exc)
            return None
        return _InFlight(taken, size, ready, start, start + self.predict(size), outputs, timer)

    def _finish(self, flight: _InFlight | None) -> None:
        """Wait for a launched batch, then record its completion for all its rows at once."""
        if flight is None:
            return None
        try:
            if getattr(self.staging, "asynchronous", False):
                self.staging.wait_done()  # this batch's end event; the next batch's copy may still run
            else:
                self.session.synchronize()
        except Exception as exc:  # noqa: BLE001 - as in _launch
            self.policy.fail(flight.taken, exc)
            return None
        done = self.clock.now()
        compute = flight.timer() if flight.timer is not None else done - flight.start
        self.predict.observe(flight.size, compute)
        self.stats.record(flight.taken.rows, flight.size, flight.ready, compute)
        self.policy.complete(flight.taken, done, flight.outputs)
        if self.on_batch is not None:
            self.on_batch(flight.taken, done, flight.outputs)
        return None


@dataclass
class _InFlight:
    """A batch launched on the device and not yet waited for."""

    taken: Taken
    size: int
    ready: int
    start: float
    predicted_end: float
    outputs: Mapping[str, Any]
    timer: Callable[[], float] | None
