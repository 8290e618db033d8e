"""Summaries of latency samples: percentiles, confidence intervals that include drift, a warm-up check.

Everything takes samples in seconds and reports milliseconds, because a report mixes microsecond and second
scale runs and milliseconds read well for both.

**Which interval, and why.** A reader of "p50 1.23 ms [1.21, 1.25]" expects a second identical run to land
inside that bracket. An interval that resamples the individual calls of one run (a plain bootstrap) cannot
promise that: calls next to each other are correlated (CPU frequency, cache state, other tenants, thermal
state all drift over seconds), so it measures only the sampling noise of one stretch of time and comes out
far too narrow. So the closed-loop scenarios measure in `k` blocks spread over the run, and the interval comes
from *sectioning* (batch quantiles), the standard remedy in steady-state simulation output analysis
(Asmussen & Glynn, *Stochastic Simulation*, ch. III "sectioning"; Seila's batch quantile method):

- the point estimate ``P`` is the percentile of all samples pooled (less biased than the mean of block
  percentiles);
- each block gives its own percentile ``q_1 .. q_k``; the standard deviation ``s`` of their logarithms carries
  both the sampling noise inside a block and the drift between blocks;
- the interval is ``P * exp(-/+ t(0.975, k-1) * s / sqrt(k))``.

On the log scale because latency noise is multiplicative (a clock that drops 10% slows every call by 10%) and
tails are skewed: the interval stays positive and is wider above than below, as a latency's uncertainty is.

A t-interval over blocks was chosen over a bootstrap that resamples whole blocks: with 5-10 blocks a block
bootstrap has only a handful of distinct resamples and its percentile interval is known to be too narrow,
while the t quantile widens the interval honestly for the few blocks (2.78 for 5 blocks, 2.26 for 10).
The p99 interval assumes each block's p99 is roughly normal, which needs ~100+ calls per block; with fewer,
the summary says so.

**Independent replications (``--repeats N``).** What sectioning cannot see is a difference that stays
constant through a whole process: where the allocator placed the weights, which cores the runtime's threads
landed on, the state a shared machine was in while that process ran. Every block of one process shares that
offset, so the blocks agree with each other and the interval comes out narrow, and the next process, with
another offset, lands outside it (`benchmarks/results/bench-repeat-README.md` shows identical runs missing
each other's p50 intervals by 1% to 68% on a shared machine). The textbook remedy is the method of independent
replications (Law, *Simulation Modeling and Analysis*, "replication/deletion"; Asmussen & Glynn ch. III): run
the measurement in `N` fresh processes, each with its own start-up, build and warm-up, and take the interval
from the spread *between* processes, which carries the per-process offset as well as everything inside one
process (the between-process spread of a process's percentile already includes its own sampling noise and
drift). `replication_ci_ms` does that on the log scale, for the same reasons as above:

- the point estimate ``G`` is the geometric mean of the per-process percentiles ``x_1 .. x_N`` (each process
  counts once, however many calls it managed; the mean of the logs is what the interval is centred on);
- the interval is ``G * exp(-/+ t(0.975, N-1) * sd(log x_i) / sqrt(N))``.

The cost is N times the time of one run, and few replications give wide intervals honestly (t = 2.78 for 5
processes, 12.7 for 2). `combine_latency_ms` turns the N per-process summaries into one of the same shape
(percentiles and mean: geometric means over processes; max/min: over all calls; n: the sum; std: the pooled
standard deviation of all calls), so reports and `rtpick diff` read a replicated figure like any other.

`bootstrap_ci_ms` (within one run, seeded) is kept for one contiguous sample where no blocks exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20240604
MIN_BLOCKS = 2
SECTIONING_METHOD = ("sectioning: pooled percentile x exp(-/+ t(0.975, k-1) x sd of log per-block percentiles "
                     "/ sqrt(k))")
REPLICATION_METHOD = ("independent replications: geometric mean of the per-process percentiles x exp(-/+ "
                      "t(0.975, N-1) x sd of their logs / sqrt(N))")
MIN_REPLICATES = 2


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


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (e.g. p=0.975), without scipy: a bisection on the regularised incomplete beta.

    Accurate to ~1e-9, which is far below anything a latency interval needs.
    """
    if dof < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if not 0.5 <= p < 1.0:
        raise ValueError("t_quantile takes p in [0.5, 1)")

    def cdf(t: float) -> float:
        x = dof / (dof + t * t)
        return 1.0 - 0.5 * _betainc(dof / 2.0, 0.5, x)

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if cdf(mid) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes' `betacf` form)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


