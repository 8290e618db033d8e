"""The interleaved timing of the int8 search: every slot starts with a pause (the previous session's workers stop
spinning) and an untimed (warm) call, the order rotates, and far slower sessions drop out after three rounds.

Fake sessions report fixed costs through a fake clock, so nothing here depends on how busy the machine is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rtpick import quantize_timing


class _Clock:
    now = 0.0
    pauses = 0


class _Fake:
    """A session whose calls cost `cost` seconds on the fake clock, the first call of each slot `cold` more."""

    def __init__(self, name: str, cost: float, log: list[str], cold: float = 0.0) -> None:
        self.name, self.cost, self.log, self.cold = name, cost, log, cold

    def run(self, outputs: object, feed: object) -> list[object]:
        first_of_slot = not self.log or self.log[-1] != self.name
        self.log.append(self.name)
        _Clock.now += self.cost + (self.cold if first_of_slot else 0.0)
        return []


@pytest.fixture()
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    _Clock.now, _Clock.pauses = 0.0, 0
    monkeypatch.setattr(quantize_timing.time, "perf_counter", lambda: _Clock.now)
    monkeypatch.setattr(quantize_timing.time, "sleep", _pause)


def _pause(seconds: float) -> None:
    _Clock.now += seconds
    _Clock.pauses += 1


def test_a_cold_first_call_after_a_switch_is_not_timed(fake_clock: None) -> None:
    log: list[str] = []
    sessions = {"fp32": _Fake("fp32", 0.030, log, cold=0.060), "int8": _Fake("int8", 0.015, log, cold=0.040)}
    medians, rounds = quantize_timing.measure(sessions, {}, budget_s=0.0, min_rounds=5, max_rounds=5)
    assert rounds == 5
    assert medians == pytest.approx({"fp32": 0.030, "int8": 0.015})  # neither the cold cost nor the pause counts
    assert _Clock.pauses == 10  # one before every slot
    slots = log[3::2]  # after one call each and the sizing call, slots of a warm call and one timed call
    assert slots[:6] == ["fp32", "int8", "int8", "fp32", "fp32", "int8"]  # the order rotates every round


def test_far_slower_sessions_stop_being_timed_but_the_reference_stays(fake_clock: None) -> None:
    log: list[str] = []
    sessions = {"fp32": _Fake("fp32", 0.050, log), "fast": _Fake("fast", 0.010, log),
                "slow": _Fake("slow", 0.040, log)}
    medians, rounds = quantize_timing.measure(sessions, {}, budget_s=0.0, min_rounds=8, max_rounds=8)
    assert rounds == 8 and set(medians) == {"fp32", "fast", "slow"}
    assert log.count("slow") < log.count("fast") and log.count("fp32") >= log.count("fast")


def test_timing_sessions_run_as_deployed(small_onnx: Path) -> None:
    pytest.importorskip("onnxruntime")
    session = quantize_timing.timing_session(small_onnx, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.run(None, {"x": __import__("numpy").ones((1, 8), "float32")})


def test_single_threaded_sessions_are_timed_without_the_pause(fake_clock: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With one intra-op thread ONNX Runtime runs on the caller's thread: no workers spin, nothing to settle."""
    log: list[str] = []
    sessions = {"fp32": _Fake("fp32", 0.030, log), "int8": _Fake("int8", 0.015, log)}
    sleeps: list[float] = []
    monkeypatch.setattr(quantize_timing.time, "sleep", sleeps.append)
    medians, _ = quantize_timing.measure(sessions, {}, budget_s=0.0, min_rounds=5, max_rounds=5, threads=1)
    assert medians == pytest.approx({"fp32": 0.030, "int8": 0.015})
    assert all(seconds == 0.0 for seconds in sleeps)


def test_the_paired_ratio_interval_covers_at_least_95_percent_from_order_statistics() -> None:
    ones = [1.0] * 31
    interval = quantize_timing._paired_ratio_interval
    assert interval([1.0, 2.0, 3.0, 4.0, 5.0], ones[:5]) is None  # 2/32 > 5%: none exists
    assert interval([float(v) for v in range(1, 10)], ones[:9]) == (2.0, 8.0)  # n=9: 96.1%
    assert interval([float(v) for v in range(1, 32)], ones) == (10.0, 22.0)  # n=31: 97.1%


def test_head_to_head_timing_stops_once_the_ratio_is_clear_of_every_threshold(fake_clock: None) -> None:
    """fp32 twice as slow as int8 every round: after the minimum 9 rounds the ratio's interval (2.0-2.0) is clear
    of 1.0 and 1.1, so the 31 allowed rounds are not all spent; a ratio sitting on 1.1 uses them all."""
    settled = quantize_timing.ratio_settled((1.0, 1.1))
    clear = {"fp32": _Fake("fp32", 0.030, []), "int8": _Fake("int8", 0.015, [])}
    _, rounds = quantize_timing.measure(clear, {}, budget_s=1e9, min_rounds=9, max_rounds=31, settled=settled)
    assert rounds == 9
    close = {"fp32": _Alternating([0.030, 0.030, 0.036, 0.036]), "int8": _Fake("int8", 0.030, [])}
    _, rounds = quantize_timing.measure(close, {}, budget_s=1e9, min_rounds=9, max_rounds=31, settled=settled)
    assert rounds == 31  # ratios 1.0 and 1.2 by turns: the interval always holds 1.1


class _Alternating:
    """A session whose successive calls cost the given seconds in turn (two calls per slot: warm, timed)."""

    def __init__(self, costs: list[float]) -> None:
        self.costs, self.calls = costs, 0

    def run(self, outputs: object, feed: object) -> list[object]:
        _Clock.now += self.costs[self.calls % len(self.costs)]
        self.calls += 1
        return []


def test_a_session_surely_slower_than_the_fastest_stops_being_timed_after_six_rounds(fake_clock: None) -> None:
    """1.2x the fastest every round is within the 1.5x kept after three rounds, but after six its paired ratio's
    interval (1.2-1.2) is wholly above 1: it is not timed again; the reference (fp32) always is."""
    log: list[str] = []
    sessions = {"fp32": _Fake("fp32", 0.050, log), "fast": _Fake("fast", 0.010, log),
                "close": _Fake("close", 0.012, log)}
    medians, rounds = quantize_timing.measure(sessions, {}, budget_s=0.0, min_rounds=12, max_rounds=12)
    assert rounds == 12 and set(medians) == {"fp32", "fast", "close"}
    assert medians["close"] == pytest.approx(0.012)
    timed = {name: log.count(name) for name in sessions}
    assert timed["close"] < timed["fast"] <= timed["fp32"]


def test_a_benchmark_times_every_session_every_round(fake_clock: None) -> None:
    log: list[str] = []
    sessions = {"fp32": _Fake("fp32", 0.050, log), "fast": _Fake("fast", 0.010, log),
                "slow": _Fake("slow", 0.040, log)}
    _, rounds = quantize_timing.measure(sessions, {}, budget_s=0.0, min_rounds=8, max_rounds=8, drop=False)
    assert rounds == 8 and log.count("slow") == log.count("fast")
