"""Preallocated input buffers for the scheduler's batches: host arrays, or pinned host + device on CUDA.

Why: a batch assembled with `np.stack` allocates per batch and, on a GPU, copies from pageable memory on the
compute stream, so the copy and the compute take turns. Here every buffer is allocated once (`max_batch` rows
per input). A policy writes a batch's rows into `host(name)`; `stage(size)` returns the feeds. On CUDA the rows go
to pinned memory, their copy to the device is issued on a second stream and ordered before the compute by an
event, so the next batch's copy runs while the current batch computes (`asynchronous`: the scheduler launches
the next batch before waiting for the last). Two buffer sets alternate, each guarded by an event, so a buffer is
never rewritten while a copy or a compute still reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rtpick.errors import RtpickError


def sample_shapes(inputs: Sequence[Any], shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Each input's per-row shape (the dims after the batch axis) from concrete `shapes`."""
    out = {}
    for spec in inputs:
        if spec.name not in shapes:
            raise RtpickError(f"no concrete shape for input {spec.name!r}; fix it with --shape")
        out[spec.name] = tuple(int(d) for d in shapes[spec.name][1:])
    return out


class HostStaging:
    """Host buffers, `max_batch` rows per input; `stage(size)` hands out views of the first `size` rows."""

    asynchronous = False

    def __init__(self, dtypes: Mapping[str, str], rows: Mapping[str, tuple[int, ...]], max_batch: int) -> None:
        self.max_batch = max_batch
        self.buffers = {name: np.zeros((max_batch, *rows[name]), dtype=dtypes[name]) for name in dtypes}

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def host(self, name: str) -> np.ndarray:
        return self.buffers[name]

    def fill(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Write fixed content into every row (synthetic frames staged once, not per batch)."""
        for name, value in feeds.items():
            for target in self._all(name):
                rows = min(len(value), len(target))
                target[:rows] = np.asarray(value[:rows])

    def _all(self, name: str) -> list[np.ndarray]:
        return [self.buffers[name]]

    def stage(self, size: int) -> dict[str, Any]:
        return {name: buffer[:size] for name, buffer in self.buffers.items()}

    def before_run(self) -> None:
        """Order the compute after the inputs' copy (nothing to do on the host)."""

    def after_run(self) -> Callable[[], float] | None:
        """After launching: a reader of the device time of this batch, or None (host clock)."""
        return None

    def wait_done(self) -> None:
        """Block until the oldest launched batch finished (the session's synchronize does it on the host)."""


class CudaStaging(HostStaging):
    """Pinned host buffers and device buffers, two sets alternating; the copy in runs on its own stream."""

    asynchronous = True

    def __init__(self, dtypes: Mapping[str, str], rows: Mapping[str, tuple[int, ...]], max_batch: int,
                 device: str = "cuda") -> None:
        import torch

        if not torch.cuda.is_available():
            raise RtpickError("CUDA staging needs a CUDA device, and torch sees none")
        self._torch = torch
        self.max_batch = max_batch
        self.device = torch.device(device)
        self.copy_stream = torch.cuda.Stream(self.device)
        self._pinned: list[dict[str, Any]] = []
        self._device: list[dict[str, Any]] = []
        for _ in range(2):
            host, dev = {}, {}
            for name, dtype in dtypes.items():
                tdtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
                host[name] = torch.zeros((max_batch, *rows[name]), dtype=tdtype).pin_memory()
                dev[name] = torch.zeros((max_batch, *rows[name]), dtype=tdtype, device=self.device)
            self._pinned.append(host)
            self._device.append(dev)
        self._copied = [torch.cuda.Event(), torch.cuda.Event()]  # this set's copy to the device finished
        self._released = [None, None]  # this set's last compute finished reading its device buffers
        self._slot = 0
        self._launched: list[tuple[Any, Any, Any]] = []  # (start event, end event, slot) per batch in flight
        self.buffers = {name: self._pinned[0][name].numpy() for name in dtypes}

    @property
    def nbytes(self) -> int:
        return 2 * sum(t.numel() * t.element_size() for t in self._pinned[0].values()) * 2

    def host(self, name: str) -> np.ndarray:
        """The pinned rows of the set the next batch uses; waits until its previous copy has read them."""
        self._copied[self._slot].synchronize()
        return self._pinned[self._slot][name].numpy()

    def _all(self, name: str) -> list[np.ndarray]:
        return [pinned[name].numpy() for pinned in self._pinned]

    def stage(self, size: int) -> dict[str, Any]:
        torch, slot = self._torch, self._slot
        with torch.cuda.stream(self.copy_stream):
            if self._released[slot] is not None:
                self.copy_stream.wait_event(self._released[slot])
            for name, pinned in self._pinned[slot].items():
                self._device[slot][name][:size].copy_(pinned[:size], non_blocking=True)
            self._copied[slot].record(self.copy_stream)
        return {name: buffer[:size] for name, buffer in self._device[slot].items()}

    def before_run(self) -> None:
        torch = self._torch
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(self._copied[self._slot])
        begin = torch.cuda.Event(enable_timing=True)
        begin.record(stream)
        self._launched.append((begin, None, self._slot))

    def after_run(self) -> Callable[[], float]:
        torch = self._torch
        stream = torch.cuda.current_stream(self.device)
        end = torch.cuda.Event(enable_timing=True)
        end.record(stream)
        begin, _, slot = self._launched[-1]
        self._launched[-1] = (begin, end, slot)
        self._released[slot] = end
        self._slot = 1 - slot
        return lambda: begin.elapsed_time(end) / 1e3

    def wait_done(self) -> None:
        if self._launched:
            _, end, _ = self._launched.pop(0)
            if end is not None:
                end.synchronize()


def synthetic_batch(feeds: Mapping[str, Any] | None, size: int, staging: HostStaging | None, what: str
                    ) -> Mapping[str, Any]:
    """The inputs of a batch of `size` rows whose data is synthetic (the same rows every batch): the first `size`
    rows of `feeds`, or the staging rows they were written into once."""
    if staging is None:
        if feeds is None:
            raise RtpickError(f"{what} need feeds or a staging area")
        return {name: value[:size] for name, value in feeds.items()}
    return staging.stage(size)


def staging_for(session: Any, rows: Mapping[str, tuple[int, ...]], max_batch: int) -> HostStaging:
    """Pinned + device buffers for a CUDA session where torch has CUDA; host buffers otherwise."""
    dtypes = {spec.name: spec.dtype for spec in session.inputs}
    if getattr(session, "device", "cpu") == "cuda":
        try:
            import torch
        except ImportError:
            torch = None  # type: ignore[assignment]
        if torch is not None and torch.cuda.is_available():
            return CudaStaging(dtypes, rows, max_batch)
    return HostStaging(dtypes, rows, max_batch)
