"""The best configuration for a budget, gated on correctness, with the reason for every one left out.

Why it is built this way:

- Only a configuration whose outputs passed the comparison with the fp32 reference (`rtpick.compare`) is a
  candidate; with ``max_accuracy_drop`` the gate is the task metric instead (top-1 accuracy on labelled data,
  or top-1 agreement with the reference when there are no labels), in percentage points.
- A latency budget is checked against the tail, p99, never the median: a runtime with a fast median and a slow
  tail misses deadlines in production.
- Ranking cost, per inference, in milliseconds: the tail latency (``--p99-ms``, ``--streams``) or the time per
  sample, 1000 / throughput (``--min-throughput``), plus the build time shared over ``expected_inferences``
  (a 60 s compile is nothing over a billion inferences and everything over a thousand).
- Everything measured comes from `rtpick.bench` records (one results schema), so `rank` is a pure function of
  records and can be tested on hand-made ones; `recommend` measures only what the records lack.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.record import Record

CHECK_BATCH = 32  # rows of synthetic data for the correctness check: top-1 agreement over 1 row says little
ON_TIME_NEEDED = 0.99  # multistream: the fraction of frames on time a configuration must keep (bench's "meets")

# verdicts, in the order excluded rows are listed after the ranked ones
CHOSEN = "chosen"
MEETS = "meets"
OVER_BUDGET = "over budget"
OVER_MEMORY = "over memory limit"
FAILED_ACCURACY = "failed accuracy check"
OOM = "out of memory"
BUILD_FAILED = "build failed"
FAILED = "failed"
UNAVAILABLE = "unavailable here"
NOT_ALLOWED = "excluded by --cpu-only"
NOT_MEASURED = "not measured"
VERDICT_ORDER = (CHOSEN, MEETS, OVER_BUDGET, OVER_MEMORY, FAILED_ACCURACY, OOM, BUILD_FAILED, FAILED,
                 NOT_MEASURED, UNAVAILABLE, NOT_ALLOWED)


# ------------------------------------------------------------------------------------------------ constraints


@dataclass
class Constraints:
    """What the user asked for. `validate()` refuses contradictions before anything is measured."""

    p99_ms: float | None = None
    streams: int | None = None
    fps: float | None = None
    min_throughput: float | None = None
    max_accuracy_drop: float | None = None  # percentage points
    expected_inferences: int | None = None
    max_gpu_mem_mb: float | None = None
    max_host_mem_mb: float | None = None
    cpu_only: bool = False

    @property
    def mode(self) -> str:
        """latency (single-stream), streams (multistream) or throughput (offline)."""
        if self.streams is not None:
            return "streams"
        if self.min_throughput is not None:
            return "throughput"
        return "latency"

    @property
    def scenario(self) -> str:
        """The name of the scenario that measures this budget."""
        from rtpick.perf.scenarios.registry import for_budget

        return for_budget(self.mode).name

    def validate(self) -> None:
        for name, value in (("--p99-ms", self.p99_ms), ("--fps", self.fps),
                            ("--min-throughput", self.min_throughput), ("--max-gpu-mem", self.max_gpu_mem_mb),
                            ("--max-host-mem", self.max_host_mem_mb)):
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise RtpickError(f"{name} must be a positive number, not {value}")
        if self.streams is not None and (not isinstance(self.streams, int) or self.streams < 1):
            raise RtpickError(f"--streams must be a whole number >= 1, not {self.streams}")
        if self.max_accuracy_drop is not None and not (
            math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100
        ):
            raise RtpickError(f"--max-accuracy-drop is in percentage points, 0 to 100, not {self.max_accuracy_drop}")
        if self.expected_inferences is not None and self.expected_inferences < 1:
            raise RtpickError(f"--expected-inferences must be at least 1, not {self.expected_inferences}")
        if (self.streams is None) != (self.fps is None):
            raise RtpickError("--streams and --fps go together: N cameras at F frames per second each")
        if self.streams is not None and self.min_throughput is not None:
            raise RtpickError("--streams/--fps (cameras) and --min-throughput (offline batches) are different "
                              "questions; ask one")
        if self.p99_ms is None and self.streams is None and self.min_throughput is None:
            raise RtpickError("give a budget: --p99-ms MS, --streams N --fps F, or --min-throughput PER_SECOND")

    def describe(self) -> str:
        """The budget in words, for titles and messages."""
        if self.mode == "streams":
            text = f"{self.streams} cameras at {self.fps:g} fps, {ON_TIME_NEEDED:.0%} of frames on time"
            deadline = self.p99_ms if self.p99_ms is not None else 1e3 / float(self.fps or 1)
            return text + f" (deadline {deadline:g} ms)"
        if self.mode == "throughput":
            text = f">= {self.min_throughput:,g} samples/s"
            return text + (f" with batch p99 <= {self.p99_ms:g} ms" if self.p99_ms is not None else "")
        return f"p99 <= {self.p99_ms:g} ms (single-stream)"


# ---------------------------------------------------------------------------------------------------- rows


@dataclass
class Candidate:
    """One configuration's row: its figures (units in the names), its verdict and the reason."""

    config: str
    runtime: str
    precision: str
    device: str = ""
    batch: int | None = None
    verdict: str = NOT_MEASURED
    reason: str = ""
    rank: int | None = None
    p99_ms: float | None = None
    p50_ms: float | None = None
    throughput: float | None = None  # samples per second
    on_time_fraction: float | None = None
    method: str = ""
    build_time_s: float | None = None
    host_mem_mb: float | None = None
    gpu_mem_mb: float | None = None
    accuracy: float | None = None  # top-1 on labelled data, 0..1
    reference_accuracy: float | None = None
    agreement: float | None = None  # top-1 agreement with the reference, 0..1
    correctness: str = ""  # compare's status: reference, pass, mismatch, error, unchecked
    cost_ms: float | None = None  # ranking cost per inference
    miss: float | None = None  # how far from the budget, relative (0.25 = 25% short/over); None when it meets

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class Recommendation:
    """The ranking as data: `ranked` (meets the budget, cheapest first; `chosen` is its head), `closest`
    (passed correctness but missed the budget, nearest first) and `excluded` (every other configuration)."""

    constraints: Constraints
    model: dict[str, Any]
    ranked: list[Candidate]
    closest: list[Candidate]
    excluded: list[Candidate]
    notes: list[str] = field(default_factory=list)
    results: Any = None  # rtpick.results.Results with the records used (correctness included)

    @property
    def chosen(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    def rows(self) -> list[Candidate]:
        """Every row in display order: ranked, then the closest misses, then the rest by verdict."""
        return [*self.ranked, *self.closest, *self.excluded]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "rtpick.recommend",
            "model": self.model,
            "constraints": {**asdict(self.constraints), "mode": self.constraints.mode,
                            "budget": self.constraints.describe()},
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "ranked": [c.to_dict() for c in self.ranked],
            "closest": [c.to_dict() for c in self.closest],
            "excluded": [c.to_dict() for c in self.excluded],
            "notes": list(self.notes),
        }


