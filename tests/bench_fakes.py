"""Sessions of known cost for the benchmark tests: they do no model work, only spend a known time."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rtpick.model import TensorSpec
from rtpick.runtimes.base import Session

SPEC_IN = (TensorSpec("x", "float32", ("batch", 4)),)
SPEC_OUT = (TensorSpec("y", "float32", ("batch", 4)),)


class SpinSession(Session):
    """Busy-waits `seconds` per call (plus `per_sample` per sample) and records each call's true duration."""

    def __init__(self, seconds: float, per_sample: float = 0.0, sleep: bool = False) -> None:
        super().__init__("fake", "fp32", SPEC_IN, SPEC_OUT, "cpu")
        self.seconds = seconds
        self.per_sample = per_sample
        self.sleep = sleep
        self.true_s: list[float] = []

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        target = self.seconds + self.per_sample * feeds["x"].shape[0]
        if self.sleep:
            time.sleep(target)
        else:
            while time.perf_counter() - start < target:
                pass
        self.true_s.append(time.perf_counter() - start)
        return {"y": feeds["x"]}


def feeds(batch: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.ones((batch, 4), dtype=np.float32)}


class CompilingSession(SpinSession):
    """Like a static-shape compiled runtime: the first call at each new batch size takes `compile_s` more."""

    def __init__(self, seconds: float, compile_s: float) -> None:
        super().__init__(seconds, sleep=True)
        self.compile_s = compile_s
        self.seen: set[int] = set()

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        size = int(feeds["x"].shape[0])
        if size not in self.seen:
            self.seen.add(size)
            time.sleep(self.compile_s)
        return super()._run(feeds)


class Recorder:
    """A `rtpick.perf.progress` listener that keeps the events it hears, for tests to assert on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def plan(self, total: int) -> None:
        self.events.append(("plan", total))

    def start(self, what: str) -> None:
        self.events.append(("start", what))

    def done(self, record: Any) -> None:
        self.events.append(("done", record.batch))

    def skip(self, count: int, reason: str) -> None:
        self.events.append(("skip", count))


class SlowEnergyWindow:
    """An energy window that takes 0.5 s to open, as NVML's counter can make the real one wait (~100 ms on an
    H200); a scenario whose arrival clock starts before entering it schedules work into that wait."""

    def __enter__(self) -> SlowEnergyWindow:
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def report(self, count: int) -> dict[str, Any]:
        return {"energy": "not measured: a test"}

    @classmethod
    def install(cls, monkeypatch: Any, scenario_module: str) -> None:
        """Make `rtpick.perf.scenarios.<scenario_module>` open this window instead of the NVML tracker."""
        import importlib

        module = importlib.import_module(f"rtpick.perf.scenarios.{scenario_module}")  # the package re-exports
        monkeypatch.setattr(module.EnergyTracker, "for_session", classmethod(lambda _cls, session: cls()))
