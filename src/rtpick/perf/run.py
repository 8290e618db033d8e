"""`rtpick bench` end to end: check the request, plan one job per configuration, run each (isolated), save.

The plan is validated before anything is built, so a nonsense parameter costs the user nothing. While the
run goes on, results are written to a partial file next to the one asked for (`<name>.partial`), after every
configuration, so an interrupted run keeps what it finished; the file asked for is replaced only when the run
is complete, so an earlier results file of that name survives a run that never finishes (with no earlier
file, an interrupted run's finished part is moved into place). A failed write is reported and the measuring
goes on. With ``repeats`` > 1 each closed-loop job runs in that many fresh
processes, combined by `rtpick.perf.replicates`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.model import open_leading
from rtpick.perf.progress import Progress
from rtpick.perf.record import Record
from rtpick.perf.replicates import combine_records, combine_replicates
from rtpick.perf.request import BenchRequest, command_line
from rtpick.perf.scenarios.offline import DEFAULT_SWEEP
from rtpick.perf.scenarios.registry import get_scenario

__all__ = ["DEFAULT_SWEEP", "BenchRequest", "combine_replicates", "command_line", "plan_batches", "run_bench"]


def fixed_batch(model: Any) -> int | None:
    """The model's batch when it is fixed, else None (dynamic).

    The batch is the leading dim of the inputs that have one. Where any input's leading dim is open, the batch is
    dynamic and an input with a fixed leading dim is not batched there (Silero VAD's ``state`` is ``[2, batch,
    128]``: its 2 is the LSTM's two states, not a batch); where every leading dim is fixed, the first input's is
    the batch.
    """
    leading = [spec.shape[0] for spec in model.spec.inputs if spec.shape]
    if not leading or any(isinstance(dim, str) for dim in leading):
        return None
    return int(leading[0])


def shape_batch(request: BenchRequest, model: Any) -> int | None:
    """The batch a --shape gives: the leading dim it gives the inputs whose leading dim is open (the same for all
    of them), else None."""
    batched = open_leading(model.spec.inputs)
    leading = {shape[0] for name, shape in request.shapes.items() if len(shape) and name in batched}
    if len(leading) > 1:
        raise RtpickError(f"--shape gives different batch sizes ({', '.join(map(str, sorted(leading)))}); give "
                          "every input the same leading dimension")
    return next(iter(leading)) if leading else None


def plan_batches(request: BenchRequest, model: Any) -> list[int]:
    """The batch sizes to measure: --batch, else the model's fixed batch, else --shape's, else the scenario's."""
    fixed, from_shape = fixed_batch(model), shape_batch(request, model)
    if request.batches:
        for batch in request.batches:
            if fixed is not None and batch != fixed:
                raise RtpickError(
                    f"--batch {batch}: the model's batch dimension is fixed at {fixed}; use --batch {fixed} "
                    "or export the model with a dynamic batch axis"
                )
            if from_shape is not None and batch != from_shape:
                raise RtpickError(f"--batch {batch} contradicts --shape's batch {from_shape}; give the batch once "
                                  "(--batch, or the leading dimension of --shape)")
        return sorted(set(request.batches))
    if fixed is not None:
        return [fixed]
    if from_shape is not None:
        return [from_shape]
    return list(get_scenario(request.scenario).default_batches)


def partial_path(json_path: str | os.PathLike[str]) -> Path:
    """Where a run in progress keeps its results: next to the file asked for, never over it."""
    path = Path(json_path)
    return path.with_name(path.name + ".partial")


