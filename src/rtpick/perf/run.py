"""`rtpick bench` end to end: check the request, plan one job per configuration, run each (isolated), save.

The plan is validated before anything is built, so a nonsense parameter costs the user nothing; the results
file is rewritten atomically after each configuration, so an interrupted run keeps what it finished. With
``repeats`` > 1 each closed-loop job runs in that many fresh processes and `combine_replicates` turns their
records into one record of the usual shape, its intervals from the spread between processes (independent
replications, see `rtpick.perf.stats`), every process's own summary kept beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.progress import Progress

SCENARIOS = ("single-stream", "offline", "server", "multistream")
CLOSED_LOOP = ("single-stream", "offline")
DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class BenchRequest:
    """What the user asked for; the CLI and `rtpick.bench` both fill one in."""

    scenario: str = "single-stream"
    batches: list[int] | None = None
    quick: bool = False
    duration_s: float | None = None
    rate_qps: float | None = None
    find_max: bool = False
    p99_ms: float | None = None
    streams: int | None = None
    fps: float | None = None
    deadline_ms: float | None = None
    find_max_streams: bool = False
    max_queue_delay_ms: float | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    # rtpick.options' forms: {"ort-cpu.threads": 2, "channels_last": True} or {"ort-cpu": {"threads": 2}}
    options: dict[str, Any] = field(default_factory=dict)
    io: str = "host"
    isolate: bool = True
    timeout_s: float | None = None
    keep_samples: bool = False
    seed: int = 0
    blocks: int | None = None
    block_pause_s: float = 0.0
    input_path: str | None = None
    labels: str | None = None
    accuracy: bool = True
    repeats: int = 1

    def validate(self) -> None:
        """One clear line for every parameter that makes no sense, before any model is built."""
        if self.scenario not in SCENARIOS:
            raise RtpickError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        for batch in self.batches or []:
            if batch < 1:
                raise RtpickError(f"--batch values must be positive whole numbers, not {batch}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise RtpickError(f"--duration must be a positive number of seconds, not {self.duration_s}")
        if self.io not in ("host", "device"):
            raise RtpickError(f"--io must be host or device, not {self.io!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise RtpickError(f"--timeout must be positive, not {self.timeout_s}")
        if self.blocks is not None and self.blocks < 2:
            raise RtpickError(f"--blocks must be at least 2 (the intervals come from the spread between blocks), "
                              f"not {self.blocks}")
        if self.block_pause_s < 0:
            raise RtpickError(f"--block-pause must be zero or more seconds, not {self.block_pause_s}")
        if self.repeats < 1:
            raise RtpickError(f"--repeats must be at least 1 (processes per configuration), not {self.repeats}")
        if self.repeats > 1 and self.scenario not in CLOSED_LOOP:
            raise RtpickError(f"--repeats applies to single-stream and offline (closed-loop) scenarios, not "
                              f"{self.scenario}")
        if self.repeats > 1 and not self.isolate:
            raise RtpickError("--repeats runs each configuration in separate processes; it cannot be combined "
                              "with --no-isolate")
        if self.max_queue_delay_ms is not None and self.max_queue_delay_ms < 0:
            raise RtpickError(f"--max-queue-delay-ms cannot be negative ({self.max_queue_delay_ms})")
        if self.scenario == "server":
            if self.find_max:
                if self.p99_ms is None or not self.p99_ms > 0:
                    raise RtpickError("--find-max needs --p99-ms with a positive bound in milliseconds")
            elif self.rate_qps is None:
                raise RtpickError("the server scenario needs --rate QPS, or --find-max --p99-ms X")
            elif not self.rate_qps > 0:
                raise RtpickError(f"--rate must be a positive number of queries per second, not {self.rate_qps}")
        elif self.find_max or self.rate_qps is not None:
            raise RtpickError("--rate and --find-max belong to --scenario server")
        if self.scenario == "multistream":
            if self.fps is None or not self.fps > 0:
                raise RtpickError(f"--fps must be a positive number of frames per second, not {self.fps}")
            if self.deadline_ms is not None and not self.deadline_ms > 0:
                raise RtpickError(f"--deadline-ms must be a positive number of milliseconds, not {self.deadline_ms}")
            if not self.find_max_streams and (self.streams is None or self.streams < 1):
                raise RtpickError("the multistream scenario needs --streams N (N >= 1), or --find-max-streams")
        elif self.streams is not None or self.fps is not None or self.find_max_streams:
            raise RtpickError("--streams, --fps and --find-max-streams belong to --scenario multistream")

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v not in (None, False, {}, [])}
        out["scenario"] = self.scenario
        out["blocks"] = self.block_count()
        out["accuracy"] = self.accuracy
        out.pop("ranges", None)
        out["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        return out


    def block_count(self) -> int:
        """Blocks per closed-loop measurement (or sections of a server run): the user's, else the default."""
        from rtpick.perf.scenarios import DEFAULT_BLOCKS, QUICK_BLOCKS

        return self.blocks if self.blocks is not None else (QUICK_BLOCKS if self.quick else DEFAULT_BLOCKS)


