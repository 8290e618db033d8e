"""Benchmarking: scenarios, timers, statistics, memory, the dynamic batcher and process isolation.

This package imports nothing at import time. `rtpick.bench` is also the public function (`rtpick.bench(model,
configs, ...)`); since importing a submodule such as `rtpick.bench.scenarios` makes Python rebind the name
`rtpick.bench` to this package, the package itself is callable and forwards to the same function.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rtpick.api import bench

        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
