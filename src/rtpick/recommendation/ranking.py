"""The ranking itself, pure: bench records (each with its correctness verdict) in, a `Recommendation` out.

Ranking cost, per inference, in milliseconds: the tail latency (``--p99-ms``, ``--streams``) or the time per
sample, 1000 / throughput (``--min-throughput``), plus the build time shared over ``expected_inferences``. A
latency budget is checked against p99, never the median; NaN or a missing figure never passes. Figures come
from each record's headline (`Record.headline()`), whatever scenario measured it.

The energy limit and the precisions' speed rules are `rtpick.recommendation.rules`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rtpick.perf.record import Record
from rtpick.recommendation.candidate import Candidate, joules_text, variant_label
from rtpick.recommendation.constraints import (
    BUILD_FAILED,
    CHOSEN,
    FAILED,
    FAILED_ACCURACY,
    MEETS,
    NOT_ALLOWED,
    NOT_FASTER,
    NOT_FOR_MODEL,
    NOT_MEASURED,
    ON_TIME_NEEDED,
    OOM,
    OVER_BUDGET,
    OVER_ENERGY,
    OVER_MEMORY,
    VERDICT_ORDER,
    Constraints,
)
from rtpick.recommendation.rules import apply_speed_rules, energy_of, over_energy

# ---------------------------------------------------------------------------------------------------- rows


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

    def __repr__(self) -> str:
        """The answer in one short block: what was chosen (or the closest miss) and how many were left out."""
        head = f"<Recommendation {self.model.get('name', '')}: {self.constraints.describe()}"
        if self.chosen is not None:
            c = self.chosen
            figure = f"p99 {c.p99_ms:.3g} ms" if c.p99_ms is not None else ""
            if c.throughput is not None:
                figure += f"{', ' if figure else ''}{c.throughput:,.0f} samples/s"
            if c.joules_per_inference is not None:
                figure += f"{', ' if figure else ''}{joules_text(c.joules_per_inference)} per inference"
            if c.throttled:
                figure += f"; THROTTLED: {c.throttled}"
            head += f" -> {c.name} at batch {c.batch} ({figure})"
        elif self.closest:
            head += f" -> none meets it; closest {self.closest[0].name}: {self.closest[0].reason}"
        else:
            head += " -> none meets it"
        counts: dict[str, int] = {}
        for row in self.rows():
            counts[row.verdict] = counts.get(row.verdict, 0) + 1
        return head + "; " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ">"

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
                    device=str(record.device or _device_of(record.runtime)), batch=record.batch,
                    variant=variant_label(record.options), options=dict(record.options))
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
    row.joules_per_inference, row.energy_status, row.throttled = energy_of(record)
    return row


def rank(records: Sequence[Record], constraints: Constraints, unavailable: Sequence[Candidate] = (),
         evidence: Sequence[Record] = ()) -> Recommendation:
    """Judge every record against the constraints and rank the ones that meet them.

    Each record is a bench record with a ``correctness`` entry (``status``; ``accuracy``, ``reference_accuracy``
    and ``top1_agreement`` as fractions; ``reason``; ``gate``: "tolerance" or "accuracy drop"/"agreement").
    Several records of one configuration (an offline sweep) make one row: the cheapest batch that meets the
    budget, else the one closest to it. `unavailable` rows are listed as they are. `evidence` are records that
    make no row but that a speed rule may compare against (the probes of candidates dropped early).
    """
    constraints.validate()
    by_config: dict[str, list[Candidate]] = {}
    judged = []
    for record in records:
        row = candidate_from_record(record)
        _judge(row, record, constraints)
        judged.append((record, row))
        by_config.setdefault(row.name, []).append(row)
    apply_speed_rules(judged, evidence)
    rows = [_best_of(group) for group in by_config.values()] + list(unavailable)
    ranked = sorted((r for r in rows if r.verdict == MEETS),
                    key=lambda r: (r.cost_ms, -(r.accuracy or 0.0), r.build_time_s or 0.0, r.name))
    for number, row in enumerate(ranked, 1):
        row.rank = number
    if ranked:
        ranked[0].verdict = CHOSEN
    closest = sorted((r for r in rows if r.verdict == OVER_BUDGET), key=lambda r: (r.miss, r.name))
    excluded = sorted((r for r in rows if r.verdict not in (MEETS, CHOSEN, OVER_BUDGET)),
                      key=lambda r: (VERDICT_ORDER.index(r.verdict), r.name))
    return Recommendation(constraints=constraints, model={}, ranked=ranked, closest=closest, excluded=excluded)


def _best_of(group: list[Candidate]) -> Candidate:
    meeting = [r for r in group if r.verdict == MEETS]
    if meeting:
        return min(meeting, key=lambda r: r.cost_ms if r.cost_ms is not None else math.inf)
    over = [r for r in group if r.verdict == OVER_BUDGET]
    if over:
        return min(over, key=lambda r: r.miss if r.miss is not None else math.inf)
    slower = [r for r in group if r.verdict == NOT_FASTER]
    if slower:
        return min(slower, key=lambda r: r.cost_ms if r.cost_ms is not None else math.inf)
    return group[0]


def _judge(row: Candidate, record: Record, c: Constraints) -> None:
    """Set the row's verdict, reason, cost and miss. Order: did it run, is it right, does it fit, is it fast."""
    status = record.status
    if c.cpu_only and row.device != "cpu":
        row.verdict, row.reason = NOT_ALLOWED, f"runs on {row.device}; --cpu-only asks for a CPU answer"
        return
    correctness = record.correctness or {}
    if correctness.get("status") == "error":
        row.verdict = NOT_FOR_MODEL if correctness.get("unavailable") else BUILD_FAILED
        row.reason = f"{correctness.get('reason') or 'did not build or run'}"
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
    over = _over_memory(row.host_mem_mb, c.max_host_mem_mb, "peak host RSS", "--max-host-mem",
                        "host memory not measured")
    if over is None and row.device != "cpu":
        over = _over_memory(row.gpu_mem_mb, c.max_gpu_mem_mb, "peak GPU memory", "--max-gpu-mem",
                            f"GPU memory {memory.get('gpu_memory', 'not measured')}")
    if over is not None:
        row.verdict, row.reason = OVER_MEMORY, over
        return
    over = over_energy(row, c.max_joules)
    if over is not None:
        row.verdict, row.reason = OVER_ENERGY, over
        return
    _budget(row, c)


def _over_memory(measured: float | None, limit: float | None, what: str, flag: str, unmeasured: str) -> str | None:
    """Why a row breaks a memory limit (over it, or not measured so it cannot be checked), or None."""
    if limit is None:
        return None
    if measured is None:
        return f"{unmeasured}, so {flag} cannot be checked"
    if measured > limit:
        return f"{what} {measured:,.0f} MB > {flag} {limit:,g} MB (by {measured - limit:,.0f} MB)"
    return None


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
            "gate": "tolerance", "passed": row.ok, "unavailable": row.unavailable,
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
