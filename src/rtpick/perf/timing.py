"""Timers that never stop before the device has finished.

`time_call` times one `session.run` end to end with the host clock, and on a CUDA session also with a pair of
CUDA events around the call (the device's own view of the work, free of host scheduling noise). The host timer
stops only after `session.synchronize()`, so queued-but-unfinished GPU work is always inside the measurement.

`split_transfers` answers "where does the time go" when inputs start on the host and the model runs on a GPU:
it moves the inputs with torch, runs the session on device tensors and copies outputs back, with events
between the three steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.runtimes.base import Session, is_torch


def uses_cuda(session: Session) -> bool:
    return session.device == "cuda"


@dataclass
class CallTimes:
    """Samples from a loop of calls: host end-to-end seconds, and CUDA-event seconds where measured."""

    host_s: list[float] = field(default_factory=list)
    device_s: list[float] = field(default_factory=list)


class CudaEvents:
    """Pairs of `torch.cuda.Event(enable_timing=True)` recorded around calls; read after a synchronise.

    Events are created up front and read only at the end, so reading them costs nothing inside the loop.
    """

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._pairs: list[tuple[Any, Any]] = []
        self._open: tuple[Any, Any] | None = None

    def start(self) -> None:
        begin = self._torch.cuda.Event(enable_timing=True)
        end = self._torch.cuda.Event(enable_timing=True)
        begin.record()
        self._open = (begin, end)

    def stop(self) -> None:
        assert self._open is not None, "CudaEvents.stop without start"
        self._open[1].record()
        self._pairs.append(self._open)
        self._open = None

    def seconds(self) -> list[float]:
        """Elapsed seconds of every recorded pair; synchronises on the last event first."""
        if not self._pairs:
            return []
        self._pairs[-1][1].synchronize()
        return [begin.elapsed_time(end) / 1e3 for begin, end in self._pairs]


def time_call(session: Session, feeds: Mapping[str, Any], events: CudaEvents | None = None) -> float:
    """One call, host clock end to end (after the device finished); records CUDA events when given."""
    start = time.perf_counter()
    if events is not None:
        events.start()
    session.run(feeds)
    if events is not None:
        events.stop()
    session.synchronize()
    return time.perf_counter() - start


def cuda_events_for(session: Session) -> CudaEvents | None:
    """CUDA events for a CUDA session when torch can provide them; None (host clock only) otherwise."""
    if not uses_cuda(session):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return CudaEvents()


def split_transfers(session: Session, host_feeds: Mapping[str, np.ndarray], iterations: int) -> dict[str, Any]:
    """Median H2D, compute and D2H milliseconds for a CUDA session fed from host memory.

    Returns ``{"measured": False, "reason": ...}`` when the split does not apply (host session, device feeds,
    no torch), so callers can report why instead of a blank.
    """
    if not uses_cuda(session):
        return {"measured": False, "reason": "the session runs on the CPU: no transfers to split"}
    if any(is_torch(v) for v in host_feeds.values()):
        return {"measured": False, "reason": "inputs are already on the device"}
    try:
        import torch
    except ImportError:
        return {"measured": False, "reason": "torch is not installed (it moves the tensors)"}
    if not torch.cuda.is_available():
        return {"measured": False, "reason": "torch sees no CUDA device"}
    device = torch.device("cuda")
    parts: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []}
    pinned = {name: torch.from_numpy(np.asarray(v, order="C")).pin_memory() for name, v in host_feeds.items()}
    for _ in range(max(1, iterations)):
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        marks[0].record()
        on_device = {name: t.to(device, non_blocking=True) for name, t in pinned.items()}
        marks[1].record()
        outputs = session.run(on_device)
        marks[2].record()
        _ = {name: t.to("cpu", non_blocking=True) for name, t in outputs.items()}
        marks[3].record()
        session.synchronize()
        marks[3].synchronize()
        parts["h2d"].append(marks[0].elapsed_time(marks[1]))
        parts["compute"].append(marks[1].elapsed_time(marks[2]))
        parts["d2h"].append(marks[2].elapsed_time(marks[3]))
    return {
        "measured": True,
        **{f"{key}_ms": float(np.median(vals)) for key, vals in parts.items()},
        "n": len(parts["h2d"]),
        "method": "CUDA events between pinned-host copy in, session.run on device tensors, copy out; median",
    }
