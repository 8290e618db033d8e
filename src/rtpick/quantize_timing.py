"""Timing ONNX Runtime sessions against each other on a shared CPU, for the int8 variant search and its benchmark.

Interleaving (rounds of A, B, C... in rotating order, medians of the rounds) makes a busy neighbour slow every
session alike. Two things make a naive interleaving lie, both measured on the 2-core machine of the benchmark
(ddddocr-det, fp32 and seven int8 variants; fp32 alone 36 ms):

- ONNX Runtime's intra-op workers spin after a run (``session.intra_op.allow_spinning``, on by default): the
  workers of the session timed before keep two cores busy while the next one runs, which made fp32 read
  106 ms and the int8 variants 1.4-3x their own time, by an amount that depends on the order. Sessions built by
  `timing_session` do not spin; alone, that changes their time by under 10% (on and off measured alike);
- the first call after a switch runs with the other session's weights in the caches: every slot starts with one
  untimed call, so each session is timed warm, as it runs when deployed alone (interleaved medians then matched
  the sessions' own times alone within the noise: 36.2 vs 36.7 ms for fp32, 16.2-24.6 vs 15.9-22.4 ms for int8).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

SLOT_S = 0.02  # each session runs for about this long per round (timed part)
DROP_AFTER = 3  # rounds after which sessions far slower than the best stop being timed
DROP_FACTOR = 1.5


def timing_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for timing against others: all graph optimisations, workers that sleep
    instead of spinning between runs (see the module's docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(sessions: Mapping[str, Any], feed: dict[str, np.ndarray], budget_s: float,
            min_rounds: int = 5, max_rounds: int = 15) -> tuple[dict[str, float], int]:
    """Median seconds per call of each session, timed in interleaved rounds (the order rotates every round);
    each slot is one untimed call, then about `SLOT_S` of timed calls. Sessions more than `DROP_FACTOR` slower
    than the best so far (the first session, the reference, always stays) drop out after `DROP_AFTER` rounds.
    Runs at least `min_rounds` rounds, then stops when `budget_s` is spent."""
    names = list(sessions)
    for name in names:
        sessions[name].run(None, feed)
    first = time.perf_counter()
    sessions[names[0]].run(None, feed)
    calls = max(1, min(50, int(SLOT_S / max(time.perf_counter() - first, 1e-5))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    active = list(names)
    started, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - started < budget_s):
        order = active[rounds % len(active):] + active[:rounds % len(active)]
        for name in order:
            run = sessions[name].run
            run(None, feed)  # warm: caches and thread pool back to this session
            t0 = time.perf_counter()
            for _ in range(calls):
                run(None, feed)
            samples[name].append((time.perf_counter() - t0) / calls)
        rounds += 1
        if rounds == DROP_AFTER and len(active) > 2:
            best = min(float(np.median(samples[n])) for n in active)
            active = [n for n in active if n == names[0] or float(np.median(samples[n])) <= DROP_FACTOR * best]
    return {name: float(np.median(values)) for name, values in samples.items() if values}, rounds