def fixed_batch(model: Any) -> int | None:
    """The model's batch when its leading dim is fixed (same for every input), else None (dynamic)."""
    leading = {spec.shape[0] for spec in model.spec.inputs if spec.shape}
    fixed = [d for d in leading if isinstance(d, int)]
    return fixed[0] if fixed else None


def plan_batches(request: BenchRequest, model: Any) -> list[int]:
    fixed = fixed_batch(model)
    if request.batches:
        for batch in request.batches:
            if fixed is not None and batch != fixed:
                raise RtpickError(
                    f"--batch {batch}: the model's batch dimension is fixed at {fixed}; use --batch {fixed} "
                    "or export the model with a dynamic batch axis"
                )
        return sorted(set(request.batches))
    if fixed is not None:
        return [fixed]
    if request.scenario == "offline":
        return list(DEFAULT_SWEEP)
    if request.scenario in ("server", "multistream"):
        return [8]
    return [1]


def _durations(request: BenchRequest) -> dict[str, float]:
    from rtpick.perf.scenarios import FULL, QUICK

    base = QUICK if request.quick else FULL
    duration = request.duration_s
    return {
        "min_duration_s": duration if duration is not None else base["min_duration_s"],
        "min_queries": base["min_queries"],
        "open_loop_s": duration if duration is not None else (2.0 if request.quick else 10.0),
        "trial_s": duration if duration is not None else (1.5 if request.quick else 5.0),
    }


