from __future__ import annotations

import time

import pytest

from rtpick.errors import RtpickError
from rtpick.perf.batcher import DynamicBatcher


def test_batches_fill_up_to_max_batch() -> None:
    seen: list[int] = []

    def run(items: list[int]) -> list[int]:
        seen.append(len(items))
        time.sleep(0.02)
        return [i * 2 for i in items]

    with DynamicBatcher(run, max_batch=4, max_queue_delay_s=0.05) as batcher:
        futures = [batcher.submit(i) for i in range(10)]
        assert [f.result(timeout=5) for f in futures] == [i * 2 for i in range(10)]
    assert max(seen) == 4 and sum(seen) == 10


def test_a_lone_query_waits_at_most_the_queue_delay() -> None:
    with DynamicBatcher(lambda items: items, max_batch=8, max_queue_delay_s=0.03) as batcher:
        start = time.perf_counter()
        assert batcher.submit("a").result(timeout=5) == "a"
        waited = time.perf_counter() - start
    assert 0.025 < waited < 0.5


def test_errors_reach_every_caller_and_the_worker_survives() -> None:
    def run(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("bad")
        return items

    with DynamicBatcher(run, max_batch=1, max_queue_delay_s=0) as batcher:
        with pytest.raises(ValueError):
            batcher.submit(0).result(timeout=5)
        assert batcher.submit(1).result(timeout=5) == 1


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(RtpickError):
        DynamicBatcher(lambda x: x, max_batch=0, max_queue_delay_s=0)
    with pytest.raises(RtpickError):
        DynamicBatcher(lambda x: x, max_batch=1, max_queue_delay_s=-1)
