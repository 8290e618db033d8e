"""One configuration, start to finish: load the model, build, first inference, the scenario, memory, accuracy.

`run_job(job)` is the same code in-process (``--no-isolate``) and in a child process
(``python -m rtpick.perf.worker JOB.json OUT.json``), so isolation changes where it runs, never what it
measures. A failure becomes a record with its cause; only the parent decides what to do with it.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rtpick.perf.job import Job
from rtpick.perf.record import Record

OOM_MARKERS = ("out of memory", "outofmemory", "cuda_error_out_of_memory", "failed to allocate",
               "cannot allocate memory", "bad_alloc", "memoryerror")


def is_oom(text: str) -> bool:
    """Whether an error message says the configuration ran out of memory (host or device)."""
    lowered = text.lower().replace(" ", "")
    return any(marker.replace(" ", "") in lowered for marker in OOM_MARKERS)


def run_job(job: Job, model: Any = None) -> Record:
    """Measure one configuration; never raises for the configuration's own failure (it is recorded)."""
    record = Record(runtime=job.runtime, precision=job.precision, batch=job.batch, scenario=job.scenario,
                    options=dict(job.options))
    session = None
    try:
        session = _measure(job, record, model)
    except BaseException as exc:  # noqa: BLE001 - a configuration's failure is data, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        record.status = "oom" if isinstance(exc, MemoryError) or is_oom(str(exc)) else "failed"
        record.error = message
        record.traceback_tail = traceback.format_exc().strip().splitlines()[-6:]
    finally:
        if session is not None:
            session.close()
    return record


def _measure(job: Job, record: Record, model: Any) -> Any:
    from rtpick.data import synthetic_feeds
    from rtpick.model import resolve_shapes, with_batch
    from rtpick.perf.batch_rows import for_scheduler
    from rtpick.perf.memory import Monitor
    from rtpick.perf.scenarios.registry import get_scenario
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model

    start = time.perf_counter()
    loaded = model if model is not None else load_model(job.model)
    record.load_time_s = time.perf_counter() - start
    runtime = get_runtime(job.runtime)
    shapes = resolve_shapes(loaded.spec.inputs, job.shapes or None, None)
    shapes = with_batch(shapes, job.batch, loaded.spec.inputs)
    ranges = {k: tuple(v) for k, v in job.ranges.items()}
    with Monitor(gpu=runtime.device == "cuda") as monitor:
        session = runtime.build(loaded, job.precision, shapes, **job.options)
        record.build_time_s = session.info.build_time_s
        record.build_notes = list(session.info.notes)
        feeds: dict[str, Any] = synthetic_feeds(loaded.spec.inputs, shapes, seed=job.seed, ranges=ranges)
        if job.io == "device" and session.device == "cuda":
            import torch

            feeds = {name: torch.from_numpy(value).to("cuda") for name, value in feeds.items()}
        first = time.perf_counter()
        session.run(feeds)
        session.synchronize()
        record.first_inference_ms = (time.perf_counter() - first) * 1e3
        record.device = session.device
        scenario = get_scenario(job.scenario)
        # a scheduler's scenario runs a model without a batch axis one row per run, as rtpick serve does
        runs_on, fed, params = (session, feeds, job.params) if scenario.closed_loop else \
            for_scheduler(session, feeds, loaded.spec, job.params)
        record.measurement = scenario.run(runs_on, fed, params)
    memory = monitor.report()
    record.warnings = list(memory.pop("warnings"))
    record.memory = memory
    if job.accuracy:
        from rtpick.perf.accuracy import score

        # after the timing and outside the memory monitor: scoring must not disturb what was measured
        record.accuracy, record.accuracy_detail = score(session, job.to_dict(), loaded.spec)
    return session


def main(argv: list[str]) -> int:
    from rtpick.perf.lifeline import tie_to_parent

    tie_to_parent(argv[0])  # start-up: die with the parent process, whatever kills it
    job_path, out_path = Path(argv[0]), Path(argv[1])
    job = Job.from_dict(json.loads(job_path.read_text()))
    record = run_job(job)
    from rtpick.files import atomic_write_bytes

    atomic_write_bytes(out_path, json.dumps(record.to_dict(), default=_plain).encode())
    return 0


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as JSON numbers and lists."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
