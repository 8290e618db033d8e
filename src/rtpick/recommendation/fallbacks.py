"""Candidates that can only win where a sibling cannot run: checked (and built) only when that sibling fails.

A runtime declares such pairs (`rtpick.runtimes.base.Variant.fallback_for`, `Runtime.precision_fallbacks`):
eager CUDA without a CUDA graph next to the same with one (the same kernels, one replay instead of a launch per
op), fp32 on a GPU next to tf32 (fp32 kernels plus tensor-core ones allowed); and, by measurement rather than
by reasoning, Inductor on the CPU with freezing next to without (within a few % of each other on a 2-core and
a 16-core AMX host, the unfrozen as fast or faster: benchmarks/results/cpu_compile_freezing*.md). Building and
probing the other of each pair costs a compile each for torch.compile (5-10 s warm, a minute cold on ResNet-50;
on the CPU one per batch size of an offline sweep) and cannot change the answer, or by more than those few %,
while its sibling runs and passes. So a search of fixed shapes (closed-loop budgets) without
memory limits checks the others first and then each fallback whose every sibling failed; `--exhaustive`
tries everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def siblings(choices: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """candidate key -> [(key of a sibling that covers it, why)], from what the runtimes declare; only
    siblings that are themselves candidates count."""
    from rtpick.runtimes.registry import get_runtime

    by_config = {(c.runtime, c.precision, _canonical(c.options)): key for key, c in choices.items()}
    out: dict[str, list[tuple[str, str]]] = {}
    for key, choice in choices.items():
        covers: list[tuple[str, str]] = []
        if choice.fallback_for is not None:
            other = by_config.get((choice.runtime, choice.precision, _canonical(choice.fallback_for)))
            if other is not None:
                covers.append((other, choice.fallback_why or "it runs the same kernels at least as fast"
                                      + (f" ({choices[other].why})" if choices[other].why else "")))
        declared = get_runtime(choice.runtime).precision_fallbacks.get(choice.precision)
        if declared is not None:
            other = by_config.get((choice.runtime, declared[0], _canonical(choice.options)))
            if other is not None:
                covers.append((other, declared[1]))
        if covers:
            out[key] = covers
    return out


def check_in_rounds(to_check: Sequence[Any], covering: Mapping[str, list[tuple[str, str]]],
                    known: Mapping[str, Mapping[str, Any]],
                    check: Callable[[list[Any]], dict[str, dict[str, Any]]]) -> tuple[dict[str, dict[str, Any]],
                                                                                      dict[str, str]]:
    """(verdicts of the candidates checked, key -> reason for those left out because a sibling passed).

    First every candidate that is nobody's fallback; then, round by round, each fallback whose siblings are all
    settled: left out if one of them passed (or was itself left out for a sibling that passed), checked if
    none did. `known` holds verdicts read from a results file."""
    verdicts: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    waiting = {c.key: c for c in to_check if c.key in covering}
    now = [c for c in to_check if c.key not in covering]
    while now or waiting:
        if now:
            verdicts.update(check(now))
        now = []
        settled = {**known, **verdicts}
        changed = True
        while changed:  # a fallback left out may settle another (fp32 [] after tf32 [] and fp32 [cuda_graph])
            changed = False
            for key, choice in list(waiting.items()):
                passed = [(other, why) for other, why in covering[key]
                          if (settled.get(other) or {}).get("passed") or other in left_out]
                if passed:
                    other, why = passed[0]
                    left_out[key] = f"{other} passed its check, and {why}"  # shown after the verdict
                elif all(other in settled for other, _ in covering[key]):
                    now.append(choice)
                else:
                    continue
                del waiting[key]
                changed = True
        if not now and waiting:  # a sibling that never settles (not a candidate to check): check the rest
            now, waiting = list(waiting.values()), {}
    return verdicts, left_out


def not_tried(choice: Any, reason: str) -> Any:
    """The row of a candidate left out for a sibling."""
    from rtpick.recommendation.candidate import Candidate, variant_label
    from rtpick.recommendation.constraints import NOT_TRIED
    from rtpick.runtimes.registry import get_runtime

    return Candidate(choice.config, choice.runtime, choice.precision, get_runtime(choice.runtime).device,
                     variant=variant_label(choice.options), options=dict(choice.options), verdict=NOT_TRIED,
                     reason=reason)


def _canonical(options: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), repr(v)) for k, v in options.items()))
