"""Energy per inference and clock-event (throttle) reasons over one measured window, from NVML.

Why: a fleet pays for joules as well as for milliseconds, and a figure taken while the GPU held its clocks down
(power cap, heat) is not the figure the same GPU gives cool. `EnergyTracker` wraps the measured window only:

- energy: NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver
  loaded) read at both ends. The counter counts in mJ but changes only every few tens to hundreds of ms (about
  every 100 ms on an H200, driver 580: benchmarks/results/h200/). So the tracker first times the counter's
  update period by polling it, starts the window on an update (so the start reading is fresh) and, after the
  work, waits for the next update (so the end reading includes all of it, plus at most one period of idle GPU).
  A window shorter than `MIN_UPDATES` periods gets no figure, with the reason: its error would exceed about
  1/MIN_UPDATES.
- clock events: a light thread samples `nvmlDeviceGetCurrentClocksEventReasons` (older drivers:
  `...ClocksThrottleReasons`), the SM clock and the board power every `interval_s`, and names every reason seen,
  in words, with the fraction of samples it was active in. GPU idle, application/user clock settings, sync
  boost and display clocks are reported but are not throttling.

The counter is the whole board's: work of other processes on the same GPU (or MIG instances) counts too; the
method text says so. Without pynvml, a GPU, or counter support, every figure reads "not measured: <reason>"
and nothing here raises into a benchmark.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from rtpick.perf.memory import nvml_device

MIN_UPDATES = 20  # a window must span this many counter updates: edge effects then stay under ~5%
SAMPLE_INTERVAL_S = 0.05
PERIOD_TICKS = 3  # counter updates timed to estimate its update period
TICK_TIMEOUT_S = 2.0  # no counter change for this long: the counter is not updating (or not supported)
POLL_SLEEP_S = 0.001

# NVML's clock-event bits (nvmlClocksEventReason*; the same values as the older nvmlClocksThrottleReason*).
CLOCK_EVENT_REASONS: dict[int, tuple[str, bool]] = {  # bit -> (name, is throttling)
    0x1: ("GPU idle", False),
    0x2: ("application/user clock setting", False),
    0x4: ("power cap (software power scaling)", True),
    0x8: ("HW slowdown (hardware thermal or power brake)", True),
    0x10: ("sync boost", False),
    0x20: ("software thermal slowdown", True),
    0x40: ("HW thermal slowdown", True),
    0x80: ("HW power brake slowdown (external power brake)", True),
    0x100: ("display clock setting", False),
}


def reason_names(mask: int) -> list[tuple[str, bool]]:
    """Every bit set in an NVML clock-event mask as (name, is throttling); unknown bits named by value."""
    out = []
    for bit in range(32):
        value = 1 << bit
        if mask & value:
            out.append(CLOCK_EVENT_REASONS.get(value, (f"unknown reason 0x{value:x}", True)))
    return out


def _not_measured(reason: str) -> dict[str, Any]:
    text = f"not measured: {reason}"
    return {"joules_per_inference": None, "inferences_per_joule": None, "energy": text, "clock_events": text}


class EnergyTracker:
    """Context manager around a measured window; `report(inferences)` gives the figures with their method.

    `gpu` False (a CPU configuration) or no NVML: nothing is read, the report says why. `clock` and `sleep` are
    injectable so tests can drive a fake counter in fake time.
    """

    def __init__(self, gpu: bool, cuda_index: int = 0, *, interval_s: float = SAMPLE_INTERVAL_S,
                 min_updates: int = MIN_UPDATES, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.gpu = gpu
        self.cuda_index = cuda_index
        self.interval_s = interval_s
        self.min_updates = min_updates
        self._clock = clock
        self._sleep = sleep
        self.reason = "" if gpu else "the configuration runs on the CPU"
        self._nvml: Any = None
        self._handle: Any = None
        self._reasons_fn: Callable[[Any], int] | None = None
        self.energy_reason = ""
        self.period_s: float | None = None
        self.start: tuple[float, int] | None = None  # (time, counter mJ) at the update that opened the window
        self.end: tuple[float, int] | None = None
        self.window_end_s: float | None = None
        self.samples = 0
        self.mask_counts: dict[int, int] = {}
        self.union_mask = 0
        self.clocks: list[int] = []
        self.power_mw: list[int] = []
        self.power_limit_mw: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_session(cls, session: Any) -> EnergyTracker:
        """The tracker for the device a built session runs on (its ``device_id`` option, else GPU 0)."""
        return cls(session.device == "cuda", int((getattr(session, "options", None) or {}).get("device_id", 0)))

    # ----------------------------------------------------------------------------------------------- window

    def __enter__(self) -> EnergyTracker:
        if not self.gpu:
            return self
        self._nvml, self._handle, reason = nvml_device(self.cuda_index)
        if self._nvml is None:
            self.reason = reason
            return self
        nvml = self._nvml
        self._reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        with contextlib.suppress(Exception):  # the limit is context, not a figure
            self.power_limit_mw = int(nvml.nvmlDeviceGetEnforcedPowerLimit(self._handle))
        self._open_energy_window()
        self._thread = threading.Thread(target=self._loop, name="rtpick-energy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nvml is None:
            return
        self.window_end_s = self._clock()
        at_end = None
        if self.start is not None:
            try:
                at_end = self._read_energy()
            except Exception as exc:  # noqa: BLE001
                self.energy_reason = f"the energy counter could not be read after the window: {exc}"
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._sample()
        if at_end is not None:
            # the first update after the window's end: its reading holds all the window's work
            tick = self._next_tick(at_end, TICK_TIMEOUT_S)
            if tick is None:
                self.energy_reason = f"the energy counter did not update within {TICK_TIMEOUT_S:g} s after the window"
            else:
                self.end = tick

    def _read_energy(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _next_tick(self, last: int, timeout_s: float) -> tuple[float, int] | None:
        """Poll the counter until it differs from `last`; (time, value) of that update, or None on timeout."""
        give_up = self._clock() + timeout_s
        while self._clock() < give_up:
            try:
                value = self._read_energy()
            except Exception:  # noqa: BLE001 - a counter that stops answering gives no figure, never a crash
                return None
            if value != last:
                return self._clock(), value
            self._sleep(POLL_SLEEP_S)
        return None

    def _open_energy_window(self) -> None:
        """Time the counter's update period from PERIOD_TICKS updates; the window opens on the last of them."""
        try:
            last = self._read_energy()
        except Exception as exc:  # noqa: BLE001 - e.g. NVMLError_NotSupported on GPUs before Volta
            self.energy_reason = f"this GPU or driver reports no total-energy counter (NVML: {exc})"
            return
        ticks = []
        for _ in range(PERIOD_TICKS):
            tick = self._next_tick(last, TICK_TIMEOUT_S)
            if tick is None:
                self.energy_reason = f"the energy counter did not change in {TICK_TIMEOUT_S:g} s"
                return
            ticks.append(tick)
            last = tick[1]
        # the first update only marks a phase: the gaps after it are whole periods
        self.period_s = statistics.median(b[0] - a[0] for a, b in zip(ticks, ticks[1:]))
        self.start = ticks[-1]

    # ------------------------------------------------------------------------------------------ sampling

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        nvml, handle = self._nvml, self._handle
        try:
            if self._reasons_fn is not None:
                mask = int(self._reasons_fn(handle))
                self.samples += 1
                self.union_mask |= mask
                for bit in range(32):
                    if mask & (1 << bit):
                        self.mask_counts[1 << bit] = self.mask_counts.get(1 << bit, 0) + 1
            self.clocks.append(int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
            self.power_mw.append(int(nvml.nvmlDeviceGetPowerUsage(handle)))
        except Exception:  # noqa: BLE001, S110 - a failed sample is skipped
            pass

    # -------------------------------------------------------------------------------------------- report

    def report(self, inferences: int) -> dict[str, Any]:
        """The window's figures for `inferences` samples processed in it (units in the key names)."""
        if self._nvml is None:
            return _not_measured(self.reason)
        out: dict[str, Any] = {"joules_per_inference": None, "inferences_per_joule": None}
        out.update(self._energy(inferences))
        out["clock_events"] = self._clock_events()
        if self.clocks:
            out["sm_clock_mhz"] = {"min": min(self.clocks), "max": max(self.clocks)}
        if self.power_mw:
            watts = [p / 1e3 for p in self.power_mw]
            out["power_w"] = {"min": min(watts), "mean": statistics.fmean(watts), "max": max(watts)}
        if self.power_limit_mw is not None:
            out["power_limit_w"] = self.power_limit_mw / 1e3
        return out

    def _energy(self, inferences: int) -> dict[str, Any]:
        if self.energy_reason or self.start is None or self.end is None or not self.period_s:
            return {"energy": f"not measured: {self.energy_reason or 'the energy counter was not read'}"}
        period = self.period_s
        span = self.end[0] - self.start[0]
        window = (self.window_end_s or self.end[0]) - self.start[0]
        counter = {"unit": "mJ", "update_period_ms": period * 1e3, "updates_in_window": round(span / period),
                   "resolution": f"the counter counts millijoules but updates every {period * 1e3:.0f} ms "
                                 f"(timed over {PERIOD_TICKS} updates before the window)"}
        if window < self.min_updates * period:
            return {"counter": counter, "energy": (
                f"not measured: the window ({window:.2f} s) is shorter than {self.min_updates} updates of the "
                f"energy counter ({self.min_updates} x {period * 1e3:.0f} ms = {self.min_updates * period:.1f} s); "
                "measure longer (--duration)")}
        if inferences < 1:
            return {"counter": counter, "energy": "not measured: no inference completed in the window"}
        joules = (self.end[1] - self.start[1]) / 1e3
        if joules <= 0:
            return {"counter": counter, "energy": f"not measured: the counter moved {joules:g} J over the window"}
        tail = span - window
        return {
            "counter": counter,
            "joules": joules,
            "inferences": int(inferences),
            "window_s": span,
            "mean_power_w": joules / span,
            "joules_per_inference": joules / inferences,
            "inferences_per_joule": inferences / joules,
            "energy": "measured",
            "method": (
                f"NVML total-energy counter of the whole GPU (all its processes) read at an update before the "
                f"window and at the first update after it ({span:.2f} s, {counter['updates_in_window']} updates of "
                f"~{period * 1e3:.0f} ms); includes {tail * 1e3:.0f} ms of GPU time after the window's last call "
                f"(<= one update period); {inferences:,} inferences (samples, not batches) in the window"
            ),
        }

    def _clock_events(self) -> dict[str, Any]:
        if self._reasons_fn is None:
            return {"throttled": None, "reasons": [], "method": "not measured: this NVML has no clock-event query"}
        if not self.samples:
            return {"throttled": None, "reasons": [], "method": "not measured: no sample could be read"}
        reasons = [{"reason": name, "throttling": throttling, "fraction": self.mask_counts[bit] / self.samples}
                   for bit in sorted(self.mask_counts)
                   for name, throttling in reason_names(bit)]
        return {
            "throttled": any(r["throttling"] for r in reasons),
            "reasons": reasons,
            "mask_union": f"0x{self.union_mask:x}",
            "samples": self.samples,
            "method": f"NVML current clock-event reasons sampled every {self.interval_s * 1e3:.0f} ms during the "
                      f"window ({self.samples} samples); fraction = share of samples with the reason active",
        }


def throttle_words(energy: Any) -> str:
    """The throttling reasons of one report in words ("power cap (software power scaling) 40%"), or ""."""
    events = energy.get("clock_events") if isinstance(energy, dict) else None
    if not isinstance(events, dict) or not events.get("throttled"):
        return ""
    return ", ".join(f"{r['reason']} {r['fraction']:.0%}" for r in events["reasons"] if r["throttling"])


def energy_cell(metrics: dict[str, Any] | None, sep: str = "\n") -> str:
    """What a table cell adds for one record's measurement: "<sep>12.3 mJ/inf" and a throttling flag, or ""."""
    energy = (metrics or {}).get("energy")
    if not isinstance(energy, dict):
        return ""
    text = ""
    if energy.get("joules_per_inference") is not None:
        text += f"{sep}{energy['joules_per_inference'] * 1e3:.3g} mJ/inf"
    throttled = throttle_words(energy)
    if throttled:
        text += f"{sep}THROTTLED: {throttled}"
    return text


def energy_words(energy: Any) -> str:
    """How a record's energy figure was taken, or why there is none, and its clock events, for a report."""
    if not isinstance(energy, dict):
        return ""
    parts = [f"energy: {energy['method']}" if energy.get("method") else f"energy {energy.get('energy', '')}"]
    events = energy.get("clock_events")
    if isinstance(events, dict):
        seen = ", ".join(f"{r['reason']} {r['fraction']:.0%}" for r in events.get("reasons", []))
        parts.append(f"clock events: {seen or 'none'} ({events.get('method', '')})")
    return "; ".join(parts)
