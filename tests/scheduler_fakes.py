"""Fakes for the per-batch scheduler's tests: a session that costs fake time, request staging, a seeded predictor.

Shared by the request-policy tests (`test_server_scheduler.py`, `test_serve_admission.py`); the camera tests
in `test_scheduler.py` keep their own `Session` subclass (they also check the runtime contract's wrapping).
"""

from __future__ import annotations

import numpy as np

from rtpick.perf.scheduler import ComputePredictor, FakeClock


class FakeSession:
    """Costs `cost + per_row * rows` seconds of fake time per call and records each batch's rows."""

    def __init__(self, clock: FakeClock, cost: float, per_row: float = 0.0) -> None:
        self.clock, self.cost, self.per_row = clock, cost, per_row
        self.sizes: list[int] = []

    def run(self, feeds: dict) -> dict:
        self.sizes.append(int(feeds["x"].shape[0]))
        self.clock.advance(self.cost + self.per_row * self.sizes[-1])
        return {"y": feeds["x"]}

    def synchronize(self) -> None:
        return None


def rows_of(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 3), dtype=np.float32)}


class HostRows:
    """The staging a `RequestQueue` writes into: one host buffer per input, sliced to the batch."""

    def __init__(self, max_batch: int) -> None:
        self.buffers = rows_of(max_batch)

    def host(self, name: str) -> np.ndarray:
        return self.buffers[name]

    def stage(self, size: int) -> dict[str, np.ndarray]:
        return {name: value[:size] for name, value in self.buffers.items()}

    def before_run(self) -> None:
        return None

    def after_run(self) -> None:
        return None


def seeded_predictor(max_batch: int, cost: float, per_row: float = 0.0) -> ComputePredictor:
    """A predictor that knows the fake session's cost line (batch 1 and `max_batch`) before the first batch."""
    predictor = ComputePredictor(max_batch)
    predictor.seed({1: cost + per_row, max_batch: cost + per_row * max_batch})
    return predictor
