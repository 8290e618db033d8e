"""`recommend` end to end: plan the configurations, check correctness, measure what stored records lack, rank.

Only a configuration whose outputs passed the comparison with the fp32 reference (`rtpick.compare`) is
measured; stored records (``--from``) that answer the same question are reused. The ranking itself is
`rtpick.recommendation.ranking`'s pure function; saving the choice is `deploy_config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.recommendation.candidate import Candidate, candidate_name, variant_label
from rtpick.recommendation.checking import check_all, eval_data
from rtpick.recommendation.constraints import NOT_ALLOWED, NOT_FOR_MODEL, UNAVAILABLE, Constraints
from rtpick.recommendation.ranking import Recommendation, rank

# ---------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Choice:
    """One search candidate: a configuration with one set of build options (`index`: its variant position)."""

    runtime: str
    precision: str
    options: dict[str, Any]
    cost: str = ""
    index: int = 0
    why: str = ""  # what the variant is for, as its runtime declares it
    fallback_for: dict[str, Any] | None = None  # a sibling's options that cover it (`recommendation.fallbacks`)
    fallback_why: str = ""  # why that sibling covers it, where not "the same kernels"

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"

    @property
    def key(self) -> str:
        return candidate_name(self.config, variant_label(self.options))


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
        if state.ok:
            state = _precision_availability(runtime, precision)
        if not state.ok:
            skipped.append(Candidate(name, runtime, precision, device, verdict=UNAVAILABLE, reason=state.reason))
            continue
        runnable.append(name)
    return runnable, skipped


def _for_this_model(runnable: list[str], skipped: list[Candidate], loaded: Any) -> tuple[list[str], list[Candidate]]:
    """Configurations whose runtime cannot run this model at all (a torch runtime and an ONNX file) move from
    `runnable` to rows with the reason, before anything is built."""
    from rtpick.runtimes.registry import get_runtime

    keep: list[str] = []
    rows = list(skipped)
    for name in runnable:
        runtime, precision = name.split(":")
        state = get_runtime(runtime).model_availability(loaded)
        if state.ok:
            keep.append(name)
        else:
            rows.append(Candidate(name, runtime, precision, get_runtime(runtime).device, verdict=NOT_FOR_MODEL,
                                  reason=state.reason))
    return keep, rows


def _precision_availability(runtime: str, precision: str) -> Any:
    """Whether the runtime, available here, can run this precision here (a precision that needs hardware the GPU
    lacks is unavailable with its reason, never a failed build)."""
    from rtpick.runtimes.base import Availability
    from rtpick.runtimes.registry import get_runtime

    try:
        return get_runtime(runtime).precision_availability(precision)
    except Exception as exc:  # noqa: BLE001 - a broken probe is a fact to report, not a crash
        return Availability(False, f"checking {precision} failed: {type(exc).__name__}: {exc}")


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
    max_joules: float | None = None,
    cpu_only: bool = False,
    quick: bool = False,
    repeats: int = 1,
    from_results: str | os.PathLike[str] | None = None,
    batch: int | Sequence[int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    json: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
    command: str = "",
    progress: Any = None,
    variants: bool = True,
    exhaustive: bool = False,
) -> Recommendation:
    """Rank the configurations of `model` that pass the correctness check and meet the budget.

    `configs` defaults to every runtime x precision available here, each with the option variants its runtime
    declares (`Runtime.variants`; `variants=False` tries the defaults only; a runtime given `options` is tried
    with those only). `labels` is an .npz with the model's inputs and a ``label`` array (or give `feeds` and
    `label_array`); a bundled model uses its own labelled set. `from_results` reuses a results file (its model
    must be this model: same sha256); what it lacks is measured. `repeats` > 1 measures each configuration in
    that many fresh processes, so its p99 interval covers the process-to-process spread too (see
    `rtpick.perf.stats`). `json` writes the records used (bench's schema, each with its ``correctness``), so a
    later call can read them back with `from_results`. `max_joules` limits GPU energy per inference (per sample),
    in joules, as NVML's energy counter measured it over each full measurement; a configuration without that
    figure (a CPU, or a window shorter than the counter needs) is excluded with the reason.

    The search (`rtpick.recommendation.pruning`): every candidate that passed the correctness check gets a short
    probe on a session built once (`rtpick.recommendation.measure`); those whose interval already misses the
    budget or loses to another are dropped with the reason; the survivors get the full measurement on the same
    session. `exhaustive=True` measures every candidate in full (the reference the pruned search is tested
    against). `progress` is a callable that hears one line per step, or a `rtpick.perf.progress.Phases`.
    """
    from rtpick.files import check_writable
    from rtpick.model import resolve_shapes
    from rtpick.perf.progress import Phases
    from rtpick.results import Results
    from rtpick.sources import load_model

    c = Constraints(p99_ms=p99_ms, streams=streams, fps=fps, min_throughput=min_throughput,
                    max_accuracy_drop=max_accuracy_drop, expected_inferences=expected_inferences,
                    max_gpu_mem_mb=max_gpu_mem_mb, max_host_mem_mb=max_host_mem_mb, max_joules=max_joules,
                    cpu_only=cpu_only)
    c.validate()
    _check_repeats(repeats, c, model)
    if labels is not None and feeds is not None:
        raise RtpickError("give labels as an .npz file or as feeds with label_array, not both")
    if json is not None:
        check_writable(json)
    phases = progress if isinstance(progress, Phases) else Phases(callback=progress)
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
    runnable, skipped = _for_this_model(runnable, skipped, loaded)
    options = {k: dict(v) for k, v in (options or {}).items()}
    choices = expand(runnable, options, variants=variants and stored is None, slow_builds=exhaustive)
    for record in stored.configurations if stored is not None else []:
        if record.config in runnable and record.runtime not in options:  # the variants the file measured
            choice = Choice(record.runtime, record.precision, dict(record.options))
            choices.setdefault(choice.key, choice)
    shape_map = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    batches = None if batch is None else [batch] if isinstance(batch, int) else list(batch)
    resolve_shapes(loaded.spec.inputs, shape_map or None, batches[0] if batches else None)  # fail early
    notes: list[str] = []

    # 1. correctness: stored verdicts where the file has them, compare for the rest
    stored_records = [r for r in (stored.configurations if stored else []) if _key(r) in choices]
    checks: dict[str, dict[str, Any]] = {
        _key(r): r.correctness for r in stored_records if r.correctness is not None
        and (max_accuracy_drop is None) == (r.correctness.get("gate") == "tolerance")
    }
    from rtpick.recommendation.survey import Survey

    survey = Survey(model, loaded, c, quick=quick, repeats=repeats, batches=batches, shapes=shape_map,
                    timeout_s=timeout_s, command=command, phases=phases, ranges=ranges)
    try:
        to_check = [choice for key, choice in choices.items() if key not in checks]
        left_out: dict[str, str] = {}
        if to_check:
            eval_feeds, eval_labels, how = eval_data(loaded, labels, feeds, label_array)
            found, left_out = check_all(loaded, choices, to_check, checks, runnable, (eval_feeds, eval_labels, how),
                                        shape_map, max_accuracy_drop, notes, phases, survey, exhaustive=exhaustive,
                                        ranges=ranges)
            checks.update(found)
        from rtpick.recommendation.fallbacks import not_tried

        covered = [not_tried(choices[key], reason) for key, reason in left_out.items()]
        return _search(survey, model, loaded, c, {k: v for k, v in choices.items() if k not in left_out}, checks,
                       stored, stored_records, from_results, notes, quick=quick, exhaustive=exhaustive,
                       max_accuracy_drop=max_accuracy_drop, json=json, command=command,
                       skipped=[*skipped, *covered], phases=phases)
    finally:
        survey.close()


def _search(survey: Any, model: Any, loaded: Any, c: Constraints, choices: Mapping[str, Choice],
            checks: dict[str, dict[str, Any]], stored: Any, stored_records: Sequence[Record], from_results: Any,
            notes: list[str], *, quick: bool, exhaustive: bool, max_accuracy_drop: float | None, json: Any,
            command: str, skipped: Sequence[Candidate], phases: Any) -> Recommendation:
    """Measure the candidates that passed their check (stored records first), then rank."""
    from rtpick.results import Results, environment, model_record

    # 2. performance: stored records that answer this question, then probe, prune, measure the survivors
    records: list[Record] = []
    have = set()
    for record in stored_records:
        if _usable(record, c):
            records.append(replace(record, correctness=checks.get(_key(record))))
            have.add(_key(record))
    if stored is not None and have:
        notes.append(f"performance of {', '.join(sorted(have))} read from {from_results} ({stored.command})")
    results = Results(command=command or f"rtpick recommend {model}",
                      scenario={"scenario": c.scenario, "recommend": c.describe(), "quick": quick,
                                "search": "exhaustive" if exhaustive else "pruned"},
                      model=model_record(loaded, str(model) if isinstance(model, str | os.PathLike)
                                         else f"in-memory {type(model).__name__}"),
                      environment=environment())
    results.configurations.extend(records)
    passing: list[Choice] = []
    for key, choice in choices.items():
        if key in have:
            continue
        check = checks.get(key) or {}
        if not check.get("passed"):
            failed = Record(runtime=choice.runtime, precision=choice.precision, batch=None, scenario=c.scenario,
                            status="not measured", options=dict(choice.options),
                            error="failed the correctness check", correctness=check)
            records.append(failed)
            results.configurations.append(failed)  # the file says what happened to every candidate
            continue
        passing.append(choice)
    survey.checks = dict(checks)
    survey.cache.discard(keep=[(ch.runtime, ch.precision, ch.options) for ch in passing])
    measured, dropped = survey.run(passing, exhaustive=exhaustive)
    notes.extend(survey.notes)
    for record in measured:
        record.correctness = checks.get(_key(record))
        records.append(record)
        results.configurations.append(record)
    from rtpick.recommendation.constraints import NOT_TRIED

    for row in [*dropped, *(r for r in skipped if r.verdict == NOT_TRIED)]:  # in the file too, so that it says
        # what happened to every candidate (and --from reads it)
        results.configurations.append(Record(
            runtime=row.runtime, precision=row.precision, batch=row.batch, scenario=c.scenario,
            status="not measured", options=dict(row.options), error=f"{row.verdict}: {row.reason}",
            correctness=checks.get(row.name)))
    if json is not None:
        results.write(json)

    outcome = rank(records, c, [*skipped, *dropped], evidence=survey.evidence)
    outcome.model = {"name": loaded.spec.name, "sha256": loaded.spec.sha256,
                     "source": str(model) if isinstance(model, str | os.PathLike) else None}
    outcome.notes = notes
    outcome.results = results
    phases.finish(f"done: {outcome.chosen.name if outcome.chosen else 'no configuration meets the budget'}")
    return outcome


def _key(record: Record) -> str:
    return candidate_name(record.config, variant_label(record.options))


def expand(runnable: Sequence[str], options: Mapping[str, Mapping[str, Any]], *, variants: bool = True,
           slow_builds: bool = False) -> dict[str, Choice]:
    """Every candidate: each runnable configuration with each variant its runtime declares for that precision
    (or only the options the user gave that runtime), keyed by `Candidate.name`.

    A variant whose build takes minutes (an autotuning compile: torch.compile max-autotune did not finish in
    8 minutes for ResNet-50 on an H100) is left out unless `slow_builds` (`--exhaustive`) asks for it or the
    user names its options; a runtime's own default configuration always stays.
    """
    from rtpick.runtimes.base import COST_MINUTES, Variant
    from rtpick.runtimes.registry import get_runtime

    out: dict[str, Choice] = {}
    for name in runnable:
        runtime_name, precision = name.split(":")
        runtime = get_runtime(runtime_name)
        if runtime_name in options:
            declared = [Variant(dict(options[runtime_name]), "given")]
        elif variants:
            declared = [v for v in runtime.candidate_variants(precision)
                        if slow_builds or not v.options or v.cost != COST_MINUTES]
        else:
            declared = [Variant(cost="")]
        for index, variant in enumerate(declared):
            choice = Choice(runtime_name, precision, dict(variant.options), variant.cost, index, variant.why,
                            dict(variant.fallback_for) if variant.fallback_for is not None else None,
                            variant.fallback_why)
            out[choice.key] = choice
    return out


# -------------------------------------------------------------------------------------------------- saving


def deploy_config(recommendation: Recommendation, model: Any, *, shapes: Mapping[str, Sequence[int]] | None = None,
                  options: Mapping[str, Mapping[str, Any]] | None = None, command: str = "",
                  ranges: Mapping[str, tuple[float, float]] | None = None) -> Any:
    """The chosen configuration as a `DeployConfig` (options filled in with the runtime's defaults)."""
    from rtpick.deploy import DeployConfig, model_source_for
    from rtpick.model import resolve_shapes, with_batch
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model

    chosen = recommendation.chosen
    if chosen is None:
        raise RtpickError("no configuration meets the budget, so there is nothing to save")
    loaded = load_model(model)
    batch = int(chosen.batch or 1)
    resolved = resolve_shapes(loaded.spec.inputs, shapes or None, batch)
    resolved = with_batch(resolved, batch, loaded.spec.inputs)
    runtime = get_runtime(chosen.runtime)
    # the chosen candidate's own options (a searched variant), else what the caller gave its runtime
    given = dict(chosen.options) or dict((options or {}).get(chosen.runtime, {}))
    full_options = runtime.check_options(given)
    measured = {k: v for k, v in chosen.to_dict().items()
                if k in ("p99_ms", "p50_ms", "throughput", "on_time_fraction", "build_time_s", "host_mem_mb",
                         "gpu_mem_mb", "accuracy", "agreement", "method", "cost_ms", "joules_per_inference",
                         "throttled") and v not in (None, "")}
    measured["budget"] = recommendation.constraints.describe()
    return DeployConfig(
        model_source=model_source_for(model, loaded), model_sha256=loaded.spec.sha256,
        model_name=loaded.spec.name, runtime=chosen.runtime, precision=chosen.precision,
        options=full_options, batch=batch, shapes={k: list(v) for k, v in resolved.items()},
        input_ranges={k: [float(lo), float(hi)] for k, (lo, hi) in (ranges or {}).items()},
        measured=measured, command=command,
    )
