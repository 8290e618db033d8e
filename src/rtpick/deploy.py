"""The deploy file: one chosen configuration, written by ``rtpick recommend --save`` and used as it is.

Why a file: the configuration a recommendation picked (model and its hash, runtime, precision, every option,
batch, input shapes) must be the one that runs in production, not a re-typed approximation of it.
`rtpick.load("deploy.json")` and ``--config deploy.json`` read it; the model's sha256 is checked on every
read, so a deploy file never silently runs against a different model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import read_json, write_json
from rtpick.runtimes import DEFAULT_RUNTIME

SCHEMA = "rtpick.deploy"
SCHEMA_VERSION = 1


def _ranges(data: Any) -> dict[str, list[float]]:
    """A deploy file's ``input_ranges``: {name: [lo, hi]} with lo < hi (a ValueError otherwise)."""
    out = {}
    for name, pair in dict(data).items():
        lo, hi = (float(v) for v in pair)
        if not lo < hi:
            raise ValueError(f"input_ranges {name}: {lo} is not below {hi}")
        out[str(name)] = [lo, hi]
    return out


@dataclass
class DeployConfig:
    """A configuration fixed for deployment; `to_dict()` is the JSON document."""

    model_source: str  # a zoo name (rtpick:digits, torchvision:resnet50) or an absolute file path
    model_sha256: str
    model_name: str
    runtime: str
    precision: str
    options: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    shapes: dict[str, list[int]] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)  # the figures that chose it, with how measured
    # --input-range values the configuration was checked and measured with (an input that needs particular
    # values, such as a sample rate); warm-ups take them too (rtpick serve, Triton's model_warmup)
    input_ranges: dict[str, list[float]] = field(default_factory=dict)
    command: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "command": self.command,
            "model": {"source": self.model_source, "sha256": self.model_sha256, "name": self.model_name},
            "runtime": self.runtime,
            "precision": self.precision,
            "options": self.options,
            "batch": self.batch,
            "shapes": self.shapes,
            "measured": self.measured,
        } | ({"input_ranges": self.input_ranges} if self.input_ranges else {})

    @classmethod
    def from_dict(cls, data: Any, source: str = "deploy file") -> DeployConfig:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise RtpickError(f"{source} is not an rtpick deploy file (no '{SCHEMA}' schema marker); "
                              "write one with rtpick recommend ... --save FILE")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise RtpickError(f"{source} uses deploy schema version {data.get('schema_version')}, this rtpick "
                              f"reads version {SCHEMA_VERSION}; save it again with this version")
        try:
            model = data["model"]
            return cls(
                model_source=str(model["source"]), model_sha256=str(model["sha256"]),
                model_name=str(model.get("name", "")), runtime=str(data["runtime"]),
                precision=str(data["precision"]), options=dict(data.get("options") or {}),
                batch=int(data.get("batch") or 1),
                shapes={k: [int(d) for d in v] for k, v in (data.get("shapes") or {}).items()},
                measured=dict(data.get("measured") or {}), command=str(data.get("command", "")),
                created=str(data.get("created", "")), input_ranges=_ranges(data.get("input_ranges") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RtpickError(f"{source} is a damaged deploy file ({type(exc).__name__}: {exc}); "
                              "save it again with rtpick recommend ... --save FILE") from exc

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: (lo, hi) for name, (lo, hi) in self.input_ranges.items()}

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomically replace `path`: a reader sees the old file or the new one, never half of either."""
        target = Path(path)
        if target.is_dir():
            raise RtpickError(f"--save {str(target)!r} is a directory; give a file name such as deploy.json")
        write_json(target, self.to_dict(), "deploy file")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DeployConfig:
        return cls.from_dict(read_json(path, "deploy file"), source=str(path))

    def load_model(self) -> Any:
        """The model this file was made for; a different model at that path (another sha256) is an error.

        A file's hash is checked before the model is loaded: loading is where a swapped file would do harm.
        """
        from rtpick.sources import load_model

        self._check_file(self.model_source)
        model = load_model(self.model_source)
        if model.spec.sha256 != self.model_sha256:
            raise self._mismatch(self.model_source, model.spec.sha256)
        return model

    def check_model(self, model: Any) -> Any:
        """`model` (a source or a loaded `Model`) loaded and checked against this file's hash (files before loading)."""
        from rtpick.model import Model
        from rtpick.sources import load_model

        if not isinstance(model, Model):
            self._check_file(model)
        loaded = model if isinstance(model, Model) else load_model(model)
        if loaded.spec.sha256 != self.model_sha256:
            raise self._mismatch(loaded.spec.name, loaded.spec.sha256)
        return loaded

    def _check_file(self, source: Any) -> None:
        """For a model file, its sha256 (external weights included) must match before anything loads it.

        Zoo names (torchvision:<name>, rtpick:digits) are code rtpick already trusts; they are checked after loading.
        """
        if not isinstance(source, str | os.PathLike) or not Path(source).is_file():
            return
        from rtpick.model_files import source_sha256

        actual = source_sha256(source)
        if actual != self.model_sha256:
            raise self._mismatch(str(source), actual)

    def _mismatch(self, what: str, actual: str) -> RtpickError:
        return RtpickError(
            f"the model {what!r} has sha256 {actual[:16]}..., but the deploy file was made for "
            f"{self.model_name or self.model_source} ({self.model_sha256[:16]}...); it was not loaded. "
            "Re-run rtpick recommend on this model"
        )

    def build(self, model: Any = None) -> Any:
        """A `Session` exactly as the file says: the same runtime, precision, options and shapes."""
        from rtpick.runtimes.registry import get_runtime

        loaded = self.load_model() if model is None else self.check_model(model)
        shapes = {k: tuple(v) for k, v in self.shapes.items()}
        return get_runtime(self.runtime).build(loaded, self.precision, shapes, **self.options)


def model_source_for(model: Any, loaded: Any) -> str:
    """What a deploy file should name: a zoo name as given, a file as an absolute path; in-memory models cannot."""
    if isinstance(model, str) and ":" in model and not Path(model).exists():
        return model  # a zoo name
    if isinstance(model, str | os.PathLike):
        return str(Path(model).resolve())
    if getattr(loaded, "path", None) is not None and loaded.spec.source in ("onnx", "pt2"):
        return str(Path(loaded.path).resolve())
    raise RtpickError(
        "an in-memory model cannot be named in a deploy file; save it (.onnx or .pt2) and recommend on the file"
    )


def is_deploy_file(value: Any) -> bool:
    """Whether `value` is a path to an rtpick deploy file (a .json carrying the deploy schema marker)."""
    if not isinstance(value, str | os.PathLike):
        return False
    path = Path(value)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def for_command(
    config_file: str,
    model: str | None,
    runtimes: str | None,
    options: dict[str, Any],
    batch: list[int] | None,
    shapes: dict[str, tuple[int, ...]],
) -> tuple[str, str, dict[str, Any], list[int], dict[str, tuple[int, ...]]]:
    """``--config deploy.json`` for a command: (model, configs, options, batches, shapes) from the file.

    The file is used as it is, so a flag that would change what it fixes (-r, --option, --batch, --shape) is
    a contradiction, refused; a MODEL given beside it must be the model the file was made for.
    """
    deploy = DeployConfig.read(config_file)
    clashes = [flag for flag, given in (("-r", runtimes), ("--option", options), ("--batch", batch),
                                        ("--shape", shapes)) if given]
    if clashes:
        raise RtpickError(f"--config {config_file} fixes the configuration; drop {', '.join(clashes)} "
                          "or edit the deploy file")
    if model is not None:
        deploy.check_model(model)
        source = model
    else:
        deploy.load_model()
        source = deploy.model_source
    shaped = {k: tuple(v) for k, v in deploy.shapes.items()}
    return source, deploy.config, dict(deploy.options), [deploy.batch], shaped


def load_deploy(path: str | os.PathLike[str], runtime: str = DEFAULT_RUNTIME, precision: str = "fp32", *,
                shapes: Any = None, batch: int | None = None, weights: Any = None, **options: Any) -> Any:
    """`rtpick.load("deploy.json")`: the session the file describes, as it is.

    The file fixes the configuration, so arguments that would change it are refused rather than silently
    ignored (`runtime`/`precision` are accepted only at their defaults or equal to the file's).
    """
    deploy = DeployConfig.read(path)
    clashes = [name for name, given in (("shapes", shapes), ("batch", batch), ("weights", weights),
                                        ("options", options)) if given]
    if runtime not in (DEFAULT_RUNTIME, deploy.runtime):
        clashes.append("runtime")
    if precision not in ("fp32", deploy.precision):
        clashes.append("precision")
    if clashes:
        raise RtpickError(f"{path} fixes the configuration ({deploy.config}); drop {', '.join(clashes)} "
                          "or edit the deploy file")
    return deploy.build()
