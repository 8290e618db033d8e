"""One configuration's row in a recommendation, and the words rows are named by.

Its own module so that the ranking (`rtpick.recommendation.ranking`) and the rules it applies
(`rtpick.recommendation.rules`) both take it from here, neither from the other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rtpick.recommendation.constraints import NOT_MEASURED


def joules_text(joules: float) -> str:
    """Energy with its unit, in mJ below one joule: "41.2 mJ", "1.37 J"."""
    return f"{joules * 1e3:.3g} mJ" if joules < 1 else f"{joules:.3g} J"


@dataclass
class Candidate:
    """One configuration's row: its figures (units in the names), its verdict and the reason."""

    config: str
    runtime: str
    precision: str
    device: str = ""
    variant: str = ""  # the build options in words ("fuse_conv, cuda_graph"; "" for the runtime's defaults)
    options: dict[str, Any] = field(default_factory=dict)
    batch: int | None = None
    verdict: str = NOT_MEASURED
    reason: str = ""
    rank: int | None = None
    p99_ms: float | None = None
    p50_ms: float | None = None
    throughput: float | None = None  # samples per second
    on_time_fraction: float | None = None
    method: str = ""
    build_time_s: float | None = None
    host_mem_mb: float | None = None
    gpu_mem_mb: float | None = None
    accuracy: float | None = None  # top-1 on labelled data, 0..1
    reference_accuracy: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference, 0..1
    correctness: str = ""  # compare's status: reference, pass, mismatch, error, unchecked
    joules_per_inference: float | None = None  # GPU energy per sample over the measured window (NVML)
    energy_status: str = ""  # "measured", or "not measured: <why>" as the record says
    throttled: str = ""  # the throttling clock-event reasons seen while measuring, in words ("" for none)
    cost_ms: float | None = None  # ranking cost per inference
    miss: float | None = None  # how far from the budget, relative (0.25 = 25% short/over); None when it meets

    @property
    def name(self) -> str:
        """The configuration with its options: what a row is called and what a search candidate is keyed by."""
        return candidate_name(self.config, self.variant)

    def to_dict(self) -> dict[str, Any]:
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        out["name"] = self.name
        return out

    def __repr__(self) -> str:
        figures = [f"p99 {self.p99_ms:.3g} ms" if self.p99_ms is not None else "",
                   f"{self.throughput:,.0f}/s" if self.throughput is not None else "",
                   f"{joules_text(self.joules_per_inference)}/inf" if self.joules_per_inference is not None else ""]
        shown = ", ".join(f for f in figures if f)
        return f"<Candidate {self.name} b{self.batch}: {self.verdict}{' (' + shown + ')' if shown else ''}>"


def variant_label(options: dict[str, Any]) -> str:
    """Build options in words, the same words a runtime's declared `Variant.label` uses."""
    return ", ".join(k if v is True else f"{k}={v}" for k, v in sorted(options.items()))


def candidate_name(config: str, variant: str) -> str:
    return f"{config} [{variant}]" if variant else config