def run_bench(
    model: Any,
    configs: Sequence[tuple[str, str]],
    request: BenchRequest,
    *,
    json_path: str | os.PathLike[str] | None = None,
    command: str = "",
    on_record: Callable[[Record], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> Any:
    """Run every configuration; returns `Results` (also written to `json_path` when complete).

    `progress` (see `rtpick.perf.progress`) hears the plan, each job's start and end, and the jobs an offline
    sweep skips when it stops early; `on_start`/`on_record` are the plain callbacks for the same events. A
    write that fails is kept in `results.write_errors` (the caller says so and exits non-zero).
    """
    from rtpick.files import check_writable
    from rtpick.model import resolve_shapes
    from rtpick.options import check_options
    from rtpick.perf import accuracy as scoring
    from rtpick.results import Results, environment, model_record
    from rtpick.sources import load_model

    request.validate()
    if request.repeats > 1 and not isinstance(model, str | os.PathLike):
        raise RtpickError("repeats > 1 needs the model as a path or name (each repeat loads it in a new "
                          "process); an in-memory model can only be measured in this process")
    check_options([runtime for runtime, _ in configs], request.options)
    if json_path is not None:
        check_writable(json_path)
        check_writable(partial_path(json_path))
    loaded = load_model(model)
    resolve_shapes(loaded.spec.inputs, request.shapes or None, None)  # a missing --shape fails here, early
    batches = plan_batches(request, loaded)
    labelled = scoring.plan(model, loaded.spec, request.input_path, request.labels, request.accuracy)
    source = os.fspath(model) if isinstance(model, str | os.PathLike) else None
    isolate = request.isolate and source is not None
    results = Results(
        command=command or command_line(source or "MODEL", configs, request, None if json_path is None
                                        else os.fspath(json_path)),
        scenario={**request.describe(), "batches": batches, "isolated": isolate},
        model=model_record(loaded, source or f"in-memory {type(model).__name__}"),
        environment=environment(),
    )

    def save(final: bool = False) -> None:
        if json_path is None:
            return
        target = Path(json_path) if final else partial_path(json_path)
        try:
            results.write(target)
        except (RtpickError, OSError, ValueError) as exc:
            results.write_errors.append(f"could not write {target}: {exc}")
            return
        if final:
            with contextlib.suppress(OSError):
                partial_path(json_path).unlink()

    try:
        _measure_all(model, loaded, configs, request, batches, labelled, source, isolate, results, save,
                     on_record, on_start, progress)
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): with no earlier file to protect, the finished part takes its place
        if json_path is not None and not Path(json_path).exists() and partial_path(json_path).exists():
            with contextlib.suppress(OSError):
                os.replace(partial_path(json_path), json_path)
        raise
    save(final=True)
    return results


def _measure_all(model: Any, loaded: Any, configs: Sequence[tuple[str, str]], request: BenchRequest,
                 batches: list[int], labelled: Any, source: str | None, isolate: bool, results: Any,
                 save: Callable[..., None], on_record: Callable[[Record], None] | None,
                 on_start: Callable[[str], None] | None, progress: Progress | None) -> None:
    """Each configuration at each batch, in order; an offline sweep stops when throughput stops growing."""
    from rtpick.perf.isolation import run_isolated
    from rtpick.perf.scenarios.offline import saturation_batch
    from rtpick.perf.worker import run_job

    scenario = get_scenario(request.scenario)
    timeout = request.timeout_s or (300.0 if request.quick else 1800.0)
    explicit = bool(request.batches)
    if progress is not None:
        progress.plan(len(configs) * len(batches))
    for runtime, precision in configs:
        points: list[tuple[int, float]] = []
        stop_reason = None
        for position, batch in enumerate(batches):
            job = request.job(source or "", runtime, precision, batch, labelled)
            replicates = []
            for repeat in range(request.repeats):
                what = f"{runtime}:{precision} batch {batch}"
                if request.repeats > 1:
                    what += f" repeat {repeat + 1}/{request.repeats}"
                if on_start is not None:
                    on_start(what)
                if progress is not None:
                    progress.start(what)
                replicates.append(run_isolated(job, timeout) if isolate else run_job(job, model=loaded))
            record = replicates[0] if len(replicates) == 1 else combine_records(replicates)
            record.isolated = isolate
            results.configurations.append(record)
            if on_record is not None:
                on_record(record)  # the figures are shown before any write can fail
            if progress is not None:
                progress.done(record)
            save()
            if not scenario.sweeps_batches:
                continue
            if not record.ok:
                stop_reason = (f"batch {batch} ran out of memory" if record.status == "oom"
                               else f"batch {batch} failed: {record.error or record.status}")
                if progress is not None:
                    progress.skip(len(batches) - position - 1, stop_reason)
                break
            throughput = record.headline().throughput
            points.append((batch, throughput if throughput is not None else 0.0))
            if not explicit and len(points) >= 3 and _flat(points):
                stop_reason = "throughput grew less than 5% over the last two batch doublings"
                if progress is not None:
                    progress.skip(len(batches) - position - 1, stop_reason)
                break
        if scenario.sweeps_batches:
            results.sweeps[f"{runtime}:{precision}"] = {
                "points": [{"batch": b, "throughput": t} for b, t in points],
                "saturation_batch": saturation_batch(points),
                "stopped": stop_reason,
            }
            save()


def _flat(points: list[tuple[int, float]]) -> bool:
    (_, a), (_, b), (_, c) = points[-3:]
    return b < 1.05 * a and c < 1.05 * a
