"""The open-loop driver: arrivals scheduled before the run, fed through the dynamic batcher, one session.

Open-loop scenarios (server, multistream) fix every arrival time before the run starts and measure each query
from its *scheduled* arrival, so a system that falls behind shows the queueing it caused instead of hiding it
(no coordinated omission). This is the one place that drives scheduled arrivals; the server scenario and the
stream processor reuse it rather than keep their own copies.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rtpick.perf.batcher import DynamicBatcher
from rtpick.perf.scenarios.base import Feeds
from rtpick.perf.scenarios.closedloop import slice_feeds, warm_up
from rtpick.runtimes.base import Session


@dataclass
class Query:
    scheduled: float
    done: float | None = None
    status: str = "pending"  # "done", "dropped", "pending"
    camera: int = 0
    due: float = math.inf


@dataclass
class OpenLoop:
    """Drives a schedule of queries through a `DynamicBatcher` over one session, recording completion times."""

    session: Session
    feeds: Feeds
    max_batch: int
    max_queue_delay_s: float
    drop_stale: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    def run_batch(self, queries: list[Query]) -> list[None]:
        if self.cancelled.is_set():
            return [None] * len(queries)
        live = queries
        if self.drop_stale:
            now = time.perf_counter()
            live = []
            for query in queries:
                if now > query.due:
                    query.status = "dropped"
                else:
                    live.append(query)
        if live:
            self.session.run(slice_feeds(self.feeds, len(live)))
            self.session.synchronize()
            done = time.perf_counter()
            for query in live:
                query.done, query.status = done, "done"
        return [None] * len(queries)

    def drive(self, offsets: list[float], queries: list[Query], drain_s: float) -> tuple[float, list[Any]]:
        """Issue each query at its offset from now; wait for them (at most `drain_s` past the last arrival)."""
        batcher = DynamicBatcher(self.run_batch, self.max_batch, self.max_queue_delay_s, record_batches=True)
        batcher.start()
        t0 = time.perf_counter()
        futures = []
        for offset, query in zip(offsets, queries):
            query.scheduled = t0 + offset
            query.due = query.scheduled + (query.due if math.isfinite(query.due) else math.inf)
            delay = query.scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(batcher.submit(query))
        cutoff = t0 + (offsets[-1] if offsets else 0.0) + drain_s
        for future in futures:
            remaining = cutoff - time.perf_counter()
            if remaining <= 0:
                break
            try:
                future.result(timeout=remaining)
            except TimeoutError:
                break
        self.cancelled.set()
        batcher.close(timeout_s=30.0)
        for future in futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return t0, batcher.batches


WARM_CALLS_PER_BATCH = 3


def warm_batches(session: Session, feeds: Feeds, max_batch: int) -> float:
    """Run every batch size the batcher can form (1..max_batch) before measuring; returns the seconds it took.

    A runtime with static shapes (torch.compile, TensorRT, CUDA graphs) builds or captures at each new batch
    size on first sight, which can take seconds (15 s per size for ResNet-50 under torch.compile on an H100);
    seen live, that would be measured as queueing. Each size gets a few calls first (a compile, then a graph
    capture, then a replay); then the smallest and largest warm up until their latencies are stable, with the
    stability clock started after their compile rather than spent on it.
    """
    start = time.perf_counter()
    for size in range(1, max_batch + 1):
        warm_up(session, slice_feeds(feeds, size), WARM_CALLS_PER_BATCH)
    for size in sorted({1, max_batch}):
        warm_up(session, slice_feeds(feeds, size), None)
    return time.perf_counter() - start


def warm_text(max_batch: int, warm_s: float | None) -> str:
    """How the batch sizes were warmed, for the method text (None: the caller warmed them before the trials)."""
    if warm_s is None:
        return f"every batch size 1-{max_batch} run before the trials"
    return f"every batch size 1-{max_batch} run before measuring ({warm_s:.3g} s, not measured)"


