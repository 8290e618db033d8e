"""The measuring half of `recommend`: probe every candidate briefly, drop the ones that cannot win, measure the
rest in full, each on a session built once.

Rounds: a short probe of every candidate, then (when more than two survive) a longer one of the survivors,
each followed by `pruning.prune`; then the full measurement of what is left (bench's quick or full length).
Only closed-loop budgets are probed (a short closed loop says nothing sure about frames on time); with
``repeats`` > 1 or a memory limit the full measurement runs in fresh processes (`rtpick.perf.run.run_bench`),
because those need a process of their own (the spread between processes; a clean peak RSS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rtpick.perf.record import Record
from rtpick.recommendation.candidate import Candidate, variant_label
from rtpick.recommendation.constraints import DROPPED, Constraints
from rtpick.recommendation.measure import SessionCache, measure
from rtpick.recommendation.pruning import DOMINATED, bounds, could_meet, meets, missed_in_check, prune
from rtpick.recommendation.ranking import candidate_from_record
from rtpick.recommendation.rules import speed_verdict
from rtpick.runtimes.registry import get_runtime

PROBE_SECONDS = {True: (0.25, 0.75), False: (0.5, 2.0)}  # by --quick: round 1, round 2
PROBE_BLOCKS = 5
PROBE_WARMUP = 10  # calls: a probe's session is already warm from its build (and a compile warmed it)


class Survey:
    """One search's measurements; `close()` frees the cached sessions."""

    def __init__(self, model: Any, loaded: Any, constraints: Constraints, *, quick: bool, repeats: int,
                 batches: Sequence[int] | None, shapes: Mapping[str, tuple[int, ...]], timeout_s: float | None,
                 command: str, phases: Any, checks: Mapping[str, Any] | None = None,
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
        from rtpick.perf.request import BenchRequest

        self.model, self.loaded, self.c = model, loaded, constraints
        self.phases = phases
        self.command = command
        self.cache = SessionCache(loaded, on_build=phases.note)
        self.notes: list[str] = []
        fields: dict[str, Any] = {"quick": quick, "shapes": dict(shapes), "timeout_s": timeout_s, "repeats": repeats,
                                  "ranges": dict(ranges or {})}
        if constraints.mode == "streams":
            fields.update(streams=constraints.streams, fps=constraints.fps, deadline_ms=constraints.p99_ms)
        self.request = BenchRequest.create(constraints.scenario, batches=list(batches) if batches else None,
                                           **fields)
        self.isolated = repeats > 1 or constraints.max_host_mem_mb is not None \
            or constraints.max_gpu_mem_mb is not None
        self.quick = quick
        self.evidence: list[Record] = []  # the probes of candidates dropped early (a speed rule's baselines)
        self.checks = dict(checks or {})  # candidate name -> its correctness verdict, shown on dropped rows
        self.check_calls: dict[str, list[float]] = {}  # candidate name -> its check's timed calls (seconds)

    def close(self) -> None:
        self.cache.close()

    # ------------------------------------------------------------------------------------------------ plan

    def fallbacks_cannot_win(self) -> bool:
        """Whether a fallback candidate (`recommendation.fallbacks`) cannot win this search: it measures closed
        loop at the batches it plans (shapes fixed at build, where a CUDA graph replays what it captured), and
        no memory limit is given (a CUDA graph's memory pool could put its variant over a limit that the
        variant without one meets)."""
        from rtpick.perf.scenarios.registry import get_scenario

        limits = self.c.max_gpu_mem_mb is not None or self.c.max_host_mem_mb is not None
        return get_scenario(self.c.scenario).closed_loop and not limits

    def first_batch(self) -> int | None:
        """The smallest batch this search measures (the one correctness is checked at, on the same session)."""
        try:
            batches = self._batches()
        except Exception:  # noqa: BLE001 - a bad --batch is reported by the measurement, with its line
            return None
        return min(batches) if batches else None

    def _batches(self) -> list[int]:
        from rtpick.perf.run import plan_batches

        return plan_batches(self.request, self.loaded)

    def _sweep(self, choice: Any, request: Any, batches: Sequence[int], probe: bool = False) -> list[Record]:
        """One candidate at each batch in process; a batch sweep stops where throughput stops growing, and a
        probe's sweep also where a larger batch surely misses the p99 budget, since it only takes longer: after
        a batch whose median is surely over the budget (p99 >= p50, and one scheduling spike does not move the
        median's interval), or whose p99 is surely over it twice running (one could be a spike on a shared
        machine, so the same batch is probed once more: no new compile for a static-shape torch.compile
        candidate, where the next batch would cost one)."""
        from rtpick.perf.scenarios.registry import get_scenario

        sweeps = get_scenario(self.c.scenario).sweeps_batches
        budget = self.c.p99_ms if probe else None
        out: list[Record] = []
        best_rate: dict[int, float] = {}  # batch -> its best throughput (a batch probed twice counts once)
        for batch in batches:
            job = replace(request.job("", choice.runtime, choice.precision, batch), options=dict(choice.options))
            record = measure(self.cache, job)
            out.append(record)
            if not sweeps:
                continue
            if not record.ok:
                break
            if budget is not None and _surely_over(record.headline().ci_p50, budget):
                break
            this_batch = [record]
            if budget is not None and _surely_over(record.headline().ci_p99, budget):
                again = measure(self.cache, job)
                out.append(again)
                if not again.ok or _surely_over(again.headline().ci_p99, budget):
                    break
                this_batch.append(again)
            best_rate[batch] = max(r.headline().throughput or 0.0 for r in this_batch)
            tps = list(best_rate.values())
            if len(tps) >= 3 and tps[-2] < 1.05 * tps[-3] and tps[-1] < 1.05 * tps[-3]:
                break
        return out

    # --------------------------------------------------------------------------------------------- search

    def run(self, choices: Sequence[Any], *, exhaustive: bool) -> tuple[list[Record], list[Candidate]]:
        """(fully measured records, rows of the candidates dropped early with their reasons)."""
        from rtpick.perf.request import BenchRequest
        from rtpick.perf.scenarios.registry import get_scenario

        scenario = get_scenario(self.c.scenario)
        batches = self._batches()
        alive = list(choices)
        dropped_rows: list[Candidate] = []
        probes: dict[str, list[Record]] = {}
        dominated: list[Any] = []
        if not exhaustive and scenario.closed_loop and len(alive) > 1:
            dominance = not self.isolated and self.c.max_joules is None
            if self.isolated and (self.c.max_host_mem_mb is not None or self.c.max_gpu_mem_mb is not None):
                self.notes.append("search: memory limits given, so only candidates whose interval misses the "
                                  "budget are dropped early (a probe does not measure memory)")
            if self.c.max_joules is not None:
                self.notes.append("search: --max-joules given, so only candidates whose interval misses the "
                                  "budget are dropped early (a probe is too short to measure energy)")
            alive = self._seen_in_check(alive, dropped_rows, batches)
            for number, seconds in enumerate(PROBE_SECONDS[self.quick], 1):
                if number > 1 and len(alive) <= 2:
                    break
                request = BenchRequest.create(self.c.scenario, quick=True, shapes=dict(self.request.shapes),
                                              ranges=dict(self.request.ranges),
                                              duration_s=seconds, blocks=PROBE_BLOCKS, min_queries=PROBE_BLOCKS * 4,
                                              warmup=PROBE_WARMUP)
                what = f"probe round {number} ({seconds:g} s per batch)"
                self.phases.phase(what, len(alive))
                for choice in alive:
                    self.phases.step(f"{choice.key}" + (f" (build: {choice.cost})" if choice.cost else ""))
                    probes[choice.key] = self._sweep(choice, request, batches, probe=True)
                survivors, dropped = prune({ch.key: probes[ch.key] for ch in alive}, self.c, dominance=dominance,
                                           what=f"probe round {number}")
                for choice in alive:
                    if choice.key in dropped:
                        row = self._dropped_row(probes[choice.key], dropped[choice.key],
                                                self.checks.get(choice.key))
                        dropped_rows.append(row)
                        self.evidence.extend(r for r in probes[choice.key] if r.ok)
                        if DOMINATED in dropped[choice.key]:
                            dominated.append(choice)
                        self.phases.note(f"dropped {choice.key}: {dropped[choice.key]}")
                alive = [choice for choice in alive if choice.key in survivors]
            self.notes.append(
                f"search: {len(choices)} candidates probed ({', '.join(f'{s:g} s' for s in PROBE_SECONDS[self.quick])}"
                f" rounds, {PROBE_BLOCKS} blocks each, 95% intervals); {len(dropped_rows)} dropped early with the "
                f"reason; {len(alive)} measured in full; {self.cache.builds} builds")
        elif exhaustive:
            self.notes.append(f"search: exhaustive, all {len(choices)} candidates measured in full")
        what = f"full measurement ({self.c.scenario}{', quick' if self.quick else ''})"
        measured = self._full(what, alive, probes, batches)
        pool = list(dominated)
        alone = len({choice.config for choice in choices}) == 1
        while pool and not any(self._wins(r, measured, alone) for r in measured):
            # the candidates that dominated these missed the budget in full (noise, or a load that changed since
            # the probe) or may not be chosen (a speed rule): their claim is refuted, so the dominated ones are
            # judged again among themselves
            again, reasons = prune({ch.key: probes[ch.key] for ch in pool}, self.c, what="probe (again)")
            self.notes.append(f"search: no candidate measured in full met the budget (and may be chosen), so "
                              f"{len(again)} of the {len(pool)} dropped as dominated were measured in full after all")
            readmitted = {choice.key for choice in pool}
            dropped_rows = [row for row in dropped_rows if row.name not in readmitted]
            for choice in pool:
                if choice.key in reasons:
                    dropped_rows.append(self._dropped_row(probes[choice.key], reasons[choice.key],
                                                          self.checks.get(choice.key)))
            measured += self._full(f"{what}, dominated before", [ch for ch in pool if ch.key in again], probes,
                                   batches)
            pool = [ch for ch in pool if ch.key in reasons and DOMINATED in reasons[ch.key]]
        refuted = self._refuted(pool, probes, measured, alone)
        if refuted:
            # the full measurements of the winners came out worse than the probe promised (a load that changed
            # since): a candidate dropped as dominated whose probe could still beat them is measured in full too
            self.notes.append(f"search: the best full measurement cost more than the probe's bound, so {len(refuted)} "
                              "candidates dropped as dominated were measured in full after all")
            keys = {choice.key for choice in refuted}
            dropped_rows = [row for row in dropped_rows if row.name not in keys]
            measured += self._full(f"{what}, dominated before", refuted, probes, batches)
        if not self.isolated and measured:
            self.notes.append(f"full measurements ran in this process on the probe's session ({self.cache.builds} "
                              "builds in all: each runtime/precision/options built once)")
        return measured, dropped_rows

    def _seen_in_check(self, alive: list[Any], dropped_rows: list[Candidate], batches: Sequence[int]) -> list[Any]:
        """The candidates whose correctness check's own timed calls did not already show that they miss the p99
        budget (`pruning.missed_in_check`); the one with the fastest call always stays, so a budget nothing
        meets still gets a measured closest row."""
        first = min(batches) if batches else None
        missed = {ch.key: why for ch in alive if (why := missed_in_check(self.check_calls.get(ch.key, []), self.c,
                                                                         first))}
        if missed and len(missed) == len(alive):
            del missed[min(alive, key=lambda ch: min(self.check_calls[ch.key])).key]
        for choice in alive:
            if choice.key in missed:
                row = Candidate(choice.config, choice.runtime, choice.precision, get_runtime(choice.runtime).device,
                                variant=variant_label(choice.options), options=dict(choice.options), batch=first,
                                verdict=DROPPED, reason=missed[choice.key], method="correctness check's calls")
                calls = sorted(self.check_calls[choice.key])
                row.p50_ms = calls[len(calls) // 2] * 1e3
                dropped_rows.append(row)
                self.phases.note(f"dropped {choice.key}: {missed[choice.key]}")
        return [choice for choice in alive if choice.key not in missed]

    def _refuted(self, pool: Sequence[Any], probes: Mapping[str, list[Record]], measured: Sequence[Record],
                 alone: bool) -> list[Any]:
        """The candidates dropped as dominated whose probe's optimistic cost beats the best full measurement
        that may be chosen: their dominance was claimed on a bound the full measurement did not keep."""
        costs = [bounds("", [r], self.c).point for r in measured if self._wins(r, measured, alone)]
        if not costs:
            return []
        best = min(costs)
        return [choice for choice in pool if bounds(choice.key, probes[choice.key], self.c).low < best]

    def _wins(self, record: Record, measured: Sequence[Record], alone: bool) -> bool:
        """Whether a full record can be chosen: it meets the budget and any speed rule its precision has lets
        it (a speed rule that rejects the record refutes the claim of those it dominated in the probe)."""
        if not meets(record, self.c):
            return False
        verdict = speed_verdict(record, [*measured, *self.evidence])
        return verdict is None or verdict[0] is True or (verdict[0] is None and alone)

    def _full(self, what: str, choices: Sequence[Any], probes: Mapping[str, list[Record]], batches: list[int]
              ) -> list[Record]:
        self.phases.phase(what, len(choices))
        if self.isolated:  # fresh processes measure memory and spread: this one's sessions must not weigh on them
            self.cache.close()
        measured: list[Record] = []
        for choice in choices:
            self.phases.step(choice.key)
            if self.isolated:
                measured.extend(self._isolated(choice))
                continue
            measured.extend(self._sweep(choice, self.request, _full_batches(probes.get(choice.key), batches,
                                                                            self.c)))
        return measured

    def _isolated(self, choice: Any) -> list[Record]:
        from rtpick.perf.run import run_bench

        request = replace(self.request, options={choice.runtime: dict(choice.options)})
        source = self.model if isinstance(self.model, str | os.PathLike) else self.loaded
        out = run_bench(source, [(choice.runtime, choice.precision)], request, command=self.command)
        return list(out.configurations)

    @staticmethod
    def _dropped_row(records: Sequence[Record], reason: str, check: Any) -> Candidate:
        ok = [r for r in records if r.ok]
        best = max(ok, key=lambda r: r.headline().throughput or 0.0) if len(ok) > 1 else (ok or list(records))[0]
        row = candidate_from_record(replace(best, correctness=check))
        row.verdict, row.reason = DROPPED, reason
        row.method = f"first pass: {row.method}" if row.method else "first pass"
        return row


def _surely_over(interval: tuple[float, float] | None, budget_ms: float) -> bool:
    """Whether a 95% interval (ms) lies wholly above the budget; no interval is never sure."""
    return interval is not None and interval[0] > budget_ms


def _full_batches(probe: Sequence[Record] | None, batches: list[int], c: Constraints) -> list[int]:
    """The batches worth measuring in full: all of them without a probe or with one batch; after a sweep
    probe, those whose optimistic figures could meet the budget and whose throughput interval reaches the best
    such batch's (noise cannot move the best outside them)."""
    if not probe or len(batches) <= 1:
        return batches
    ok = [r for r in probe if r.ok and r.headline().throughput and could_meet(r, c)]
    if not ok:
        probed = sorted({int(r.batch) for r in probe if r.batch is not None})
        return probed or batches  # a kept nearest miss: the batches its probe reached

    def spread(record: Record) -> float:
        h = record.headline()
        if not h.p50 or h.ci_p50 is None:
            return 1.0
        return max(h.p50 - h.ci_p50[0], h.ci_p50[1] - h.p50) / h.p50

    best = max(ok, key=lambda r: r.headline().throughput or 0.0)
    floor = (best.headline().throughput or 0.0) / (1 + spread(best))
    keep = [r.batch for r in ok if (r.headline().throughput or 0.0) / max(1e-9, 1 - min(spread(r), 0.99)) >= floor]
    return sorted({int(b) for b in keep if b is not None}) or batches
