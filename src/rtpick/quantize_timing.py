"""Timing ONNX Runtime sessions against each other on a shared CPU, for the int8 variant search and its benchmark.

Interleaving (rounds of A, B, C... in rotating order, medians of the rounds) makes a busy neighbour slow every
session alike. Two things make a naive interleaving lie, both measured on the 2-core machine of the benchmark:

- ONNX Runtime's intra-op workers spin after a run (``session.intra_op.allow_spinning``, on by default): the
  workers of the session timed before keep the cores busy while the next one runs. With 7 sessions of
  ddddocr-det back to back, fp32 read 106 ms against 36 ms alone and the int8 variants 1.4-3x their own time, by
  an amount that depended on the order. Turning spinning off removes that, but is not how the sessions are
  deployed, and it costs the many-small-op int8 graphs more than fp32 (bert-like: 1.81x without spinning, 2.12x
  alone with it). So each slot starts with a `SETTLE_S` pause, long enough for the previous session's workers to
  go to sleep (10 ms was not; 30 ms was), and sessions keep ONNX Runtime's defaults;
- the first call after a switch runs with the other session's weights in the caches: each slot's first call is
  untimed, so every session is timed warm, as it runs when deployed alone.

With both, the interleaved medians of fp32 and five int8 variants of ddddocr-det matched each one's time alone,
ORT defaults, within the noise (34.2 vs 34.0-34.3 ms fp32; 14.5-56.0 vs 15.2-57.0 ms int8).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SLOT_S = 0.02  # each session runs for about this long per round (timed part)
SETTLE_S = 0.05  # pause before each slot: the previous session's spinning workers go to sleep
DROP_AFTER = 3  # rounds after which sessions far slower than the best stop being timed
DROP_FACTOR = 1.5
SURELY_SLOWER_AFTER = 6  # rounds from which a session surely slower than the fastest stops being timed


def timing_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session as `ort-cpu` builds one (all graph optimisations, ONNX Runtime's default
    spinning), `threads` intra-op threads (0: ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(sessions: Mapping[str, Any], feed: dict[str, np.ndarray], budget_s: float,
            min_rounds: int = 5, max_rounds: int = 15, *, threads: int = 0, drop: bool = True,
            settled: Callable[[Mapping[str, list[float]]], bool] | None = None) -> tuple[dict[str, float], int]:
    """Median seconds per call of each session, timed in interleaved rounds (the order rotates every round);
    each slot is a `SETTLE_S` pause, one untimed call, then about `SLOT_S` of timed calls. Sessions more than
    `DROP_FACTOR` slower than the best so far (the first session, the reference, always stays) drop out after
    `DROP_AFTER` rounds, and from `SURELY_SLOWER_AFTER` rounds on, those whose per-round time over the fastest's
    (paired within each round) has a 95% interval wholly above 1. Runs at least `min_rounds` rounds, then stops
    when `budget_s` is spent or `settled` (given each session's per-round seconds) says the decision the rounds
    serve is made.

    `drop=False` times every session in every round (a benchmark's ratios, where the search wants only the best).
    `threads` is the sessions' intra-op thread count: with 1, ONNX Runtime runs on the calling thread and has no
    workers to spin, so there is nothing to settle and the pause is left out."""
    names = list(sessions)
    for name in names:
        sessions[name].run(None, feed)
    first = time.perf_counter()
    sessions[names[0]].run(None, feed)
    calls = max(1, min(50, int(SLOT_S / max(time.perf_counter() - first, 1e-5))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    active = list(names)
    settle_s = 0.0 if threads == 1 else SETTLE_S
    started, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - started < budget_s):
        if rounds >= min_rounds and settled is not None and settled(samples):
            break
        order = active[rounds % len(active):] + active[:rounds % len(active)]
        for name in order:
            run = sessions[name].run
            time.sleep(settle_s)  # the previous session's workers stop spinning
            run(None, feed)  # warm: caches and thread pool back to this session
            t0 = time.perf_counter()
            for _ in range(calls):
                run(None, feed)
            samples[name].append((time.perf_counter() - t0) / calls)
        rounds += 1
        if drop and len(active) > 2:
            active = _still_timed(samples, active, names[0], rounds)
    return {name: float(np.median(values)) for name, values in samples.items() if values}, rounds


def _still_timed(samples: Mapping[str, list[float]], active: list[str], reference: str, rounds: int) -> list[str]:
    """The sessions timed in the next round: the reference always; the others unless far slower than the best
    after `DROP_AFTER` rounds or, from `SURELY_SLOWER_AFTER` on, surely slower than the fastest."""
    if rounds == DROP_AFTER:
        best = min(float(np.median(samples[n])) for n in active)
        return [n for n in active if n == reference or float(np.median(samples[n])) <= DROP_FACTOR * best]
    if rounds >= SURELY_SLOWER_AFTER:
        fastest = _fastest(samples, active)
        return [n for n in active if n == reference or not _surely_slower(samples[n], fastest)]
    return active


def _fastest(samples: Mapping[str, list[float]], active: list[str]) -> list[float]:
    return samples[min(active, key=lambda n: float(np.median(samples[n])))]


def _surely_slower(times: list[float], fastest: list[float]) -> bool:
    interval = _paired_ratio_interval(times, fastest)
    return interval is not None and interval[0] > 1.0


def ratio_settled(thresholds: tuple[float, ...]) -> Callable[[Mapping[str, list[float]]], bool]:
    """For two sessions timed head to head (the reference first): settled once a distribution-free 95% interval
    of the median per-round ratio (reference time / other time, paired within each round) lies clear of every
    threshold: a keep-or-refuse decision against any of them is then made at 95% confidence, and more rounds
    would only narrow a figure no decision turns on."""

    def settled(samples: Mapping[str, list[float]]) -> bool:
        reference, other = list(samples.values())[:2]
        interval = _paired_ratio_interval(reference, other)
        return interval is not None and all(not interval[0] <= t <= interval[1] for t in thresholds)

    return settled


def _paired_ratio_interval(numerators: list[float], denominators: list[float]) -> tuple[float, float] | None:
    """The 95% order-statistics interval (`rtpick.perf.stats.median_ci`) of the median of the per-round ratios
    numerator / denominator; None while there are too few rounds for one."""
    from rtpick.perf.stats import median_ci

    ratios = [a / b for a, b in zip(numerators, denominators, strict=False) if b > 0]
    try:
        low, high = median_ci(ratios)["ci"]
    except ValueError:
        return None
    return low, high
