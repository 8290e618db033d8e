"""perf.energy against a fake NVML: pynvml's functions monkeypatched, a counter that updates every N ms in fake
time, clock-event bits set; no GPU needed. The real counter is exercised by benchmarks/gpu_energy_fp8.py."""

from __future__ import annotations

import pytest

from rtpick.perf import energy as energy_mod
from rtpick.perf.energy import EnergyTracker, energy_cell, reason_names, throttle_words

pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the dev extra installs it)")


class FakeGpu:
    """A board drawing `watts` whose energy counter updates every `period_ms`; every NVML call costs 0.5 ms."""

    def __init__(self, period_ms: int = 100, watts: float = 300.0, mask: int = 0x4 | 0x1,
                 counter: bool = True) -> None:
        self.now_us = 50_000
        self.period_us = period_ms * 1000
        self.watts = watts
        self.mask = mask
        self.counter = counter

    def clock(self) -> float:
        return self.now_us / 1e6

    def sleep(self, seconds: float) -> None:
        self.now_us += max(1, int(seconds * 1e6))

    def work(self, seconds: float) -> None:
        self.now_us += int(seconds * 1e6)

    def energy_mj(self, handle: object) -> int:
        self.now_us += 500
        if not self.counter:
            return 12345
        ticks = self.now_us // self.period_us
        return int(ticks * self.period_us / 1e6 * self.watts * 1e3)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: f"gpu{index}")
        monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", self.energy_mj)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", lambda handle: self.mask)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetClockInfo", lambda handle, kind: 1755)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda handle: int(self.watts * 1e3))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", lambda handle: 700_000)

    def tracker(self, **kwargs: object) -> EnergyTracker:
        return EnergyTracker(True, clock=self.clock, sleep=self.sleep, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    fake = FakeGpu()
    fake.install(monkeypatch)
    return fake


def test_joules_per_inference_from_counter_updates(gpu: FakeGpu) -> None:
    with gpu.tracker() as tracker:
        gpu.work(3.0)
    report = tracker.report(inferences=1000)
    assert report["energy"] == "measured"
    assert report["counter"]["update_period_ms"] == pytest.approx(100, abs=1)
    # the window opens on the third update (t = 0.3 s) and closes on the first after the work (t = 3.4 s)
    assert tracker.start is not None and tracker.end is not None
    assert tracker.start[1] == 90_000 and tracker.end[1] == 1_020_000
    assert report["joules"] == pytest.approx(930.0)
    assert report["joules_per_inference"] == pytest.approx(0.93)
    assert report["inferences_per_joule"] == pytest.approx(1000 / 930)
    assert report["mean_power_w"] == pytest.approx(300.0, rel=0.01)
    assert report["counter"]["updates_in_window"] == 31
    assert "100 ms" in report["counter"]["resolution"] and "whole GPU" in report["method"]


def test_a_window_shorter_than_twenty_updates_is_refused_with_the_reason(gpu: FakeGpu) -> None:
    with gpu.tracker() as tracker:
        gpu.work(1.0)
    report = tracker.report(inferences=500)
    assert report["joules_per_inference"] is None and report["inferences_per_joule"] is None
    assert report["energy"].startswith("not measured: the window (1.0")
    assert "20 updates" in report["energy"] and "2.0 s" in report["energy"]
    assert report["clock_events"]["samples"] >= 1  # the clock events are still reported


def test_slower_counter_needs_a_longer_window(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGpu(period_ms=250)
    fake.install(monkeypatch)
    with fake.tracker() as tracker:
        fake.work(4.0)  # 16 updates of 250 ms: too few
    assert tracker.report(100)["energy"].startswith("not measured")
    with fake.tracker() as tracker:
        fake.work(6.0)
    assert tracker.report(100)["joules_per_inference"] == pytest.approx(6.0 * 300 / 100, rel=0.05)


def test_reasons_are_named_and_idle_is_not_throttling(gpu: FakeGpu) -> None:
    with gpu.tracker() as tracker:
        gpu.work(2.5)
    events = tracker.report(10)["clock_events"]
    assert events["throttled"] is True
    by_name = {r["reason"]: r for r in events["reasons"]}
    assert by_name["power cap (software power scaling)"]["throttling"] is True
    assert by_name["power cap (software power scaling)"]["fraction"] == 1.0
    assert by_name["GPU idle"]["throttling"] is False
    assert events["mask_union"] == "0x5"
    assert throttle_words(tracker.report(10)) == "power cap (software power scaling) 100%"


def test_idle_and_application_clocks_alone_are_not_throttling(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGpu(mask=0x1 | 0x2)
    fake.install(monkeypatch)
    with fake.tracker() as tracker:
        fake.work(2.5)
    report = tracker.report(10)
    assert report["clock_events"]["throttled"] is False
    assert throttle_words(report) == ""


def test_reason_names_cover_every_known_bit_and_unknown_ones() -> None:
    names = dict(reason_names(0x1FF))
    assert {"software thermal slowdown", "HW thermal slowdown", "HW slowdown (hardware thermal or power brake)",
            "HW power brake slowdown (external power brake)", "sync boost", "display clock setting"} <= set(names)
    assert names["application/user clock setting"] is False
    assert reason_names(0x1000) == [("unknown reason 0x1000", True)]
    assert reason_names(0) == []


def test_older_drivers_fall_back_to_throttle_reasons(gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 0x40)
    with gpu.tracker() as tracker:
        gpu.work(2.5)
    events = tracker.report(10)["clock_events"]
    assert [r["reason"] for r in events["reasons"]] == ["HW thermal slowdown"]


def test_a_counter_that_never_updates_gives_no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeGpu(counter=False)
    fake.install(monkeypatch)
    with fake.tracker() as tracker:
        fake.work(3.0)
    report = tracker.report(100)
    assert report["energy"] == "not measured: the energy counter did not change in 2 s"
    assert report["joules_per_inference"] is None


def test_unsupported_counter_is_a_reason(gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(handle: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", unsupported)
    with gpu.tracker() as tracker:
        gpu.work(3.0)
    assert tracker.report(100)["energy"].startswith("not measured: this GPU or driver reports no total-energy")


def test_no_nvml_or_no_gpu_is_not_measured_never_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    with EnergyTracker(True) as tracker:
        pass
    report = tracker.report(10)
    assert report["energy"].startswith("not measured: NVML did not start")
    assert report["joules_per_inference"] is None
    with EnergyTracker(False) as cpu:
        pass
    assert cpu.report(10)["energy"] == "not measured: the configuration runs on the CPU"


def test_energy_cell_for_the_table() -> None:
    record = {"metrics": {"energy": {"joules_per_inference": 0.0123, "clock_events": {
        "throttled": True, "reasons": [{"reason": "HW thermal slowdown", "throttling": True, "fraction": 0.25}]}}}}
    assert energy_cell(record["metrics"]) == "\n12.3 mJ/inf\nTHROTTLED: HW thermal slowdown 25%"
    assert energy_cell({"energy": energy_mod._not_measured("x")}) == ""
    assert energy_cell({}) == "" and energy_cell(None) == ""


class RealTimeGpu(FakeGpu):
    """The fake board on the real clock, for a whole measurement through the scenarios."""

    def clock(self) -> float:
        import time

        return time.perf_counter()

    def energy_mj(self, handle: object) -> int:
        now_us = int(self.clock() * 1e6)
        return int(now_us // self.period_us * self.period_us / 1e6 * self.watts * 1e3)


def test_closed_loop_and_open_loop_record_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_fakes import SpinSession, feeds

    from rtpick.perf import scenarios

    fake = RealTimeGpu(period_ms=10, watts=200.0, mask=0x0)
    fake.install(monkeypatch)
    session = SpinSession(0.002, sleep=True)
    session.device = "cuda"  # measured like a GPU session; NVML is the fake
    result = scenarios.single_stream(session, feeds(4), min_duration_s=0.4, min_queries=20, warmup=2, blocks=2)
    energy = result.to_dict()["energy"]
    assert energy["energy"] == "measured", energy
    assert energy["inferences"] == 4 * result.n
    assert energy["mean_power_w"] == pytest.approx(200.0, rel=0.1)
    assert energy["joules_per_inference"] == pytest.approx(energy["joules"] / (4 * result.n))
    assert energy["clock_events"]["throttled"] is False
    served = scenarios.server(session, feeds(4), rate_qps=100, duration_s=0.5, max_batch=4, warm=False)
    assert served["energy"]["energy"] == "measured"
    assert served["energy"]["inferences"] == served["completed"]


def test_cpu_sessions_say_why_there_is_no_energy() -> None:
    from bench_fakes import SpinSession, feeds

    from rtpick.perf import scenarios

    result = scenarios.single_stream(SpinSession(0.0005), feeds(), min_duration_s=0.05, min_queries=5, warmup=1)
    assert result.energy == energy_mod._not_measured("the configuration runs on the CPU")


def test_energy_words_for_the_report() -> None:
    assert energy_mod.energy_words(None) == ""
    words = energy_mod.energy_words(energy_mod._not_measured("pynvml is not installed"))
    assert words == "energy not measured: pynvml is not installed"
    measured = {"method": "NVML counter", "clock_events": {"reasons": [], "method": "sampled"}}
    assert energy_mod.energy_words(measured) == "energy: NVML counter; clock events: none (sampled)"