# -------------------------------------------------------------------------------------------- pure ranking


def candidate_from_record(record: Record) -> Candidate:
    """A row from one bench record (any scenario), figures copied from its headline; no verdict yet."""
    row = Candidate(config=record.config, runtime=record.runtime, precision=record.precision,
                    device=str(record.device or _device_of(record.runtime)), batch=record.batch)
    row.build_time_s = _number(record.build_time_s)
    row.host_mem_mb = record.memory_figure("host_rss_peak_mb")
    row.gpu_mem_mb = record.memory_figure("gpu_memory_peak_mb")
    row.method = record.method
    h = record.headline()
    row.p99_ms, row.p50_ms = _number(h.p99), _number(h.p50)
    row.throughput = _number(h.throughput)
    row.on_time_fraction = _number(h.on_time_fraction)
    correctness = record.correctness or {}
    row.correctness = str(correctness.get("status", ""))
    row.accuracy = _number(correctness.get("accuracy"))
    row.reference_accuracy = _number(correctness.get("reference_accuracy"))
    row.agreement = _number(correctness.get("top1_agreement"))
    return row


def rank(records: Sequence[Record], constraints: Constraints,
         unavailable: Sequence[Candidate] = ()) -> Recommendation:
    """Judge every record against the constraints and rank the ones that meet them.

    Each record is a bench record with a ``correctness`` entry (``status``; ``accuracy``, ``reference_accuracy``
    and ``top1_agreement`` as fractions; ``reason``; ``gate``: "tolerance" or "accuracy drop"/"agreement").
    Several records of one configuration (an offline sweep) make one row: the cheapest batch that meets the
    budget, else the one closest to it. `unavailable` rows are listed as they are.
    """
    constraints.validate()
    by_config: dict[str, list[Candidate]] = {}
    for record in records:
        row = candidate_from_record(record)
        _judge(row, record, constraints)
        by_config.setdefault(row.config, []).append(row)
    rows = [_best_of(group) for group in by_config.values()] + list(unavailable)
    ranked = sorted((r for r in rows if r.verdict == MEETS),
                    key=lambda r: (r.cost_ms, -(r.accuracy or 0.0), r.build_time_s or 0.0, r.config))
    for number, row in enumerate(ranked, 1):
        row.rank = number
    if ranked:
        ranked[0].verdict = CHOSEN
    closest = sorted((r for r in rows if r.verdict == OVER_BUDGET), key=lambda r: (r.miss, r.config))
    excluded = sorted((r for r in rows if r.verdict not in (MEETS, CHOSEN, OVER_BUDGET)),
                      key=lambda r: (VERDICT_ORDER.index(r.verdict), r.config))
    return Recommendation(constraints=constraints, model={}, ranked=ranked, closest=closest, excluded=excluded)


