"""recommend's first-pass savings: fallbacks left out where a sibling passed, and candidates whose correctness
check's own calls already miss the p99 budget dropped before any probe."""

from __future__ import annotations

import re

from rtpick.recommendation.constraints import DROPPED, Constraints
from rtpick.recommendation.fallbacks import check_in_rounds, siblings
from rtpick.recommendation.pruning import CHECK_CALLS_NEEDED, missed_in_check
from rtpick.recommendation.search import expand


def test_the_gpu_runtimes_declare_their_fallbacks_and_expand_keeps_them():
    # class attributes only: no GPU needed to read what the runtimes declare
    choices = expand(["torch-cuda:fp32", "torch-cuda:tf32", "torch-compile-cuda:tf32"], {})
    covering = siblings(choices)
    assert {other for other, _ in covering["torch-cuda:fp32"]} == {"torch-cuda:fp32 [cuda_graph]",
                                                                    "torch-cuda:tf32"}
    assert [other for other, _ in covering["torch-cuda:tf32 [fuse_conv]"]] == \
        ["torch-cuda:tf32 [cuda_graph, fuse_conv]"]
    assert [other for other, _ in covering["torch-cuda:fp32 [cuda_graph, fuse_conv]"]] == \
        ["torch-cuda:tf32 [cuda_graph, fuse_conv]"]
    assert [other for other, _ in covering["torch-compile-cuda:tf32"]] == \
        ["torch-compile-cuda:tf32 [mode=reduce-overhead]"]
    assert "torch-cuda:tf32 [cuda_graph, fuse_conv]" not in covering  # nobody's fallback: always checked
    assert "torch-compile-cuda:tf32 [freezing, mode=reduce-overhead]" not in covering


def test_no_sibling_no_fallback():
    choices = expand(["torch-cuda:fp32"], {})  # tf32 is not a candidate, so fp32 [cuda_graph] stands alone
    covering = siblings(choices)
    assert "torch-cuda:fp32 [cuda_graph]" not in covering
    assert [o for o, _ in covering["torch-cuda:fp32"]] == ["torch-cuda:fp32 [cuda_graph]"]
    assert siblings(expand(["ort-cpu:fp32", "torch-cpu:fp32"], {})) == {}  # CPU runtimes declare none


def test_torch_compile_cpu_tries_freezing_only_where_the_default_fails_and_says_it_was_measured():
    """Frozen and unfrozen Inductor CPU builds measured within a few % of each other (the unfrozen one as fast
    or faster), each a compile per batch size: the reason names that measurement, not "the same kernels"."""
    choices = expand(["torch-compile-cpu:fp32", "torch-compile-cpu:bf16"], {})
    covering = siblings(choices)
    for precision in ("fp32", "bf16"):
        [(other, why)] = covering[f"torch-compile-cpu:{precision} [freezing]"]
        assert other == f"torch-compile-cpu:{precision}"
        assert "measured" in why and "cpu_compile_freezing" in why and "same kernels" not in why
        assert f"torch-compile-cpu:{precision}" not in covering  # the default is always checked


def _checker(passing: set[str], log: list[list[str]]):
    def check(some):
        log.append(sorted(c.key for c in some))
        return {c.key: {"passed": c.key in passing} for c in some}
    return check


def test_a_fallback_is_left_out_when_a_sibling_passes_and_checked_when_all_fail():
    choices = expand(["torch-cuda:fp32", "torch-cuda:tf32"], {})
    covering = siblings(choices)
    everything = set(choices)
    # every graph variant passes: only the four graph candidates are ever checked
    log: list[list[str]] = []
    verdicts, left_out = check_in_rounds(list(choices.values()), covering, {}, _checker(everything, log))
    assert log == [["torch-cuda:tf32 [cuda_graph, fuse_conv]", "torch-cuda:tf32 [cuda_graph]"]]
    assert set(left_out) == everything - set(log[0])
    assert "passed its check" in left_out["torch-cuda:fp32"]
    # tf32 fails everywhere (say, an accuracy budget): fp32 graph variants are checked next, and they cover fp32
    log = []
    fp32 = {k for k in everything if k.startswith("torch-cuda:fp32")}
    verdicts, left_out = check_in_rounds(list(choices.values()), covering, {}, _checker(fp32, log))
    assert log[0] == ["torch-cuda:tf32 [cuda_graph, fuse_conv]", "torch-cuda:tf32 [cuda_graph]"]
    checked = {k for round_ in log for k in round_}
    assert {"torch-cuda:fp32 [cuda_graph]", "torch-cuda:fp32 [cuda_graph, fuse_conv]"} <= checked
    assert "torch-cuda:fp32" in left_out  # its graph sibling passed
    assert verdicts["torch-cuda:fp32 [cuda_graph]"]["passed"] is True
    # the graph variant fails (a model that cannot be captured): its graph-less sibling is checked
    log = []
    verdicts, left_out = check_in_rounds(list(choices.values()), covering, {},
                                         _checker(everything - {"torch-cuda:tf32 [cuda_graph]"}, log))
    assert "torch-cuda:tf32" in {k for round_ in log for k in round_}
    assert verdicts["torch-cuda:tf32"]["passed"] is True
    assert "torch-cuda:fp32" in left_out


