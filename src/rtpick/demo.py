"""`rtpick demo`: every available runtime and precision on the bundled digits classifier, in one table.

For each configuration it builds a session once, then
- runs the bundled held-out set (540 labelled images) in batches of 64 for top-1 accuracy, and compares the
  logits with the reference (ort-cpu fp32) using the tolerance policy of `rtpick.compare`;
- times single-stream latency at batch 1 and closed-loop throughput at batch 64 (rtpick.perf.scenarios);
- records build time and the host (and GPU) memory the configuration added.
int8 is calibrated on 128 training images (never the held-out ones it is scored on).
It is the short version of `rtpick compare` + `rtpick bench`, and prints the commands that measure each row
properly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import one_line
from rtpick.model import Model

EVAL_BATCH = 64
REFERENCE = ("ort-cpu", "fp32")


@dataclass
class DemoRow:
    """One configuration's figures; `error` is set instead when it failed to build or run."""

    runtime: str
    precision: str
    device: str
    error: str = ""
    build_s: float = 0.0
    accuracy: float | None = None
    agreement: float | None = None
    max_abs_error: float | None = None
    within_tolerance: bool | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    host_mem_mb: float | None = None
    gpu_mem_mb: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"


@dataclass
class DemoResult:
    model: str
    eval_images: int
    rows: list[DemoRow]
    latency_method: str
    throughput_method: str
    wall_s: float


def eval_batches(images: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The eval set in fixed-size batches; the last is padded (with real images) so that static-shape runtimes
    compile once. Returns (batch, rows that count)."""
    batches = []
    for start in range(0, len(images), EVAL_BATCH):
        chunk = images[start:start + EVAL_BATCH]
        used = len(chunk)
        if used < EVAL_BATCH:
            chunk = np.concatenate([chunk, images[: EVAL_BATCH - used]])
        batches.append((np.ascontiguousarray(chunk), used))
    return batches


def predict(session: Any, batches: list[tuple[np.ndarray, int]], input_name: str, output_name: str) -> np.ndarray:
    outputs = [session.run({input_name: batch})[output_name][:used] for batch, used in batches]
    return np.concatenate(outputs)


def configurations() -> list[tuple[str, str]]:
    """Every (runtime, precision) this machine can run, reference first."""
    from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime

    configs = [REFERENCE]
    for name in RUNTIMES:
        if not availability(name).ok:
            continue
        configs.extend((name, precision) for precision in get_runtime(name).precisions
                       if (name, precision) != REFERENCE)
    return configs


def run_demo(
    model: Model,
    images: np.ndarray,
    labels: np.ndarray,
    calibration: Path,
    *,
    duration_s: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    from rtpick.comparison.metrics import output_metrics, within_tolerance
    from rtpick.perf.memory import Monitor
    from rtpick.perf.scenarios import single_stream
    from rtpick.runtimes.registry import get_runtime

    started = time.perf_counter()
    input_name = model.spec.inputs[0].name
    output_name = model.spec.outputs[0].name
    batches = eval_batches(images)
    one = {input_name: np.ascontiguousarray(images[:1])}
    many = {input_name: batches[0][0]}
    reference: np.ndarray | None = None
    rows: list[DemoRow] = []
    latency_method = throughput_method = ""
    for runtime_name, precision in configurations():
        runtime = get_runtime(runtime_name)
        row = DemoRow(runtime_name, precision, runtime.device)
        rows.append(row)
        if progress:
            progress(row.config)
        import psutil

        rss_before = psutil.Process().memory_info().rss
        try:
            with Monitor(gpu=runtime.device == "cuda") as monitor:
                options = {"calibration": str(calibration)} if precision == "int8" else {}
                session = runtime.build(model, precision, {input_name: many[input_name].shape}, **options)
                row.build_s = session.info.build_time_s
                row.notes.extend(session.info.notes)
                with session:
                    logits = predict(session, batches, input_name, output_name)
                    latency = single_stream(session, one, min_duration_s=duration_s, min_queries=50, warmup=20)
                    throughput = single_stream(session, many, min_duration_s=duration_s, min_queries=10,
                                               warmup=5)
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the demo
            row.error = one_line(exc)[:240]
            continue
        if reference is None:
            reference = logits
        metrics = output_metrics(reference, logits)
        row.accuracy = float((logits.argmax(1) == labels).mean())
        row.agreement = metrics["top1_agreement"]
        row.max_abs_error = metrics["max_abs_error"]
        row.within_tolerance = within_tolerance(metrics, precision)
        row.p50_ms, row.p99_ms = latency.p50, latency.p99
        row.throughput = throughput.throughput
        memory = monitor.report()
        row.host_mem_mb = max(0.0, (monitor.rss_peak - rss_before) / 2**20)
        row.gpu_mem_mb = memory.get("gpu_memory_peak_mb")
        latency_method, throughput_method = latency.method, throughput.method
    return DemoResult(model.spec.name, len(images), rows, latency_method, throughput_method,
                      time.perf_counter() - started)
