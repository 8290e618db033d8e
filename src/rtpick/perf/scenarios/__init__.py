"""The measurement scenarios (single-stream, offline, server, multistream), one contract (`base.Scenario`).

The names below are the functions the scenarios measure with, for callers that drive one in-process
(`rtpick demo`, the tests); `registry` maps names to scenarios.
"""

from rtpick.perf.scenarios.closedloop import (
    DEFAULT_BLOCKS,
    FULL,
    QUICK,
    QUICK_BLOCKS,
    LatencyResult,
    batch_of,
    closed_loop,
    machine_load,
    slice_feeds,
    warm_up,
)
from rtpick.perf.scenarios.multistream import find_max_streams, multistream
from rtpick.perf.scenarios.offline import DEFAULT_SWEEP, offline_point, saturation_batch
from rtpick.perf.scenarios.openloop import WARM_CALLS_PER_BATCH, warm_batches
from rtpick.perf.scenarios.server import find_max_rate, server, server_meets
from rtpick.perf.scenarios.single_stream import single_stream

__all__ = [
    "DEFAULT_BLOCKS", "DEFAULT_SWEEP", "FULL", "QUICK", "QUICK_BLOCKS", "WARM_CALLS_PER_BATCH", "LatencyResult",
    "batch_of", "closed_loop", "find_max_rate", "find_max_streams", "machine_load", "multistream",
    "offline_point", "saturation_batch", "server", "server_meets", "single_stream", "slice_feeds", "warm_batches",
    "warm_up",
]