def test_stored_verdicts_count_as_settled():
    choices = expand(["torch-cuda:tf32"], {})
    covering = siblings(choices)
    known = {"torch-cuda:tf32 [cuda_graph]": {"passed": True}, "torch-cuda:tf32 [cuda_graph, fuse_conv]":
             {"passed": False}}
    log: list[list[str]] = []
    todo = [c for k, c in choices.items() if k not in known]
    verdicts, left_out = check_in_rounds(todo, covering, known, _checker(set(choices), log))
    assert list(left_out) == ["torch-cuda:tf32"]
    assert log == [["torch-cuda:tf32 [fuse_conv]"]]  # its graph sibling failed


def test_missed_in_check_needs_every_call_over_the_budget():
    c = Constraints(p99_ms=1.0)
    slow = [0.0021] * CHECK_CALLS_NEEDED
    assert "all 5 of its calls at batch 1 took longer" in missed_in_check(slow, c, 1)
    assert missed_in_check([*slow, 0.0009], c, 1) == ""  # one call within the budget: a probe must decide
    assert missed_in_check(slow[:-1], c, 1) == ""  # too few calls to say anything
    assert missed_in_check(slow, Constraints(min_throughput=10.0), 1) == ""  # no latency budget


def test_recommend_drops_on_the_checks_calls_and_still_measures_the_closest(tmp_path):
    from rtpick.recommendation import recommend

    outcome = recommend("rtpick:digits", configs="ort-cpu:fp32,torch-cpu:fp32", p99_ms=1e-6, quick=True,
                        variants=False)
    assert outcome.chosen is None
    measured = [row for row in outcome.closest]
    assert len(measured) == 1 and measured[0].p99_ms is not None  # the fastest in the check, measured in full
    dropped = [row for row in outcome.excluded if row.verdict == DROPPED]
    assert len(dropped) == 1 and re.match(r"correctness check: all \d+ of its calls", dropped[0].reason)
    assert dropped[0].p50_ms is not None and dropped[0].p50_ms > 0


def test_fallbacks_are_kept_where_they_could_win(monkeypatch):
    from types import SimpleNamespace

    from rtpick.recommendation import checking
    from rtpick.recommendation.survey import Survey

    def verdict(scenario_constraints):
        return Survey.fallbacks_cannot_win(SimpleNamespace(c=scenario_constraints))

    assert verdict(Constraints(p99_ms=1.0)) is True
    assert verdict(Constraints(min_throughput=100.0)) is True
    # a CUDA graph's memory pool could put the graph variant over a limit its fallback meets
    assert verdict(Constraints(p99_ms=1.0, max_gpu_mem_mb=1000.0)) is False
    assert verdict(Constraints(p99_ms=1.0, max_host_mem_mb=1000.0)) is False
    assert verdict(Constraints(p99_ms=33.0, streams=4, fps=30.0)) is False  # open loop: batches vary

    seen: list[list[str]] = []
    monkeypatch.setattr(checking, "check_choices",
                        lambda loaded, some, *rest, **kwargs: seen.append(sorted(c.key for c in some)) or
                        {c.key: {"passed": True} for c in some})
    choices = expand(["torch-cuda:tf32"], {})
    survey = SimpleNamespace(fallbacks_cannot_win=lambda: False)
    found, left_out = checking.check_all(None, choices, list(choices.values()), {}, [], (None, None, None), {},
                                         None, [], None, survey, exhaustive=False)
    assert left_out == {} and seen == [sorted(choices)]  # all four checked, in one go
    seen.clear()
    survey = SimpleNamespace(fallbacks_cannot_win=lambda: True)
    found, left_out = checking.check_all(None, choices, list(choices.values()), {}, [], (None, None, None), {},
                                         None, [], None, survey, exhaustive=True)
    assert left_out == {} and len(seen) == 1  # --exhaustive: everything
