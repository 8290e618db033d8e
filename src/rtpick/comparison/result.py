"""What a comparison produced: one `ComparisonRow` per configuration and the `Comparison` of them all, with
`to_dict()` for the JSON `rtpick compare --json` writes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rtpick.comparison.metrics import OutputCheck, json_number
from rtpick.comparison.policy import OK_STATUSES, STATUS_REFERENCE, TOLERANCES, Tolerance
from rtpick.model import ModelSpec

# ------------------------------------------------------------------------------------------------- result


@dataclass
class ComparisonRow:
    """One configuration's outcome: status, the one-line reason when not passing, and per-output metrics."""

    config: str
    runtime: str
    precision: str
    status: str
    reason: str = ""
    tolerance: Tolerance | None = None
    outputs: list[OutputCheck] = field(default_factory=list)
    build_time_s: float | None = None
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the options the user gave for this runtime
    unavailable: bool = False  # the runtime refused the model before running it (MissingRuntime: e.g. fp8 on a CNN)

    @property
    def label(self) -> str:
        """The configuration with the options it ran with, as a reader needs it ("ort-cuda:fp16 prefer_nhwc=True")."""
        return " ".join([self.config, *(f"{key}={value}" for key, value in self.options.items())])

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def _values(self, key: str) -> list[float]:
        return [v for v in (getattr(o, key) for o in self.outputs) if v is not None]

    @property
    def max_abs(self) -> float | None:
        values = self._values("max_abs")
        return max(values) if values else None

    @property
    def max_rel(self) -> float | None:
        values = self._values("max_rel")
        return max(values) if values else None

    @property
    def rel_l2(self) -> float | None:
        values = self._values("rel_l2")
        return max(values) if values else None

    @property
    def cosine(self) -> float | None:
        values = self._values("cosine")
        return min(values) if values else None

    @property
    def top1_agreement(self) -> float | None:
        values = self._values("top1_agreement")
        return min(values) if values else None

    @property
    def top5_agreement(self) -> float | None:
        values = self._values("top5_agreement")
        return min(values) if values else None

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy against the labels, of the first classifier-like output."""
        values = self._values("accuracy")
        return values[0] if values else None

    @property
    def nan(self) -> int:
        return sum(o.nan for o in self.outputs)

    @property
    def inf(self) -> int:
        return sum(o.inf for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "runtime": self.runtime,
            "precision": self.precision,
            "status": self.status,
            "reason": self.reason,
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            "max_abs": json_number(self.max_abs),
            "max_rel": json_number(self.max_rel),
            "rel_l2": json_number(self.rel_l2),
            "cosine": json_number(self.cosine),
            "top1_agreement": self.top1_agreement,
            "top5_agreement": self.top5_agreement,
            "accuracy": self.accuracy,
            "nan": self.nan,
            "inf": self.inf,
            "build_time_s": self.build_time_s,
            "options": dict(self.options),
            "notes": list(self.notes),
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class Comparison:
    """Every configuration against one reference, on one set of feeds: data to print, save or assert on."""

    model: ModelSpec
    reference: str
    feeds_description: str
    rows: list[ComparisonRow]
    feed_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the reference ran and every configuration is within tolerance."""
        return bool(self.rows) and all(row.ok for row in self.rows) and any(
            row.status == STATUS_REFERENCE for row in self.rows
        )

    def __repr__(self) -> str:
        """A short summary (the full document is `to_dict()`): the verdict and one line per configuration."""
        lines = [f"<Comparison {self.model.name} against {self.reference}: "
                 f"{'all within tolerance' if self.passed else 'NOT all within tolerance'}>"]
        for row in self.rows:
            lines.append(f"  {row.label}: {row.status}" + (f": {row.reason}" if row.reason else ""))
        return "\n".join(lines)

    def row(self, config: str) -> ComparisonRow:
        for row in self.rows:
            if row.config == config:
                return row
        raise KeyError(config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "rtpick.compare",
            "model": self.model.to_dict(),
            "reference": self.reference,
            "feeds": self.feeds_description,
            "feed_shapes": self.feed_shapes,
            "passed": self.passed,
            "notes": list(self.notes),
            "tolerances": {name: asdict(tol) for name, tol in TOLERANCES.items()},
            "rows": [row.to_dict() for row in self.rows],
        }
