"""The server queue's staging copy: request rows land in the batch's staging rows in order, by one thread or
several, exactly as concatenating them would (the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtpick.perf.staging import HostStaging
from rtpick.serve import served as served_module
from rtpick.serve.served import ServerQueue


@pytest.mark.parametrize("parallel", [False, True])
def test_stage_writes_every_request_row_in_order(monkeypatch, parallel) -> None:
    monkeypatch.setattr(served_module, "PARALLEL_COPY_BYTES", 0 if parallel else 1 << 62)
    monkeypatch.setattr(served_module, "COPY_PIECE_BYTES", 3 * 8 * 8 * 4 * 2)  # two rows a piece: rows split
    rng = np.random.default_rng(0)
    queue = ServerQueue(16, 32, copy_threads=3)
    staging = HostStaging({"x": "float32", "k": "int64"}, {"x": (3, 8, 8), "k": (2,)}, 32)
    sent = []
    for rows in (5, 1, 7, 3):
        feeds = {"x": rng.standard_normal((rows, 3, 8, 8)).astype(np.float32),
                 "k": rng.integers(0, 100, (rows, 2), dtype=np.int64)}
        sent.append(feeds)
        queue.submit(feeds, math.inf, lambda result: None)
    taken = queue.take(0.0, 32, lambda rows: 0.0)
    assert taken is not None and taken.rows == 16
    fed = queue.stage(taken, 16, staging)
    for name in ("x", "k"):
        np.testing.assert_array_equal(fed[name], np.concatenate([f[name] for f in sent]))
    queue.close()
    assert queue._pool is None
