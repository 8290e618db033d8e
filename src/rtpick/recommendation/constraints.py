"""What a user asks `rtpick recommend` for (`Constraints`) and the verdicts a configuration can get.

`validate()` refuses contradictions before anything is measured; `scenario` names the scenario that measures
the budget (asked of the scenario registry, so no scenario is named here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rtpick.errors import RtpickError

CHECK_BATCH = 32  # rows of synthetic data for the correctness check: top-1 agreement over 1 row says little
ON_TIME_NEEDED = 0.99  # multistream: the fraction of frames on time a configuration must keep (bench's "meets")

# verdicts, in the order excluded rows are listed after the ranked ones
CHOSEN = "chosen"
MEETS = "meets"
OVER_BUDGET = "over budget"
# a precision whose runtime declares a speed rule (`Runtime.speed_rule`) that did not call it faster than the
# runtime's own baseline: never chosen for speed, whatever its figures
NOT_FASTER = "not proven faster"
DROPPED = "dropped after the first pass"  # a short probe already showed it cannot win (rtpick.recommendation.pruning)
NOT_TRIED = "not tried"  # a sibling that covers it passed its check (recommendation.fallbacks)
OVER_MEMORY = "over memory limit"
OVER_ENERGY = "over energy limit"  # --max-joules: over it, or energy not measured so it cannot be checked
FAILED_ACCURACY = "failed accuracy check"
OOM = "out of memory"
BUILD_FAILED = "build failed"
FAILED = "failed"
UNAVAILABLE = "unavailable here"
NOT_FOR_MODEL = "not for this model"  # the runtime cannot run this kind of model (a torch runtime, an ONNX file)
NOT_ALLOWED = "excluded by --cpu-only"
NOT_MEASURED = "not measured"
VERDICT_ORDER = (CHOSEN, MEETS, OVER_BUDGET, NOT_FASTER, DROPPED, NOT_TRIED, OVER_MEMORY, OVER_ENERGY,
                 FAILED_ACCURACY, OOM, BUILD_FAILED, FAILED, NOT_MEASURED, UNAVAILABLE, NOT_FOR_MODEL, NOT_ALLOWED)


# ------------------------------------------------------------------------------------------------ constraints


@dataclass
class Constraints:
    """What the user asked for. `validate()` refuses contradictions before anything is measured."""

    p99_ms: float | None = None
    streams: int | None = None
    fps: float | None = None
    min_throughput: float | None = None
    max_accuracy_drop: float | None = None  # percentage points
    expected_inferences: int | None = None
    max_gpu_mem_mb: float | None = None
    max_host_mem_mb: float | None = None
    max_joules: float | None = None  # energy per inference (per sample), joules; GPU energy from NVML
    cpu_only: bool = False

    @property
    def mode(self) -> str:
        """latency (single-stream), streams (multistream) or throughput (offline)."""
        if self.streams is not None:
            return "streams"
        if self.min_throughput is not None:
            return "throughput"
        return "latency"

    @property
    def scenario(self) -> str:
        """The name of the scenario that measures this budget."""
        from rtpick.perf.scenarios.registry import for_budget

        return for_budget(self.mode).name

    def validate(self) -> None:
        for name, value in (("--p99-ms", self.p99_ms), ("--fps", self.fps),
                            ("--min-throughput", self.min_throughput), ("--max-gpu-mem", self.max_gpu_mem_mb),
                            ("--max-host-mem", self.max_host_mem_mb), ("--max-joules", self.max_joules)):
            if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)
                                          and math.isfinite(value) and value > 0):
                raise RtpickError(f"{name} must be a positive, finite number, not {value}")
        if self.streams is not None and (not isinstance(self.streams, int) or self.streams < 1):
            raise RtpickError(f"--streams must be a whole number >= 1, not {self.streams}")
        if self.max_accuracy_drop is not None and not (
            math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100
        ):
            raise RtpickError(f"--max-accuracy-drop is in percentage points, 0 to 100, not {self.max_accuracy_drop}")
        if self.expected_inferences is not None and self.expected_inferences < 1:
            raise RtpickError(f"--expected-inferences must be at least 1, not {self.expected_inferences}")
        if (self.streams is None) != (self.fps is None):
            raise RtpickError("--streams and --fps go together: N cameras at F frames per second each")
        if self.streams is not None and self.min_throughput is not None:
            raise RtpickError("--streams/--fps (cameras) and --min-throughput (offline batches) are different "
                              "questions; ask one")
        if self.p99_ms is None and self.streams is None and self.min_throughput is None:
            raise RtpickError("give a budget: --p99-ms MS, --streams N --fps F, or --min-throughput PER_SECOND")

    def describe(self) -> str:
        """The budget in words, for titles and messages."""
        if self.mode == "streams":
            text = f"{self.streams} cameras at {self.fps:g} fps, {ON_TIME_NEEDED:.0%} of frames on time"
            deadline = self.p99_ms if self.p99_ms is not None else 1e3 / float(self.fps or 1)
            return text + f" (deadline {deadline:g} ms)"
        if self.mode == "throughput":
            text = f">= {self.min_throughput:,g} samples/s"
            return text + (f" with batch p99 <= {self.p99_ms:g} ms" if self.p99_ms is not None else "")
        return f"p99 <= {self.p99_ms:g} ms (single-stream)"
