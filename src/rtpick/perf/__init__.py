"""Measuring: scenarios, timers, statistics, memory, the dynamic batcher and process isolation.

Named `perf` so that `rtpick.bench` stays the public function; this package imports nothing at import time.
"""
