"""Measuring: scenarios, timers, statistics, memory, the per-batch scheduler and process isolation.

Named `perf` so that `rtpick.bench` stays the public function; this package imports nothing at import time.
"""
