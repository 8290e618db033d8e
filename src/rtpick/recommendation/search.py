"""`recommend` end to end: plan the configurations, check correctness, measure what stored records lack, rank.

Only a configuration whose outputs passed the comparison with the fp32 reference (`rtpick.compare`) is
measured; stored records (``--from``) that answer the same question are reused. The ranking itself is
`rtpick.recommendation.ranking`'s pure function; saving the choice is `deploy_config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.recommendation.constraints import CHECK_BATCH, NOT_ALLOWED, UNAVAILABLE, Constraints
from rtpick.recommendation.ranking import Candidate, Recommendation, correctness_records, rank

# ---------------------------------------------------------------------------------------------- measuring


def all_configs() -> list[str]:
    """Every runtime x precision rtpick knows, available here or not."""
    from rtpick.runtimes.registry import RUNTIMES, get_runtime

    return [f"{name}:{p}" for name in RUNTIMES for p in get_runtime(name).precisions]


def plan(configs: Sequence[str] | str | None, cpu_only: bool) -> tuple[list[str], list[Candidate]]:
    """(configurations to check and measure, rows for those that cannot run here or are not allowed)."""
    from rtpick.runtimes.registry import availability, get_runtime, parse_config

    explicit = configs is not None
    if isinstance(configs, str):
        configs = [part for part in configs.split(",") if part.strip()]
    texts = list(configs) if configs is not None else all_configs()
    if explicit and not texts:
        raise RtpickError("no configuration given; use -r runtime:precision[,runtime:precision...]")
    runnable: list[str] = []
    skipped: list[Candidate] = []
    for text in texts:
        runtime, precision = parse_config(text)
        name = f"{runtime}:{precision}"
        device = get_runtime(runtime).device
        if name in runnable:
            raise RtpickError(f"configuration {name} is given twice; list each once")
        if cpu_only and device != "cpu":
            if explicit:
                raise RtpickError(f"--cpu-only contradicts {name}, which runs on {device}; drop one of them")
            skipped.append(Candidate(name, runtime, precision, device, verdict=NOT_ALLOWED,
                                     reason=f"runs on {device}; --cpu-only asks for a CPU answer"))
            continue
        state = availability(runtime)
        if not state.ok:
            skipped.append(Candidate(name, runtime, precision, device, verdict=UNAVAILABLE, reason=state.reason))
            continue
        runnable.append(name)
    return runnable, skipped


def _eval_data(loaded: Any, labels: Any, feeds: Any, label_array: Any) -> tuple[Any, Any, str | None]:
    """(feeds, labels, description) for the correctness check: given, from a labelled .npz, or the bundled set."""
    import numpy as np

    from rtpick.data import validate_feeds

    if feeds is not None:
        return dict(feeds), label_array, None
    path = labels
    if path is None and loaded.spec.source == "bundled":
        from rtpick.sources import assets_dir

        bundled = assets_dir() / f"{loaded.spec.name.split(':', 1)[-1]}_eval.npz"
        path = bundled if bundled.is_file() else None
    if path is None:
        return None, None, None
    if not os.path.isfile(path):
        raise RtpickError(f"--labels {str(path)!r} does not exist; give an .npz with the model's inputs and 'label'")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise RtpickError(f"--labels {path} is not a readable .npz ({type(exc).__name__}: {exc})") from exc
    key = next((k for k in ("label", "labels") if k in arrays), None)
    if key is None:
        raise RtpickError(f"--labels {path} has no 'label' array (it has {sorted(arrays)}); add one of class ids")
    found = arrays.pop(key)
    return validate_feeds(loaded.spec.inputs, arrays, source=str(path)), found, f"labelled data from {path}"


def _usable(record: Record, c: Constraints) -> bool:
    """Whether a stored record answers this question (same scenario, same cameras)."""
    if record.scenario != c.scenario:
        return False
    if not record.ok:
        return True
    h = record.headline()
    if c.mode == "streams":
        return h.streams == c.streams and h.fps == c.fps
    return True


def _check_repeats(repeats: int, constraints: Constraints, model: Any) -> None:
    """`repeats` problems found before any configuration is compared or measured (bench would find them later)."""
    if repeats < 1:
        raise RtpickError(f"--repeats must be at least 1 (processes per configuration), not {repeats}")
    if repeats == 1:
        return
    from rtpick.perf.scenarios.registry import get_scenario

    if not get_scenario(constraints.scenario).closed_loop:
        raise RtpickError("--repeats applies to --p99-ms and --min-throughput budgets (closed-loop measurements), "
                          "not to --streams")
    if not isinstance(model, str | os.PathLike):
        raise RtpickError("--repeats needs the model as a path or name: each repeat loads it in a new process")


def recommend(
    model: Any,
    *,
    configs: Sequence[str] | str | None = None,
    p99_ms: float | None = None,
    streams: int | None = None,
    fps: float | None = None,
    min_throughput: float | None = None,
    max_accuracy_drop: float | None = None,
    labels: str | os.PathLike[str] | None = None,
    feeds: Mapping[str, Any] | None = None,
    label_array: Any = None,
    expected_inferences: int | None = None,
    max_gpu_mem_mb: float | None = None,
    max_host_mem_mb: float | None = None,
    cpu_only: bool = False,
    quick: bool = False,
    repeats: int = 1,
    from_results: str | os.PathLike[str] | None = None,
    batch: int | Sequence[int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    json: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    command: str = "",
    progress: Any = None,
) -> Recommendation:
    """Rank the configurations of `model` that pass the correctness check and meet the budget.

    `configs` defaults to every runtime x precision available here. `labels` is an .npz with the model's inputs
    and a ``label`` array (or give `feeds` and `label_array`); a bundled model uses its own labelled set.
    `from_results` reuses a results file (its model must be this model: same sha256); what it lacks is
    measured. `repeats` > 1 measures each configuration in that many fresh processes, so its p99 interval
    covers the process-to-process spread too (see `rtpick.perf.stats`). `options` maps a runtime name to its
    build options. `json` writes the records used (bench's
    schema, each with its ``correctness``), so a later call can read them back with `from_results`.
    """
    from rtpick.comparison.run import compare_configs
    from rtpick.files import check_writable
    from rtpick.model import resolve_shapes
    from rtpick.perf.request import BenchRequest
    from rtpick.perf.run import run_bench
    from rtpick.results import Results, environment, model_record
    from rtpick.sources import load_model

    c = Constraints(p99_ms=p99_ms, streams=streams, fps=fps, min_throughput=min_throughput,
                    max_accuracy_drop=max_accuracy_drop, expected_inferences=expected_inferences,
                    max_gpu_mem_mb=max_gpu_mem_mb, max_host_mem_mb=max_host_mem_mb, cpu_only=cpu_only)
    c.validate()
    _check_repeats(repeats, c, model)
    if labels is not None and feeds is not None:
        raise RtpickError("give labels as an .npz file or as feeds with label_array, not both")
    if json is not None:
        check_writable(json)
    say = progress or (lambda _text: None)
    if configs is not None:
        plan(configs, cpu_only)  # a contradiction (--cpu-only with a GPU configuration) costs nothing
    loaded = load_model(model)
    stored = Results.read(from_results) if from_results is not None else None
    if stored is not None:
        theirs = (stored.model or {}).get("sha256")
        if theirs != loaded.spec.sha256:
            raise RtpickError(
                f"{from_results} was measured on another model (sha256 {str(theirs)[:16]}...), not "
                f"{loaded.spec.name} ({loaded.spec.sha256[:16]}...); re-run without --from, or give that model"
            )
        if configs is None:
            configs = list(dict.fromkeys(r.config for r in stored.configurations))
    runnable, skipped = plan(configs, cpu_only)
    options = {k: dict(v) for k, v in (options or {}).items()}
    shape_map = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    batches = None if batch is None else [batch] if isinstance(batch, int) else list(batch)
    resolve_shapes(loaded.spec.inputs, shape_map or None, batches[0] if batches else None)  # fail early
    notes: list[str] = []

    # 1. correctness: stored verdicts where the file has them, compare for the rest
    stored_records = [r for r in (stored.configurations if stored else []) if r.config in runnable]
    checks: dict[str, dict[str, Any]] = {
        r.config: r.correctness for r in stored_records if r.correctness is not None
        and (max_accuracy_drop is None) == (r.correctness.get("gate") == "tolerance")
    }
    to_check = [name for name in runnable if name not in checks]
    if to_check:
        eval_feeds, eval_labels, how = _eval_data(loaded, labels, feeds, label_array)
        reference = next((n for n in runnable if n.endswith(":fp32")), "ort-cpu:fp32")
        say(f"checking {', '.join(to_check)} against the fp32 reference {reference}")
        comparison = compare_configs(
            loaded, to_check, feeds=eval_feeds, labels=eval_labels, reference=reference,
            shapes=shape_map or None, batch=None if eval_feeds is not None else CHECK_BATCH,
            options={k: v for k, v in options.items() if any(n.startswith(k + ":") for n in to_check)},
            feeds_description=how,
        )
        notes.extend(comparison.notes)
        notes.append(f"correctness: each configuration against {comparison.reference} on "
                     f"{comparison.feeds_description}")
        checks.update(correctness_records(comparison, to_check, max_accuracy_drop))

    # 2. performance: stored records that answer this question, bench for the passing rest
    records: list[Record] = []
    have = set()
    for record in stored_records:
        if _usable(record, c):
            records.append(replace(record, correctness=checks.get(record.config)))
            have.add(record.config)
    if stored is not None and have:
        notes.append(f"performance of {', '.join(sorted(have))} read from {from_results} ({stored.command})")
    request_fields: dict[str, Any] = {"quick": quick, "shapes": shape_map, "timeout_s": timeout_s,
                                      "repeats": repeats}
    if c.mode == "streams":
        request_fields.update(streams=c.streams, fps=c.fps, deadline_ms=c.p99_ms)
    results = Results(command=command or f"rtpick recommend {model}",
                      scenario={"scenario": c.scenario, "recommend": c.describe(), "quick": quick},
                      model=model_record(loaded, str(model) if isinstance(model, str | os.PathLike)
                                         else f"in-memory {type(model).__name__}"),
                      environment=environment())
    results.configurations.extend(records)
    for name in runnable:
        if name in have:
            continue
        check = checks.get(name) or {}
        runtime, precision = name.split(":")
        if not check.get("passed"):
            records.append(Record(runtime=runtime, precision=precision, batch=None, scenario=c.scenario,
                                  status="not measured", error="failed the correctness check", correctness=check))
            continue
        say(f"measuring {name} ({c.scenario}{', quick' if quick else ''})")
        request = BenchRequest.create(c.scenario, batches=batches, options=options.get(runtime, {}),
                                      **request_fields)
        measured = run_bench(model if isinstance(model, str | os.PathLike) else loaded,
                             [(runtime, precision)], request, command=command)
        for record in measured.configurations:
            record.correctness = check
            records.append(record)
            results.configurations.append(record)
        if json is not None:
            results.write(json)
    if json is not None:
        results.write(json)

    outcome = rank(records, c, skipped)
    outcome.model = {"name": loaded.spec.name, "sha256": loaded.spec.sha256,
                     "source": str(model) if isinstance(model, str | os.PathLike) else None}
    outcome.notes = notes
    outcome.results = results
    return outcome


# -------------------------------------------------------------------------------------------------- saving


def deploy_config(recommendation: Recommendation, model: Any, *, shapes: Mapping[str, Sequence[int]] | None = None,
                  options: Mapping[str, Mapping[str, Any]] | None = None, command: str = "") -> Any:
    """The chosen configuration as a `DeployConfig` (options filled in with the runtime's defaults)."""
    from rtpick.deploy import DeployConfig, model_source_for
    from rtpick.model import resolve_shapes
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model

    chosen = recommendation.chosen
    if chosen is None:
        raise RtpickError("no configuration meets the budget, so there is nothing to save")
    loaded = load_model(model)
    batch = int(chosen.batch or 1)
    resolved = resolve_shapes(loaded.spec.inputs, shapes or None, batch)
    resolved = {k: (batch, *v[1:]) if v else v for k, v in resolved.items()}
    runtime = get_runtime(chosen.runtime)
    full_options = runtime.check_options(dict((options or {}).get(chosen.runtime, {})))
    measured = {k: v for k, v in chosen.to_dict().items()
                if k in ("p99_ms", "p50_ms", "throughput", "on_time_fraction", "build_time_s", "host_mem_mb",
                         "gpu_mem_mb", "accuracy", "agreement", "method", "cost_ms") and v is not None}
    measured["budget"] = recommendation.constraints.describe()
    return DeployConfig(
        model_source=model_source_for(model, loaded), model_sha256=loaded.spec.sha256,
        model_name=loaded.spec.name, runtime=chosen.runtime, precision=chosen.precision,
        options=full_options, batch=batch, shapes={k: list(v) for k, v in resolved.items()},
        measured=measured, command=command,
    )
