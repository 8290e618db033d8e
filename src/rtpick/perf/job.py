"""The worker's job: one configuration at one batch, typed, written to and read from the job file as JSON.

`BenchRequest.job(...)` makes one; `rtpick.perf.worker` runs it in-process or in a child process. The
scenario's `Params` travel inside it already resolved (durations and blocks filled in), so the worker
measures exactly what the parent planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.scenarios.base import Params
from rtpick.perf.scenarios.registry import get_scenario


@dataclass
class Job:
    model: str
    runtime: str
    precision: str
    batch: int
    scenario: str
    params: Params
    options: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    io: str = "host"
    seed: int = 0
    accuracy: dict[str, Any] | None = None  # the labelled set to score, if any (rtpick.perf.accuracy.plan)

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": self.runtime, "precision": self.precision, "batch": self.batch,
                "scenario": self.scenario, "params": self.params.to_dict(), "options": self.options,
                "shapes": self.shapes, "ranges": self.ranges, "io": self.io, "seed": self.seed,
                "accuracy": self.accuracy}

    @classmethod
    def from_dict(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise RtpickError("a job file must hold an object")
        try:
            scenario = get_scenario(data["scenario"])
            params = scenario.params.from_dict(data["params"])
            return cls(model=str(data["model"]), runtime=str(data["runtime"]), precision=str(data["precision"]),
                       batch=int(data["batch"]), scenario=scenario.name, params=params,
                       options=dict(data.get("options") or {}), shapes=dict(data.get("shapes") or {}),
                       ranges=dict(data.get("ranges") or {}), io=str(data.get("io", "host")),
                       seed=int(data.get("seed", 0)), accuracy=data.get("accuracy"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RtpickError(f"malformed job: {type(exc).__name__}: {exc}") from exc
