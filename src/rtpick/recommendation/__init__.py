"""The best configuration for a budget, gated on correctness, with the reason for every one left out.

Why it is built this way:

- Only a configuration whose outputs passed the comparison with the fp32 reference (`rtpick.compare`) is a
  candidate; with ``max_accuracy_drop`` the gate is the task metric instead (top-1 accuracy on labelled data,
  or top-1 agreement with the reference when there are no labels), in percentage points.
- A latency budget is checked against the tail, p99, never the median: a runtime with a fast median and a slow
  tail misses deadlines in production.
- Ranking cost, per inference, in milliseconds: the tail latency (``--p99-ms``, ``--streams``) or the time per
  sample, 1000 / throughput (``--min-throughput``), plus the build time shared over ``expected_inferences``
  (a 60 s compile is nothing over a billion inferences and everything over a thousand).
- Energy: ``max_joules`` (``--max-joules``) limits GPU energy per inference as each measurement recorded it;
  a row without a figure (a CPU, a window too short for NVML's counter) is excluded, since it cannot be checked.
- A precision whose runtime declares a speed rule (`Runtime.speed_rule`) is never chosen for speed unless the
  rule calls it faster than the runtime's own baseline on these records (FP8's never-slower rule).
- Everything measured comes from `rtpick.bench` records (one results schema), so `rank` is a pure function of
  records and can be tested on hand-made ones; `recommend` measures only what the records lack.
"""

from rtpick.recommendation.candidate import Candidate, joules_text
from rtpick.recommendation.constraints import (
    BUILD_FAILED,
    CHECK_BATCH,
    CHOSEN,
    DROPPED,
    FAILED,
    FAILED_ACCURACY,
    MEETS,
    NOT_ALLOWED,
    NOT_FASTER,
    NOT_FOR_MODEL,
    NOT_MEASURED,
    NOT_TRIED,
    ON_TIME_NEEDED,
    OOM,
    OVER_BUDGET,
    OVER_ENERGY,
    OVER_MEMORY,
    UNAVAILABLE,
    VERDICT_ORDER,
    Constraints,
)
from rtpick.recommendation.ranking import (
    Recommendation,
    candidate_from_record,
    correctness_records,
    rank,
)
from rtpick.recommendation.search import all_configs, deploy_config, plan, recommend

__all__ = [
    "BUILD_FAILED", "CHECK_BATCH", "CHOSEN", "DROPPED", "FAILED", "FAILED_ACCURACY", "MEETS", "NOT_ALLOWED",
    "NOT_FASTER", "NOT_FOR_MODEL", "NOT_MEASURED", "NOT_TRIED", "OOM", "ON_TIME_NEEDED", "OVER_BUDGET", "OVER_ENERGY",
    "OVER_MEMORY", "UNAVAILABLE",
    "VERDICT_ORDER", "Candidate", "Constraints", "Recommendation", "all_configs", "candidate_from_record",
    "correctness_records", "deploy_config", "joules_text", "plan", "rank", "recommend",
]