def jobs_for(request: BenchRequest, source: str, runtime: str, precision: str, batch: int,
             accuracy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The worker's job for one configuration at one batch (`accuracy`: the labelled set to score, if any)."""
    from rtpick.options import options_for

    d = _durations(request)
    params: dict[str, Any]
    if request.scenario in ("single-stream", "offline"):
        params = {"min_duration_s": d["min_duration_s"], "min_queries": int(d["min_queries"]),
                  "warmup": None, "keep_samples": request.keep_samples, "blocks": request.block_count(),
                  "block_pause_s": request.block_pause_s}
    elif request.scenario == "server":
        delay = (request.max_queue_delay_ms if request.max_queue_delay_ms is not None else 2.0) / 1e3
        if request.find_max:
            params = {"find_max": True, "p99_bound_ms": request.p99_ms, "duration_s": d["trial_s"],
                      "max_batch": batch, "max_queue_delay_s": delay, "seed": request.seed}
        else:
            params = {"rate_qps": request.rate_qps, "duration_s": d["open_loop_s"], "max_batch": batch,
                      "max_queue_delay_s": delay, "seed": request.seed, "blocks": request.block_count()}
    else:
        if request.find_max_streams:
            params = {"find_max": True, "fps": request.fps, "duration_s": d["trial_s"],
                      "deadline_ms": request.deadline_ms, "max_batch": batch}
        else:
            delay = None if request.max_queue_delay_ms is None else request.max_queue_delay_ms / 1e3
            params = {"streams": request.streams, "fps": request.fps, "duration_s": d["open_loop_s"],
                      "deadline_ms": request.deadline_ms, "max_batch": batch, "max_queue_delay_s": delay,
                      "seed": request.seed}
    return {
        "model": source, "runtime": runtime, "precision": precision, "batch": batch,
        "options": options_for(runtime, request.options), "scenario": request.scenario, "params": params,
        "shapes": {k: list(v) for k, v in request.shapes.items()},
        "ranges": {k: list(v) for k, v in request.ranges.items()}, "io": request.io, "seed": request.seed,
        "accuracy": accuracy,
    }


def run_bench(
    model: Any,
    configs: Sequence[tuple[str, str]],
    request: BenchRequest,
    *,
    json_path: str | os.PathLike[str] | None = None,
    command: str = "",
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> Any:
    """Run every configuration; returns `Results` (also written to `json_path` after each configuration).

    `progress` (see `rtpick.perf.progress`) hears the plan, each job's start and end, and the jobs an offline
    sweep skips when it stops early; `on_start`/`on_record` are the plain callbacks for the same events.
    """
    from rtpick.files import check_writable
    from rtpick.model import resolve_shapes
    from rtpick.options import check_options
    from rtpick.perf import accuracy as scoring
    from rtpick.perf.isolation import run_isolated
    from rtpick.perf.scenarios import saturation_batch
    from rtpick.perf.worker import run_job
    from rtpick.results import Results, environment, model_record
    from rtpick.sources import load_model

    request.validate()
    if request.repeats > 1 and not isinstance(model, str | os.PathLike):
        raise RtpickError("repeats > 1 needs the model as a path or name (each repeat loads it in a new "
                          "process); an in-memory model can only be measured in this process")
    check_options([runtime for runtime, _ in configs], request.options)
    if json_path is not None:
        check_writable(json_path)
    loaded = load_model(model)
    resolve_shapes(loaded.spec.inputs, request.shapes or None, None)  # a missing --shape fails here, early
    batches = plan_batches(request, loaded)
    labelled = scoring.plan(model, loaded.spec, request.input_path, request.labels, request.accuracy)
    source = os.fspath(model) if isinstance(model, str | os.PathLike) else None
    isolate = request.isolate and source is not None
    results = Results(
        command=command,
        scenario={**request.describe(), "batches": batches, "isolated": isolate},
        model=model_record(loaded, source or f"in-memory {type(model).__name__}"),
        environment=environment(),
    )
    timeout = request.timeout_s or (300.0 if request.quick else 1800.0)
    explicit = bool(request.batches)
    if progress is not None:
        progress.plan(len(configs) * len(batches))
    for runtime, precision in configs:
        points: list[tuple[int, float]] = []
        stop_reason = None
        for position, batch in enumerate(batches):
            job = jobs_for(request, source or "", runtime, precision, batch, labelled)
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
            record = replicates[0] if len(replicates) == 1 else combine_replicates(replicates)
            record["isolated"] = isolate
            results.configurations.append(record)
            if json_path is not None:
                results.write(json_path)
            if on_record is not None:
                on_record(record)
            if progress is not None:
                progress.done(record)
            if request.scenario != "offline":
                continue
            if record["status"] != "ok":
                stop_reason = (f"batch {batch} ran out of memory" if record["status"] == "oom"
                               else f"batch {batch} failed: {record.get('error', record['status'])}")
                if progress is not None:
                    progress.skip(len(batches) - position - 1, stop_reason)
                break
            points.append((batch, record["metrics"]["throughput"]))
            if not explicit and len(points) >= 3 and _flat(points):
                stop_reason = "throughput grew less than 5% over the last two batch doublings"
                if progress is not None:
                    progress.skip(len(batches) - position - 1, stop_reason)
                break
        if request.scenario == "offline":
            results.sweeps[f"{runtime}:{precision}"] = {
                "points": [{"batch": b, "throughput": t} for b, t in points],
                "saturation_batch": saturation_batch(points),
                "stopped": stop_reason,
            }
            if json_path is not None:
                results.write(json_path)
    return results


def _replicate_summary(index: int, record: dict[str, Any]) -> dict[str, Any]:
    """What one process of a replicated configuration measured, kept short: its figures, intervals, costs."""
    out: dict[str, Any] = {"process": index + 1, "status": record.get("status")}
    if record.get("status") != "ok":
        out["error"] = record.get("error", "")
        return out
    metrics = record["metrics"]
    lat = metrics["latency_ms"]
    out.update(
        p50=lat["p50"], p99=lat["p99"], ci_p50=lat["ci"]["p50"], ci_p99=lat["ci"]["p99"],
        ci_method=lat["ci"].get("method"), n=metrics["n"], throughput=metrics["throughput"],
        duration_s=metrics["duration_s"], warmup=metrics["warmup"], load_avg=metrics.get("load_avg"),
        build_time_s=record.get("build_time_s"), first_inference_ms=record.get("first_inference_ms"),
        host_rss_peak_mb=(record.get("memory") or {}).get("host_rss_peak_mb"), accuracy=record.get("accuracy"),
    )
    return out


def _failure_words(records: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"process {i + 1}: {r.get('status')}: {r.get('error', '')}"
                     for i, r in enumerate(records) if r.get("status") != "ok")


def combine_replicates(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The records of one closed-loop job run in N processes -> one record of the usual shape.

    Figures and intervals come from `rtpick.perf.stats.combine_latency_ms` (independent replications over the
    processes that succeeded); throughput is `batch` / the combined mean, i.e. the geometric mean of the
    processes' throughputs; build time and first inference are the median over processes; memory is the
    largest of any process; accuracy is the first process's (all score the same session type; a warning says
    if they differ). A failed process does not take the configuration down: the others are combined and a
    warning names it. With one success that process's own record stays (with a warning that no replication
    interval could be formed); with none, the first failure. `replicates` keeps every process's summary.
    """
    from rtpick.perf.stats import combine_latency_ms

    summaries = [_replicate_summary(i, r) for i, r in enumerate(records)]
    ok = [r for r in records if r.get("status") == "ok"]
    n = len(records)
    if not ok:
        return {**records[0], "replicates": summaries}
    warnings = list(dict.fromkeys(w for r in ok for w in r.get("warnings", [])))
    failed = _failure_words(records)
    if len(ok) == 1:
        warnings.append(f"only 1 of {n} processes succeeded ({failed}), so no replication interval could be "
                        "formed: the figures and interval are that one process's (sectioning within it)")
        return {**ok[0], "warnings": warnings, "replicates": summaries}
    if failed:
        warnings.append(f"{n - len(ok)} of {n} processes failed ({failed}); the figures combine the {len(ok)} "
                        "that succeeded")
    first = ok[0]
    metrics = [r["metrics"] for r in ok]
    latency = combine_latency_ms([m["latency_ms"] for m in metrics])
    batch = first["metrics"]["batch"]
    combined = {
        **first["metrics"],
        "n": latency["n"], "latency_ms": latency, "throughput": batch * 1e3 / latency["mean"],
        "duration_s": float(sum(m["duration_s"] for m in metrics)),
        "warmup": int(sum(m["warmup"] for m in metrics)),
        "method": _replicated_method(metrics),
        "load_avg": _combined_load(metrics),
    }
    if all(m.get("device_latency_ms") for m in metrics):
        combined["device_latency_ms"] = combine_latency_ms([m["device_latency_ms"] for m in metrics])
    if any("samples_ms" in m for m in metrics):
        combined["samples_ms"] = [s for m in metrics for s in m.get("samples_ms") or []]
    scores = sorted({r.get("accuracy") for r in ok if r.get("accuracy") is not None})
    if len(scores) > 1:
        warnings.append(f"the processes' top-1 accuracy differed ({', '.join(f'{s:.4%}' for s in scores)}); "
                        "the first process's is shown")
    return {
        **first, "metrics": combined, "warnings": warnings, "replicates": summaries,
        "build_time_s": _median([r.get("build_time_s") for r in ok]),
        "first_inference_ms": _median([r.get("first_inference_ms") for r in ok]),
        "load_time_s": _median([r.get("load_time_s") for r in ok]),
        "memory": _largest_memory([r.get("memory") or {} for r in ok]),
    }


def _replicated_method(metrics: Sequence[dict[str, Any]]) -> str:
    """How a replicated figure was measured, in words: the processes, then one process's own method."""
    counts = [m["n"] for m in metrics]
    own = "; ".join(part for part in metrics[0]["method"].split("; ") if not part.startswith("95% CI"))
    return (f"{len(metrics)} separate processes, each with its own start-up, build and warm-up "
            f"({min(counts):,}-{max(counts):,} calls each, {sum(counts):,} in all); percentiles and mean are the "
            f"geometric mean over the processes of each process's own; 95% CI by independent replications "
            f"between the {len(metrics)} processes (includes per-process offsets and drift within each); "
            f"process 1: {own}")


def _combined_load(metrics: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The machine's load from the first process's start to the last one's end, and each process's."""
    loads = [m.get("load_avg") or {} for m in metrics]
    if not any(loads):
        return None
    values = [v for load in loads for v in (load.get("before"), load.get("after")) if v is not None]
    return {
        "before": loads[0].get("before"), "after": loads[-1].get("after"),
        "max": max(values) if values else None, "cpus": loads[0].get("cpus"),
        "per_process": [[load.get("before"), load.get("after")] for load in loads],
        "what": "1-minute load average of the whole machine (runnable threads, all tenants): before the first "
                "process's measurement, after the last one's, and the highest reading around any process",
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else 0.5 * (present[mid - 1] + present[mid])


def _largest_memory(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Memory peaks (``*_mb``) at their largest over the processes (a deployment must fit the worst one),
    other ``*_max``/``*_min`` figures (clocks, temperatures) at their extreme, the rest as process 1 saw it."""
    out = dict(reports[0])
    for key in reports[0]:
        values = [r[key] for r in reports if isinstance(r.get(key), int | float) and not isinstance(r[key], bool)]
        if not values:
            continue
        if key.endswith(("_mb", "_max")):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
    if isinstance(out.get("host_rss_method"), str):
        out["host_rss_method"] += f"; the largest of {len(reports)} processes"
    return out


def _flat(points: list[tuple[int, float]]) -> bool:
    (_, a), (_, b), (_, c) = points[-3:]
    return b < 1.05 * a and c < 1.05 * a


def command_line(model: Any, configs: Sequence[tuple[str, str]], request: BenchRequest,
                 json_path: str | None = None) -> str:
    """The `rtpick bench` command equivalent to an API call, stored so reports can print how to reproduce."""
    import shlex

    from rtpick.options import option_args

    r = request
    parts = ["rtpick", "bench", str(model), "-r", ",".join(f"{a}:{b}" for a, b in configs),
             "--scenario", r.scenario]
    flags: list[tuple[str, Any]] = [
        ("--batch", ",".join(map(str, r.batches)) if r.batches else None), ("--duration", r.duration_s),
        ("--rate", r.rate_qps), ("--p99-ms", r.p99_ms), ("--streams", r.streams), ("--fps", r.fps),
        ("--deadline-ms", r.deadline_ms), ("--max-queue-delay-ms", r.max_queue_delay_ms),
        ("--timeout", r.timeout_s), ("--blocks", r.blocks), ("--block-pause", r.block_pause_s or None),
        ("--input", r.input_path), ("--labels", r.labels), ("--repeats", r.repeats if r.repeats > 1 else None),
        ("--json", json_path),
    ]
    parts += [item for flag, value in flags if value is not None for item in (flag, str(value))]
    parts += [f for f, on in (("--quick", r.quick), ("--find-max", r.find_max),
                              ("--find-max-streams", r.find_max_streams), ("--no-isolate", not r.isolate),
                              ("--samples", r.keep_samples), ("--no-accuracy", not r.accuracy)) if on]
    parts += [i for name, shape in r.shapes.items() for i in ("--shape", f"{name}:{'x'.join(map(str, shape))}")]
    parts += [i for name, (lo, hi) in r.ranges.items() for i in ("--input-range", f"{name}:{lo:g}:{hi:g}")]
    parts += option_args(r.options)
    if r.io != "host":
        parts += ["--io", r.io]
    return " ".join(shlex.quote(p) for p in parts)
