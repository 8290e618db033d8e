"""The dynamic batcher: queries arrive one by one, the model runs them in batches.

One worker thread waits for a first query, then keeps collecting until the batch is full (`max_batch`) or
the first query has waited `max_queue_delay_s` — the two knobs of Triton's and TorchServe's batchers. The
function that runs a batch is the caller's, so the same batcher serves the benchmark's server and multistream
scenarios and the inference server. Each `submit` returns a `Future` resolved with that query's result.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from rtpick.errors import RtpickError

_STOP = object()


@dataclass
class BatchRecord:
    """One batch the worker ran: its size, when it started and finished (perf_counter seconds)."""

    size: int
    start: float
    end: float


class DynamicBatcher:
    """Thread-based dynamic batcher. `run_batch(payloads) -> results` (one result per payload, same order).

    An exception from `run_batch` is set on every future of that batch; the worker keeps going. Use as a
    context manager, or call `start()` and `close()`.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_batch: int,
        max_queue_delay_s: float,
        *,
        record_batches: bool = False,
    ) -> None:
        if max_batch < 1:
            raise RtpickError(f"the batcher's max batch must be at least 1, not {max_batch}")
        if max_queue_delay_s < 0:
            raise RtpickError(f"the batcher's max queue delay cannot be negative ({max_queue_delay_s} s)")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_queue_delay_s = max_queue_delay_s
        self.batches: list[BatchRecord] = []
        self._record = record_batches
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> DynamicBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="rtpick-batcher", daemon=True)
            self._thread.start()
        return self

    def submit(self, payload: Any) -> Future[Any]:
        if self._closed:
            raise RtpickError("the batcher is closed")
        future: Future[Any] = Future()
        self._queue.put((payload, future, time.perf_counter()))
        return future

    def close(self, timeout_s: float | None = None) -> None:
        """Stop after the queries already queued have run; wait at most `timeout_s` for that."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> DynamicBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = first[2] + self.max_queue_delay_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[Any]) -> None:
        start = time.perf_counter()
        try:
            results = self.run_batch([payload for payload, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} queries")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, the worker keeps serving
            for _, future, _ in batch:
                future.set_exception(exc)
            return
        finally:
            if self._record:
                self.batches.append(BatchRecord(len(batch), start, time.perf_counter()))
        for (_, future, _), result in zip(batch, results):
            future.set_result(result)