def _best_of(group: list[Candidate]) -> Candidate:
    meeting = [r for r in group if r.verdict == MEETS]
    if meeting:
        return min(meeting, key=lambda r: r.cost_ms if r.cost_ms is not None else math.inf)
    over = [r for r in group if r.verdict == OVER_BUDGET]
    if over:
        return min(over, key=lambda r: r.miss if r.miss is not None else math.inf)
    return group[0]


def _judge(row: Candidate, record: Record, c: Constraints) -> None:
    """Set the row's verdict, reason, cost and miss. Order: did it run, is it right, does it fit, is it fast."""
    status = record.status
    if c.cpu_only and row.device != "cpu":
        row.verdict, row.reason = NOT_ALLOWED, f"runs on {row.device}; --cpu-only asks for a CPU answer"
        return
    correctness = record.correctness or {}
    if correctness.get("status") == "error":
        row.verdict, row.reason = BUILD_FAILED, f"{correctness.get('reason') or 'did not build or run'}"
        return
    if correctness and not correctness.get("passed"):
        row.verdict = FAILED_ACCURACY
        row.reason = str(correctness.get("reason") or "outputs differ from the fp32 reference")
        return
    if not correctness:
        row.verdict, row.reason = NOT_MEASURED, "no correctness check against the fp32 reference"
        return
    if status == "not measured":
        row.verdict, row.reason = NOT_MEASURED, str(record.error or "")
        return
    if status == "oom":
        row.verdict, row.reason = OOM, str(record.error or "out of memory")
        return
    if status != "ok":
        failed_build = record.build_time_s is None
        row.verdict = BUILD_FAILED if failed_build else FAILED
        row.reason = f"{status}: {record.error or ''}".strip(": ")
        return
    memory = record.memory or {}
    if c.max_host_mem_mb is not None:
        if row.host_mem_mb is None:
            row.verdict, row.reason = OVER_MEMORY, "host memory not measured, so --max-host-mem cannot be checked"
            return
        if row.host_mem_mb > c.max_host_mem_mb:
            row.verdict = OVER_MEMORY
            row.reason = (f"peak host RSS {row.host_mem_mb:,.0f} MB > --max-host-mem {c.max_host_mem_mb:,g} MB "
                          f"(by {row.host_mem_mb - c.max_host_mem_mb:,.0f} MB)")
            return
    if c.max_gpu_mem_mb is not None and row.device != "cpu":
        if row.gpu_mem_mb is None:
            why = memory.get("gpu_memory", "not measured")
            row.verdict, row.reason = OVER_MEMORY, f"GPU memory {why}, so --max-gpu-mem cannot be checked"
            return
        if row.gpu_mem_mb > c.max_gpu_mem_mb:
            row.verdict = OVER_MEMORY
            row.reason = (f"peak GPU memory {row.gpu_mem_mb:,.0f} MB > --max-gpu-mem {c.max_gpu_mem_mb:,g} MB "
                          f"(by {row.gpu_mem_mb - c.max_gpu_mem_mb:,.0f} MB)")
            return
    _budget(row, c)