def sectioning_ci_ms(
    blocks_s: Sequence[Sequence[float] | np.ndarray], q: float, *, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """The `q`-th percentile of all blocks pooled, with its sectioning interval (see the module docstring), ms.

    Returns ``{"estimate", "ci": [low, high], "log_half_width", "blocks": [per-block percentile...], "dof"}``;
    `log_half_width` is the half-width on the log scale (0.05 = about +/-5%).
    """
    arrays = [np.asarray(b, dtype=np.float64) * 1e3 for b in blocks_s]
    if len(arrays) < MIN_BLOCKS or any(a.size == 0 for a in arrays):
        raise ValueError(f"sectioning needs at least {MIN_BLOCKS} non-empty blocks")
    pooled = float(np.percentile(np.concatenate(arrays), q))
    per_block = np.array([np.percentile(a, q) for a in arrays])
    if not (pooled > 0 and np.all(per_block > 0)):
        raise ValueError("sectioning on the log scale needs positive latencies")
    k = len(arrays)
    half = t_quantile(0.5 + confidence / 2.0, k - 1) * float(np.log(per_block).std(ddof=1)) / math.sqrt(k)
    return {"estimate": pooled, "ci": [pooled * math.exp(-half), pooled * math.exp(half)], "log_half_width": half,
            "blocks": [float(v) for v in per_block], "dof": k - 1}


def replication_ci_ms(values_ms: Sequence[float], *, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """One percentile measured in N separate processes -> its estimate and interval (see the module docstring).

    `values_ms` holds each process's own percentile, in ms. Returns ``{"estimate", "ci": [low, high],
    "log_half_width", "replicates": [values...], "dof"}``, the same shape as `sectioning_ci_ms`.
    """
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size < MIN_REPLICATES:
        raise ValueError(f"independent replications need at least {MIN_REPLICATES} processes, not {values.size}")
    if not np.all(values > 0):
        raise ValueError("replications on the log scale need positive latencies")
    logs = np.log(values)
    n = int(values.size)
    point = float(math.exp(logs.mean()))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return {"estimate": point, "ci": [point * math.exp(-half), point * math.exp(half)], "log_half_width": half,
            "replicates": [float(v) for v in values], "dof": n - 1}


def median_ci(values: Sequence[float], *, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The median of `values` and a distribution-free interval for it, from order statistics.

    For heavy-tailed replicates (a shared host that is sometimes twice as slow for a while), where a t-interval
    is stretched and its centre pulled by a few extreme values. With n values sorted, ``[x_(k), x_(n-k+1)]``
    covers the true median with probability ``1 - 2 P(B <= k-1)``, ``B ~ Binomial(n, 1/2)``, whatever the
    distribution (the sign-test interval; Conover, *Practical Nonparametric Statistics*, 3.2); ``k`` is the
    largest that keeps that at least `confidence`. Returns ``{"estimate", "ci": [low, high], "coverage"}``.
    """
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    tail = (1.0 - confidence) / 2.0
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2.0**n <= tail:
        below += math.comb(n, k) / 2.0**n
        k += 1
    if k == 0:
        raise ValueError(f"{n} values cannot give a {confidence:.0%} interval for a median from order statistics")
    mid = n // 2
    estimate = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
    return {"estimate": estimate, "ci": [ordered[k - 1], ordered[n - k]], "coverage": 1.0 - 2.0 * below}


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log x)): the centre of a multiplicative spread, so a 2x slower process and a 2x faster one cancel."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or not np.all(array > 0):
        raise ValueError("a geometric mean needs one or more positive values")
    return float(math.exp(np.log(array).mean()))


def combine_latency_ms(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """N per-process `latency_summary` dicts (ms) -> one summary of the same shape, intervals by replication.

    Percentiles and the mean are geometric means over the processes (each process counts once, consistent
    with the interval's centre); max and min are over all calls; `n` is the total; `std` is the pooled
    standard deviation of all calls (exact, from each process's n, mean and std). The `ci` keeps every
    process's p50 and p99 (`replicate_p50`, `replicate_p99`) as a sectioning interval keeps its blocks'.
    """
    if len(summaries) < MIN_REPLICATES:
        raise ValueError(f"combining needs at least {MIN_REPLICATES} processes' summaries")
    out: dict[str, Any] = {f"p{q}": geometric_mean([s[f"p{q}"] for s in summaries]) for q in PERCENTILES}
    counts = np.array([s["n"] for s in summaries], dtype=np.float64)
    means = np.array([s["mean"] for s in summaries], dtype=np.float64)
    stds = np.array([s.get("std", 0.0) for s in summaries], dtype=np.float64)
    total = float(counts.sum())
    pooled_mean = float((counts * means).sum() / total)
    pooled_var = ((counts - 1) * stds**2 + counts * (means - pooled_mean) ** 2).sum() / max(total - 1, 1.0)
    out.update(max=max(s["max"] for s in summaries), min=min(s["min"] for s in summaries),
               mean=geometric_mean(means), std=float(math.sqrt(pooled_var)))
    p50 = replication_ci_ms([s["p50"] for s in summaries])
    p99 = replication_ci_ms([s["p99"] for s in summaries])
    n = len(summaries)
    inner = sorted({(s.get("ci") or {}).get("blocks", 1) for s in summaries})
    out["ci"] = {
        "p50": p50["ci"], "p99": p99["ci"], "confidence": CONFIDENCE,
        "method": f"{REPLICATION_METHOD}, N = {n} processes (between-process spread; each process's own "
                  f"interval is in its replicate summary)",
        "replicates": n, "replicate_p50": p50["replicates"], "replicate_p99": p99["replicates"],
        "log_half_width_p50": p50["log_half_width"], "log_half_width_p99": p99["log_half_width"],
        "blocks_per_replicate": inner[0] if len(inner) == 1 else inner,
    }
    out["n"] = int(total)
    return out


def bootstrap_ci_ms(
    samples_s: Sequence[float] | np.ndarray,
    q: float,
    *,
    confidence: float = CONFIDENCE,
    resamples: int | None = None,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the `q`-th percentile of one contiguous sample, in ms.

    It resamples individual calls, so it reflects only the sampling noise of that stretch of time, not drift
    (see the module docstring); it is used only where a measurement has no blocks. Seeded: the same samples
    always give the same interval. Resamples run in chunks so a 100k-sample run does not allocate gigabytes.
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


def split_blocks(samples_s: Sequence[float] | np.ndarray, k: int) -> list[np.ndarray]:
    """`samples_s` (in time order) cut into `k` consecutive blocks of near-equal size."""
    values = np.asarray(samples_s, dtype=np.float64)
    k = max(1, min(k, values.size))
    return [b for b in np.array_split(values, k) if b.size]


def latency_summary(
    samples_s: Sequence[float] | np.ndarray | None = None,
    *,
    blocks_s: Sequence[Sequence[float] | np.ndarray] | None = None,
) -> dict[str, Any]:
    """Percentiles plus 95% intervals for p50 and p99: what every scenario reports per configuration.

    Give `blocks_s` (samples per block, in time order) for sectioning intervals that include between-block
    drift; with only `samples_s` (one contiguous sample) the interval is the within-run bootstrap, and the
    `method` says so.
    """
    if blocks_s is not None:
        blocks = [np.asarray(b, dtype=np.float64) for b in blocks_s if len(b)]
        samples = np.concatenate(blocks) if blocks else np.asarray([], dtype=np.float64)
    else:
        blocks = []
        samples = np.asarray(samples_s if samples_s is not None else [], dtype=np.float64)
    out: dict[str, Any] = summarize_ms(samples)
    if len(blocks) >= MIN_BLOCKS and all(np.percentile(b, 50) > 0 for b in blocks):
        p50, p99 = sectioning_ci_ms(blocks, 50), sectioning_ci_ms(blocks, 99)
        smallest = min(b.size for b in blocks)
        note = (f"; blocks of {smallest} calls or fewer hold under one sample beyond their p99, so the p99 "
                "interval is rough" if smallest < 100 else "")
        out["ci"] = {
            "p50": p50["ci"], "p99": p99["ci"], "confidence": CONFIDENCE,
            "method": f"{SECTIONING_METHOD}, k = {len(blocks)} blocks{note}",
            "blocks": len(blocks), "block_p50": p50["blocks"], "block_p99": p99["blocks"],
            "log_half_width_p50": p50["log_half_width"], "log_half_width_p99": p99["log_half_width"],
        }
    else:
        out["ci"] = {
            "p50": list(bootstrap_ci_ms(samples, 50)), "p99": list(bootstrap_ci_ms(samples, 99)),
            "confidence": CONFIDENCE, "blocks": 1,
            "method": "percentile bootstrap over the calls of one contiguous run (sampling noise only, no drift)",
        }
    out["n"] = int(samples.size)
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
