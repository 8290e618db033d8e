"""Summaries of latency samples: percentiles, bootstrap confidence intervals, and a warm-up stability check.

Everything takes samples in seconds and reports milliseconds, because a report mixes microsecond and second
scale runs and milliseconds read well for both. The bootstrap is seeded, so the same samples always give the
same interval (two reports of one results file must agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20240604


def summarize_ms(samples_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p95/p99/max/min/mean/std of `samples_s`, in milliseconds. Empty input is an error, not NaN."""
    values = np.asarray(samples_s, dtype=np.float64) * 1e3
    if values.size == 0:
        raise ValueError("no samples to summarise")
    out = {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
    out.update(
        max=float(values.max()), min=float(values.min()), mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
    )
    return out


def bootstrap_ci_ms(
    samples_s: Sequence[float] | np.ndarray,
    q: float,
    *,
    confidence: float = CONFIDENCE,
    resamples: int | None = None,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the `q`-th percentile, in ms.

    Why a bootstrap: latency distributions are skewed with long tails, so a normal-theory interval around a
    percentile is wrong; resampling makes no assumption about the shape. Resamples run in chunks so that a
    100k-sample run does not allocate gigabytes.
    """
    values = np.asarray(samples_s, dtype=np.float64) * 1e3
    n = values.size
    if n == 0:
        raise ValueError("no samples for a confidence interval")
    if n == 1:
        return float(values[0]), float(values[0])
    if resamples is None:
        resamples = 1000 if n <= 20_000 else 300
    rng = np.random.default_rng(seed)
    estimates = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(k, n))
        estimates[done:done + k] = np.percentile(values[idx], q, axis=1)
        done += k
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def latency_summary(samples_s: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Percentiles plus 95% bootstrap intervals for p50 and p99: what every scenario reports per configuration."""
    out: dict[str, Any] = summarize_ms(samples_s)
    out["ci"] = {
        "p50": list(bootstrap_ci_ms(samples_s, 50)),
        "p99": list(bootstrap_ci_ms(samples_s, 99)),
        "confidence": CONFIDENCE,
        "method": "percentile bootstrap",
    }
    out["n"] = int(np.asarray(samples_s).size)
    return out


def is_stable(samples_s: Sequence[float], window: int = 10, rel_tol: float = 0.05) -> bool:
    """True when the median of the last `window` samples is within `rel_tol` of the window before it.

    Warm-up runs until this holds: caches, allocators, JIT compilers and GPU clocks settle at different speeds,
    so a fixed count is either too short for a compiled runtime or wasteful for a simple one.
    """
    if len(samples_s) < 2 * window:
        return False
    last = float(np.median(samples_s[-window:]))
    before = float(np.median(samples_s[-2 * window:-window]))
    if before <= 0:
        return False
    return abs(last - before) / before <= rel_tol


def intervals_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two [low, high] intervals overlap: if they do, a difference is within the measured noise."""
    return a[0] <= b[1] and b[0] <= a[1]
