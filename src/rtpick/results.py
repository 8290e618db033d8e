"""The one results schema of `rtpick bench`: versioned JSON, written atomically after every configuration.

A file holds the environment it was measured on, the model (path, sha256, spec), the scenario with its
parameters, the exact command that made it, and one record per configuration (metrics, costs, or the cause of
its failure). Readers refuse files of another schema version instead of misreading them.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import read_json, write_json
from rtpick.perf.record import Record

SCHEMA = "rtpick.bench"
SCHEMA_VERSION = 2  # 2: p50/p99 CIs by sectioning over blocks; accuracy per record
LIBRARIES = ("rtpick", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "tensorrt",
             "nvidia-ml-py", "triton")


@dataclass
class Results:
    """Everything one `rtpick bench` run produced; `to_dict()` is the JSON document."""

    command: str
    scenario: dict[str, Any]
    model: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    configurations: list[Record] = field(default_factory=list)
    sweeps: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_errors: list[str] = field(default_factory=list)  # writes that failed during the run (not stored)

    def ok(self) -> list[Record]:
        return [c for c in self.configurations if c.ok]

    def failed(self) -> list[Record]:
        return [c for c in self.configurations if not c.ok]

    @property
    def model_name(self) -> str:
        return str(self.model["spec"]["name"])

    def __repr__(self) -> str:
        """A short summary (the full document is `to_dict()`): model, scenario and one line per record."""
        try:
            name = self.model_name
        except (KeyError, TypeError):
            name = "?"
        lines = [f"<Results {name}, {self.scenario.get('scenario', '?')}: {len(self.ok())} ok, "
                 f"{len(self.failed())} failed>"]
        for record in self.configurations[:20]:
            if not record.ok:
                lines.append(f"  {record.label}: {record.status}: {record.error or ''}")
                continue
            h = record.headline()
            figures = [f"p50 {h.p50:.3g} ms" if h.p50 is not None else "",
                       f"p99 {h.p99:.3g} ms" if h.p99 is not None else "",
                       f"{h.throughput:,.0f}/s" if h.throughput is not None else "", h.result]
            lines.append(f"  {record.label}: " + ", ".join(f for f in figures if f))
        if len(self.configurations) > 20:
            lines.append(f"  ... {len(self.configurations) - 20} more")
        return "\n".join(lines)

    @property
    def model_sha256(self) -> str:
        return str(self.model["sha256"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "command": self.command,
            "environment": self.environment,
            "model": self.model,
            "scenario": self.scenario,
            "configurations": [c.to_dict() for c in self.configurations],
            "sweeps": self.sweeps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> Results:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise RtpickError(f"{source} is not an rtpick bench results file (no '{SCHEMA}' schema marker)")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RtpickError(
                f"{source} uses results schema version {version}, this rtpick reads version {SCHEMA_VERSION}; "
                "re-run the benchmark with this version"
            )
        try:
            return _parse(cls, data)
        except RtpickError as exc:
            raise RtpickError(f"{source} is not a valid results file: {exc}; re-run rtpick bench --json to make "
                              "a new one") from None

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomically replace `path`: a reader (or a crash) sees the old file or the new one, never half."""
        write_json(path, self.to_dict(), "results file", default=_json_default)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Results:
        try:
            data = read_json(path, "results file")
        except RecursionError:
            raise RtpickError(f"{path} is nested too deeply to be a results file") from None
        return cls.from_dict(data, source=str(path))


def _check_numbers(data: Any) -> None:
    """Refuse a whole number no float can hold (a crafted file): every reader may turn a figure into a float."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > 2**63:
            raise RtpickError(f"it holds a number too large to be a measurement ({str(node)[:20]}...)")


def _parse(cls: type[Results], data: dict[str, Any]) -> Results:
    """The checked fields of a results document (one line naming the first bad key)."""
    _check_numbers(data)
    for key, kind in (("command", str), ("scenario", dict), ("model", dict)):
        if not isinstance(data.get(key), kind):
            raise RtpickError(f"{key!r} is missing or not {'text' if kind is str else 'an object'}")
    model = data["model"]
    if not isinstance(model.get("sha256"), str) or not isinstance(model.get("spec"), dict) \
            or not isinstance(model["spec"].get("name"), str):
        raise RtpickError("'model' needs 'sha256' and a 'spec' with a 'name'")
    if not isinstance(data["scenario"].get("scenario", ""), str):
        raise RtpickError("'scenario.scenario' is not text")
    environment = data.get("environment", {})
    configurations = data.get("configurations", [])
    sweeps = data.get("sweeps", {})
    created = data.get("created", "")
    if not isinstance(environment, dict) or not isinstance(configurations, list) or not isinstance(sweeps, dict) \
            or not isinstance(created, str):
        raise RtpickError("'environment', 'sweeps' must be objects, 'configurations' a list, 'created' text")
    records = [Record.from_dict(c, f"configurations[{i}]") for i, c in enumerate(configurations)]
    for name, sweep in sweeps.items():
        points = sweep.get("points") if isinstance(sweep, dict) else None
        if not isinstance(points, list) or not all(
            isinstance(p, dict) and _is_number(p.get("batch")) and _is_number(p.get("throughput")) for p in points
        ):
            raise RtpickError(f"sweeps[{name!r}] needs 'points' of batch and throughput numbers")
        if not isinstance(sweep.get("stopped"), str | type(None)):
            raise RtpickError(f"sweeps[{name!r}].stopped is not text")
    return cls(command=data["command"], scenario=data["scenario"], model=model, environment=environment,
               configurations=records, sweeps=sweeps, created=created)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def versions() -> dict[str, str | None]:
    """Installed library versions, read from package metadata (importing torch just to ask is too slow)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    import psutil

    from rtpick.perf.memory import gpu_inventory

    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "gpu": gpu_inventory(),
        "versions": versions(),
    }


def model_record(model: Any, source: str) -> dict[str, Any]:
    """Path (as the user gave it), content hash and spec of the model measured."""
    return {
        "source": source,
        "path": str(model.path) if getattr(model, "path", None) else None,
        "sha256": model.spec.sha256,
        "spec": model.spec.to_dict(),
    }
