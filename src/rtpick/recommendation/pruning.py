"""Which candidates a short first pass already rules out, and why: pure, from probe records and the budget.

A probe is a short closed-loop measurement with a 95% interval. A candidate is dropped only when the interval
says so, never on a point estimate, so noise can keep a loser in the race but cannot throw the winner out:

- over budget: even the optimistic end of its interval misses the budget (p99's lower bound above the
  latency budget; throughput's upper bound below the one asked for);
- dominated: the optimistic end of its cost is worse than the pessimistic end of another candidate's cost,
  and that other candidate surely meets the budget (the pessimistic end meets it too). Not used with memory
  limits, which a probe does not measure: the dominating candidate might fail them.

Rounds of longer probes on the survivors narrow the intervals (successive halving); the survivors of the
last round get the full measurement. The probe leader (lowest point cost) always survives, so a budget
nothing meets still gets a fully measured "closest" row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rtpick.perf.record import Record
from rtpick.recommendation.constraints import Constraints

INF = math.inf
DOMINATED = "dominated by"  # the words a dominance reason carries (the search re-admits these if need be)


@dataclass
class Bounds:
    """A candidate's cost per inference (ms) from its probe: optimistic, point and pessimistic ends, each only
    over batches that could (optimistic) or surely do (pessimistic) meet the budget; `miss` says why even the
    optimistic end misses it."""

    key: str
    low: float = INF
    point: float = INF
    high: float = INF
    nearest: float = INF  # the point cost whether or not it meets the budget (for "closest")
    miss: str = ""
    failed: str = ""


def _interval(value: float | None, ci: tuple[float, float] | None) -> tuple[float, float]:
    if value is None or not math.isfinite(value):
        return INF, INF
    if ci is None or not all(math.isfinite(v) for v in ci):
        return 0.0, INF  # no interval: nothing can be concluded from this probe
    return min(ci[0], value), max(ci[1], value)


def bounds(key: str, records: Sequence[Record], c: Constraints) -> Bounds:
    """The cost interval of one candidate from its probe records (one per batch)."""
    out = Bounds(key)
    misses: list[str] = []
    for record in records:
        if not record.ok:
            out.failed = record.error or record.status
            continue
        h = record.headline()
        p99_low, p99_high = _interval(h.p99, h.ci_p99)
        if c.mode == "throughput":
            tp = h.throughput or 0.0
            p50_low, p50_high = _interval(h.p50, h.ci_p50)
            spread = max(h.p50 - p50_low, p50_high - h.p50) / h.p50 if h.p50 and math.isfinite(p50_high) else INF
            tp_high = tp / (1 - spread) if spread < 1 else INF
            tp_low = tp / (1 + spread)
            cost_low, cost_point = 1e3 / tp_high if tp_high > 0 else INF, 1e3 / tp if tp > 0 else INF
            cost_high = 1e3 / tp_low if tp_low > 0 else INF
            can = tp_high >= float(c.min_throughput or 0) and (c.p99_ms is None or p99_low <= c.p99_ms)
            sure = tp_low >= float(c.min_throughput or 0) and (c.p99_ms is None or p99_high <= c.p99_ms)
            if not can:
                misses.append(f"batch {record.batch}: at most {tp_high:,.0f} samples/s" if tp_high < float(
                    c.min_throughput or 0) else f"batch {record.batch}: p99 at least {p99_low:.3g} ms")
        else:
            cost_low, cost_point, cost_high = p99_low, h.p99 if h.p99 is not None else INF, p99_high
            can = c.p99_ms is None or p99_low <= c.p99_ms
            sure = c.p99_ms is None or p99_high <= c.p99_ms
            if not can:
                misses.append(f"p99 at least {p99_low:.3g} ms (95% CI lower bound)")
        amortised = (record.build_time_s or 0.0) * 1e3 / c.expected_inferences if c.expected_inferences else 0.0
        out.nearest = min(out.nearest, cost_point + amortised)
        if can:
            out.low = min(out.low, cost_low + amortised)
            out.point = min(out.point, cost_point + amortised)
        if sure:
            out.high = min(out.high, cost_high + amortised)
    if out.low == INF and not out.failed:
        out.miss = "; ".join(misses) or "no figures"
    return out


def meets(record: Record, c: Constraints) -> bool:
    """Whether a record's point figures meet the budget (closed-loop budgets; NaN or missing never meets)."""
    if not record.ok:
        return False
    h = record.headline()
    if c.p99_ms is not None and not (h.p99 is not None and h.p99 <= c.p99_ms):
        return False
    if c.mode == "throughput":
        return h.throughput is not None and h.throughput >= float(c.min_throughput or 0)
    return True


def could_meet(record: Record, c: Constraints) -> bool:
    """Whether the optimistic end of a probe record's intervals meets the budget (used to pick the batches
    worth measuring in full)."""
    return bounds("", [record], c).low < INF


def prune(probes: Mapping[str, Sequence[Record]], c: Constraints, *, dominance: bool = True,
          what: str = "first pass") -> tuple[list[str], dict[str, str]]:
    """(survivors in probe order, {dropped key: reason}) from each candidate's probe records."""
    judged = {key: bounds(key, records, c) for key, records in probes.items()}
    dropped: dict[str, str] = {}
    for key, b in judged.items():
        if b.failed and b.low == INF:
            dropped[key] = f"{what}: {b.failed}"
        elif b.miss:
            dropped[key] = f"{what}: {b.miss}, misses {c.describe()}"
    best = min((b for b in judged.values() if b.high < INF), key=lambda b: b.high, default=None)
    if dominance and best is not None:
        for key, b in judged.items():
            if key not in dropped and b.low > best.high:
                dropped[key] = (f"{what}: {DOMINATED} {best.key} (cost at least {b.low:.4g} ms per inference "
                                f"vs at most {best.high:.4g} ms, 95% intervals)")
    leader = min(judged.values(), key=lambda b: b.nearest, default=None)
    if leader is not None and leader.nearest < INF and all(k in dropped for k in judged):
        del dropped[leader.key]  # nothing left: keep the nearest miss so "closest" has full figures
    return [key for key in probes if key not in dropped], dropped


CHECK_CALLS_NEEDED = 5  # timed calls of the correctness check below which it says nothing about latency


def missed_in_check(calls_s: Sequence[float], c: Constraints, batch: int | None) -> str:
    """Why a candidate surely misses a p99 budget, seen in the correctness check's own calls ("" if not seen).

    The check runs its rows through the candidate's session at the search's first batch, one call per chunk,
    each timed as a measurement's (host clock around run() and synchronize()). If every one of n calls took
    longer than the budget, then were 99% of calls within it, n misses in a row would have probability at most
    0.01^n (1e-10 at n = 5): the p99 misses, with no probe needed. A larger batch only takes longer."""
    if c.p99_ms is None or len(calls_s) < CHECK_CALLS_NEEDED:
        return ""
    fastest_ms = min(calls_s) * 1e3
    if fastest_ms <= c.p99_ms:
        return ""
    return (f"correctness check: all {len(calls_s)} of its calls at batch {batch or 1} took longer than the "
            f"p99 budget of {c.p99_ms:g} ms (fastest {fastest_ms:.3g} ms); were 99% of calls within it, "
            f"{len(calls_s)} misses in a row would have probability at most 0.01^{len(calls_s)}")
