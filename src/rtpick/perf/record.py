"""One configuration's result as a type: `Record`, with the scenario's `Measurement` inside.

`to_dict()` / `from_dict()` read and write the JSON keys results files have always used (schema version 2),
so stored files keep loading. `from_dict` checks types and required keys and turns a malformed record into
one `RtpickError` line saying where; readers then ask a record for its `headline()` figures rather than
knowing which scenario made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.scenarios.base import Headline, Measurement
from rtpick.perf.scenarios.registry import measurement_from_dict

OK = "ok"
# the optional keys of a record and their types (None allowed for all of them)
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "error": (str,), "device": (str,), "isolated": (bool,), "load_time_s": (int, float),
    "build_time_s": (int, float), "first_inference_ms": (int, float), "build_notes": (list,), "memory": (dict,),
    "warnings": (list,), "accuracy": (int, float), "accuracy_detail": (dict,), "correctness": (dict,),
    "replicates": (list,), "traceback_tail": (list,), "options": (dict,),
}
_CORE = ("config", "runtime", "precision", "batch", "scenario", "status", "metrics")


@dataclass
class Record:
    """What one configuration at one batch gave: its figures, costs and checks, or the cause of its failure."""

    runtime: str
    precision: str
    batch: int | None
    scenario: str
    status: str = OK
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    device: str | None = None
    isolated: bool | None = None
    load_time_s: float | None = None
    build_time_s: float | None = None
    first_inference_ms: float | None = None
    build_notes: list[str] | None = None
    memory: dict[str, Any] | None = None
    warnings: list[str] | None = None
    accuracy: float | None = None
    accuracy_detail: dict[str, Any] | None = None
    correctness: dict[str, Any] | None = None
    replicates: list[Any] | None = None
    traceback_tail: list[str] | None = None
    measurement: Measurement | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"

    @property
    def label(self) -> str:
        return f"{self.config} b{self.batch}"

    @property
    def ok(self) -> bool:
        return self.status == OK

    def headline(self) -> Headline:
        """The figures a table row shows (all None for a failed record)."""
        return self.measurement.headline() if self.measurement is not None else Headline()

    @property
    def method(self) -> str:
        return self.measurement.method if self.measurement is not None else ""

    def memory_figure(self, key: str) -> float | None:
        value = (self.memory or {}).get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"config": self.config, "runtime": self.runtime, "precision": self.precision,
                               "batch": self.batch, "options": self.options, "scenario": self.scenario,
                               "status": self.status}
        for key in _OPTIONAL:
            value = getattr(self, key)
            if value is not None and key not in out:
                out[key] = value
        if self.measurement is not None:
            out["metrics"] = self.measurement.to_dict()
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> Record:
        """A record as stored; one line naming the key when it is malformed."""
        if not isinstance(data, dict):
            raise RtpickError(f"{where} is {type(data).__name__}, not an object")
        for key in ("runtime", "precision", "scenario", "status"):
            if not isinstance(data.get(key), str):
                raise RtpickError(f"{where}.{key} is missing or not text")
        batch = data.get("batch")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)):
            raise RtpickError(f"{where}.batch is {type(batch).__name__}, not a whole number")
        values: dict[str, Any] = {}
        for key, kinds in _OPTIONAL.items():
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise RtpickError(f"{where}.{key} is {type(value).__name__}, not {kinds[0].__name__}")
            values[key] = value
        for key in ("warnings", "build_notes", "traceback_tail"):
            if key in values and not all(isinstance(v, str) for v in values[key]):
                raise RtpickError(f"{where}.{key} must be a list of text")
        if "options" in values and not all(isinstance(k, str) for k in values["options"]):
            raise RtpickError(f"{where}.options must map names to values")
        measurement = None
        if data.get("metrics") is not None:
            measurement = measurement_from_dict(data["metrics"], f"{where}.metrics")
        elif data["status"] == OK:
            raise RtpickError(f"{where} is ok but has no metrics")
        extra = {k: v for k, v in data.items() if k not in _CORE and k not in _OPTIONAL}
        values.setdefault("options", {})
        return cls(runtime=data["runtime"], precision=data["precision"], batch=batch, scenario=data["scenario"],
                   status=data["status"], measurement=measurement, extra=extra, **values)

    @classmethod
    def failed(cls, runtime: str, precision: str, batch: int | None, scenario: str, status: str, error: str,
               options: dict[str, Any] | None = None) -> Record:
        """A record for a configuration that gave no figures, with the cause in one line."""
        return cls(runtime=runtime, precision=precision, batch=batch, scenario=scenario, status=status,
                   error=error, options=dict(options or {}))


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
