"""Warming an open-loop scenario: every batch size the per-batch scheduler can form, run before measuring.

The open-loop scenarios (server, multistream) run on the per-batch scheduler (`rtpick.perf.scheduler`), which
forms any batch size up to its max; a static-shape runtime met at a new size would build or capture live and
that would be measured as queueing. Both scenarios warm through this module.
"""

from __future__ import annotations

import time

from rtpick.perf.scenarios.base import Feeds
from rtpick.perf.scenarios.closedloop import slice_feeds, warm_up
from rtpick.runtimes.base import Session

WARM_CALLS_PER_BATCH = 3


def warm_batches(session: Session, feeds: Feeds, max_batch: int) -> float:
    """Run every batch size the scheduler can form (1..max_batch) before measuring; returns the seconds it took.

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
