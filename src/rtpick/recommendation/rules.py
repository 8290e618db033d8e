"""The energy limit and the precisions' speed rules of `recommend`'s ranking: pure, from records.

Energy: a row shows the joules per inference its measurement recorded (`rtpick.perf.energy`: NVML's energy
counter over the measured window) and the clock-event (throttle) reasons seen while it was measured;
``--max-joules`` excludes a row over the limit, and a row with no energy figure (a CPU, a window too short for
the counter), since the limit cannot be checked on it.

Speed rules: a precision whose runtime declares one (`Runtime.speed_rule`, e.g. FP8, worth its accuracy cost
only where it beats the runtime's own fp16/bf16) is judged by it on the records ranked and on `evidence` (the
probe records of candidates dropped early, so a baseline dropped after the probe still counts); a row the rule
does not call faster is `NOT_FASTER` with the rule's words, never chosen. With nothing to compare it against,
it stays ranked only when it is the one configuration asked for. No precision is named here: the rule is the
runtime's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtpick.perf.energy import throttle_words
from rtpick.perf.record import Record
from rtpick.recommendation.candidate import joules_text
from rtpick.recommendation.constraints import MEETS, NOT_FASTER, OVER_BUDGET

if TYPE_CHECKING:
    from rtpick.recommendation.candidate import Candidate


def energy_of(record: Record) -> tuple[float | None, str, str]:
    """(joules per inference or None, the record's energy status in words, throttling reasons or "")."""
    energy = (record.measurement.data if record.measurement is not None else {}).get("energy")
    if not isinstance(energy, dict):
        return None, "not measured: the record has no energy entry (measured before rtpick recorded energy)", ""
    joules = _positive_or_none(energy.get("joules_per_inference"))
    status = str(energy.get("energy") or "")
    return joules, status, throttle_words(energy)


def _positive_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def over_energy(row: Candidate, limit: float | None) -> str | None:
    """Why a row breaks --max-joules (over it, or no energy figure so it cannot be checked), or None."""
    if limit is None:
        return None
    if row.device == "cpu":
        return "energy is not measured on CPUs (NVML counts a GPU's energy only), so --max-joules cannot be checked"
    joules = row.joules_per_inference
    if joules is None:
        why = row.energy_status.removeprefix("not measured:").strip() or "no energy figure in the record"
        return f"energy not measured: {why}, so --max-joules cannot be checked"
    if joules > limit:
        return (f"{joules_text(joules)} per inference > --max-joules {joules_text(limit)} "
                f"(by {joules_text(joules - limit)})")
    return None


def apply_speed_rules(judged: Sequence[tuple[Record, Candidate]], evidence: Sequence[Record]) -> None:
    """Each row that would be ranked (it meets the budget or is a closest miss) and whose runtime declares a
    speed rule for its precision: kept with the rule's words when the rule calls it faster, else `NOT_FASTER`."""
    records = [record for record, _ in judged]
    alone = len({record.config for record in records}) == 1
    pool = [*records, *evidence]
    for record, row in judged:
        if row.verdict not in (MEETS, OVER_BUDGET):
            continue
        verdict = speed_verdict(record, pool)
        if verdict is None:
            continue
        faster, words = verdict
        if faster is True:
            row.reason = f"{row.reason}; {words}" if row.reason else words
        elif faster is None and alone:
            row.reason = f"{row.reason}; {words} (the only configuration asked for)" if row.reason else words
        else:
            budget = row.reason if row.verdict == OVER_BUDGET else ""
            row.verdict, row.rank = NOT_FASTER, None
            row.reason = f"{words}; also {budget}" if budget else words


def speed_verdict(record: Record, pool: Sequence[Record]) -> tuple[bool | None, str] | None:
    """(faster: True, False or None for "not compared", the rule's words) for `record` by the speed rule its
    runtime declares for its precision, against the other configurations' records in `pool`; None: no rule."""
    rule = _speed_rule(record)
    if rule is None:
        return None
    # the record itself and every other configuration's: one verdict comes back, this record's
    verdicts = rule([record.to_dict(), *[r.to_dict() for r in pool if r.ok and r.config != record.config]])
    verdict = verdicts[0] if verdicts else {}
    words = str(verdict.get("words") or f"{record.config} not compared: its record has none of the figures its "
                                        "runtime's speed rule compares")
    faster = verdict.get("faster")
    return (faster if isinstance(faster, bool) else None), words


def _speed_rule(record: Record) -> Any:
    from rtpick.runtimes.registry import RUNTIMES, get_runtime

    return get_runtime(record.runtime).speed_rule(record.precision) if record.runtime in RUNTIMES else None
