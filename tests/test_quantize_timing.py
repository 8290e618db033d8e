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