def _budget(row: Candidate, c: Constraints) -> None:
    """Check the budget on the tail; NaN or a missing figure never passes."""
    misses: list[tuple[float, str]] = []
    if c.mode == "streams":
        on_time = row.on_time_fraction
        if on_time is None:
            misses.append((math.inf, "no frame-timing figures in the record"))
        elif not on_time >= ON_TIME_NEEDED:
            misses.append((ON_TIME_NEEDED - on_time,
                           f"{on_time:.1%} of frames on time < {ON_TIME_NEEDED:.0%} "
                           f"(short by {(ON_TIME_NEEDED - on_time) * 100:.1f} points)"))
    if c.mode == "throughput":
        tp = row.throughput
        if tp is None or not math.isfinite(tp):
            misses.append((math.inf, "no throughput figure in the record"))
        elif tp < float(c.min_throughput or 0):
            short = float(c.min_throughput or 0) - tp
            misses.append((short / float(c.min_throughput or 1),
                           f"{tp:,.0f} samples/s < {c.min_throughput:,g} (short by {short:,.0f}/s, "
                           f"{short / float(c.min_throughput or 1):.0%})"))
    if c.p99_ms is not None:
        p99 = row.p99_ms
        if p99 is None or not math.isfinite(p99):
            misses.append((math.inf, "no p99 latency in the record"))
        elif p99 > c.p99_ms:
            misses.append(((p99 - c.p99_ms) / c.p99_ms,
                           f"p99 {p99:.3g} ms > {c.p99_ms:g} ms budget (over by {p99 - c.p99_ms:.3g} ms, "
                           f"{(p99 - c.p99_ms) / c.p99_ms:.0%})"))
    if misses:
        row.verdict = OVER_BUDGET
        row.miss = max(m for m, _ in misses)
        row.reason = "; ".join(text for _, text in misses)
        return
    per_inference = (1e3 / row.throughput if c.mode == "throughput" and row.throughput else row.p99_ms)
    if per_inference is None or not math.isfinite(per_inference):
        row.verdict, row.reason = OVER_BUDGET, "no latency figure to rank it by"
        row.miss = math.inf
        return
    amortised = 0.0
    if c.expected_inferences and row.build_time_s is not None:
        amortised = row.build_time_s * 1e3 / c.expected_inferences
    row.cost_ms = per_inference + amortised
    row.verdict = MEETS
    what = "ms per sample (1000/throughput)" if c.mode == "throughput" else "ms p99"
    row.reason = f"cost {per_inference:.4g} {what}"
    if c.expected_inferences:
        row.reason += (f" + build {row.build_time_s or 0:.3g} s / {c.expected_inferences:,} inferences "
                       f"= {row.cost_ms:.4g} ms per inference")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _device_of(runtime: str) -> str:
    from rtpick.runtimes.registry import RUNTIMES, get_runtime

    return get_runtime(runtime).device if runtime in RUNTIMES else ""


# -------------------------------------------------------------------------------------------- correctness


def correctness_records(comparison: Any, configs: Sequence[str], max_accuracy_drop: float | None
                        ) -> dict[str, dict[str, Any]]:
    """Per configuration: compare's status and figures, and whether it passes the gate asked for.

    Without `max_accuracy_drop` the gate is compare's tolerance verdict. With it, the gate is top-1 accuracy on
    the labels (candidate >= reference - drop points) or, without labels, top-1 agreement with the reference
    (>= 100 - drop percent); a model without a classifier-like output falls back to the tolerances (noted).
    """
    ref_row = next((r for r in comparison.rows if r.status == "reference"), None)
    ref_accuracy = ref_row.accuracy if ref_row is not None else None
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        try:
            row = comparison.row(config)
        except KeyError:
            continue
        entry: dict[str, Any] = {
            "status": row.status, "reference": comparison.reference, "reason": row.reason,
            "accuracy": row.accuracy, "reference_accuracy": ref_accuracy, "top1_agreement": row.top1_agreement,
            "max_abs": row.max_abs, "cosine": row.cosine, "feeds": comparison.feeds_description,
            "gate": "tolerance", "passed": row.ok,
        }
        if row.status in ("error", "unchecked"):
            entry["passed"] = False
        elif max_accuracy_drop is not None and row.status != "reference":
            _accuracy_gate(entry, row, ref_accuracy, max_accuracy_drop)
        elif row.status == "mismatch":
            entry["reason"] = f"outside the {row.precision} tolerances of the fp32 reference: {row.reason}"
        out[config] = entry
    return out


def _accuracy_gate(entry: dict[str, Any], row: Any, ref_accuracy: float | None, drop: float) -> None:
    if row.accuracy is not None and ref_accuracy is not None:
        lost = (ref_accuracy - row.accuracy) * 100
        entry["gate"] = "accuracy drop"
        entry["passed"] = lost <= drop
        entry["reason"] = (f"top-1 accuracy {row.accuracy:.2%} vs reference {ref_accuracy:.2%}: "
                           f"drop {lost:.2f} points {'<=' if entry['passed'] else '>'} {drop:g}")
    elif row.top1_agreement is not None:
        lost = (1 - row.top1_agreement) * 100
        entry["gate"] = "agreement"
        entry["passed"] = lost <= drop
        entry["reason"] = (f"top-1 agreement with the reference {row.top1_agreement:.2%} (no labels): "
                           f"{lost:.2f} points {'<=' if entry['passed'] else '>'} {drop:g}")
    else:
        entry["reason"] = ("no classifier-like output for --max-accuracy-drop; judged by tolerances"
                           + (f": {row.reason}" if row.reason else ""))


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
    from rtpick.comparison import compare_configs
    from rtpick.files import check_writable
    from rtpick.model import load_model, resolve_shapes
    from rtpick.perf.request import BenchRequest
    from rtpick.perf.run import run_bench
    from rtpick.results import Results, environment, model_record

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
    from rtpick.model import load_model, resolve_shapes
    from rtpick.runtimes.registry import get_runtime

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
