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
    configurations: list[dict[str, Any]] = field(default_factory=list)
    sweeps: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def ok(self) -> list[dict[str, Any]]:
        return [c for c in self.configurations if c.get("status") == "ok"]

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.configurations if c.get("status") != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "command": self.command,
            "environment": self.environment,
            "model": self.model,
            "scenario": self.scenario,
            "configurations": self.configurations,
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
        return cls(
            command=data["command"], scenario=data["scenario"], model=data["model"],
            environment=data.get("environment", {}), configurations=list(data.get("configurations", [])),
            sweeps=dict(data.get("sweeps", {})), created=data.get("created", ""),
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomically replace `path`: a reader (or a crash) sees the old file or the new one, never half."""
        write_json(path, self.to_dict(), "results file", default=_json_default)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Results:
        return cls.from_dict(read_json(path, "results file"), source=str(path))


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
