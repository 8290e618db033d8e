"""The per-batch scheduler on a fake clock: deterministic, no sleeping, no timing asserts."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from scheduler_fakes import seeded_predictor

from rtpick.errors import RtpickError
from rtpick.model import TensorSpec
from rtpick.perf.camera_slots import SyntheticCameras, grouped_percentiles, pick_earliest
from rtpick.perf.request_queue import QueueFull, RequestQueue, RequestResult, request_scheduler
from rtpick.perf.scheduler import ComputePredictor, FakeClock, Scheduler, bucket_sizes
from rtpick.perf.staging import HostStaging
from rtpick.runtimes.base import Session

SPEC = (TensorSpec("x", "float32", ("batch", 3)),)


class FakeSession(Session):
    """Costs `fixed + per_row * rows` seconds of fake time per call; returns its input doubled."""

    def __init__(self, clock: FakeClock | None, fixed: float, per_row: float = 0.0, fail_on: int | None = None) -> None:
        super().__init__("fake", "fp32", SPEC, (TensorSpec("y", "float32", ("batch", 3)),), "cpu")
        self.clock, self.fixed, self.per_row, self.fail_on = clock, fixed, per_row, fail_on
        self.sizes: list[int] = []

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        rows = int(feeds["x"].shape[0])
        self.sizes.append(rows)
        if self.clock is not None:
            self.clock.advance(self.fixed + self.per_row * rows)
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise RuntimeError("device fell over")
        return {"y": np.asarray(feeds["x"]) * 2}


def feeds(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((rows, 3), dtype=np.float32)}


def run_cameras(cost: float, per_row: float, *, cameras: int, fps: float, frames: int, deadline_s: float,
                max_batch: int, window_s: float, depth: int = 2, seed: int = 0) -> tuple[SyntheticCameras, Scheduler]:
    clock = FakeClock()
    session = FakeSession(clock, cost, per_row)
    policy = SyntheticCameras(cameras, fps, frames, deadline_s, start=0.0, queue_frames=depth, seed=seed,
                              feeds=feeds(max_batch))
    predictor = seeded_predictor(max_batch, cost, per_row)
    scheduler = Scheduler(session, policy, max_batch=max_batch, max_queue_delay_s=window_s, clock=clock,
                          predictor=predictor)
    scheduler.run()
    policy.close_counts()
    return policy, scheduler


def test_fast_runtime_processes_every_frame_on_time_in_batches() -> None:
    policy, scheduler = run_cameras(0.001, 0.0001, cameras=50, fps=30, frames=30, deadline_s=1 / 30,
                                    max_batch=16, window_s=0.005)
    total = policy.stats.total()
    assert total["frames"] == 50 * 30 and total["processed"] == total["frames"] == total["on_time"]
    assert total["dropped_queue"] == total["dropped_late"] == 0
    stats = scheduler.stats.to_dict()
    assert stats["rows"] == total["processed"] and stats["mean_batch"] > 1  # the window gathered frames
    assert max(stats["batch_histogram"]) <= 16
    assert all(row["frames"] == 30 and row["processed"] == 30 for row in policy.stats.per_camera())
    assert total["p99_ms"] <= 1000 / 30


def test_overload_keeps_the_newest_frames_and_accounts_for_every_frame() -> None:
    # 20 ms a batch of up to 4, 40 cameras at 50 fps: ~2,000 frames/s offered, ~200 possible
    policy, scheduler = run_cameras(0.020, 0.0, cameras=40, fps=50, frames=50, deadline_s=0.1, max_batch=4,
                                    window_s=0.002)
    total = policy.stats.total()
    assert total["frames"] == 40 * 50
    assert total["processed"] + total["dropped_queue"] + total["dropped_late"] == total["frames"]
    assert total["dropped_queue"] > 0 and total["processed"] > 0
    assert scheduler.stats.to_dict()["full_batch_fraction"] > 0.9  # the device is the limit: batches full
    for row in policy.stats.per_camera():
        assert row["processed"] + row["dropped_queue"] + row["dropped_late"] == row["frames"] == 50
    # goodput stays near capacity instead of collapsing: about 4 frames per 20 ms
    assert total["on_time"] >= 0.8 * (4 / 0.020) * 1.0


def test_a_frame_that_cannot_make_its_deadline_is_skipped_not_run() -> None:
    # the compute alone (30 ms) exceeds the 20 ms deadline: nothing may run
    policy, scheduler = run_cameras(0.030, 0.0, cameras=3, fps=20, frames=5, deadline_s=0.020, max_batch=4,
                                    window_s=0.001)
    total = policy.stats.total()
    assert total["processed"] == 0 and total["dropped_late"] + total["dropped_queue"] == total["frames"] == 15
    assert scheduler.stats.batches == 0


def test_the_window_never_holds_a_batch_past_its_deadline() -> None:
    # a huge window (1 s) but a 50 ms deadline: the batch must go by deadline - predicted compute
    policy, _ = run_cameras(0.010, 0.0, cameras=2, fps=10, frames=5, deadline_s=0.050, max_batch=64,
                            window_s=1.0)
    total = policy.stats.total()
    assert total["on_time"] == total["frames"] == 10


def test_pick_earliest_takes_the_oldest_that_can_still_make_it() -> None:
    capture = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    chosen, late = pick_earliest(capture, capture + 0.5, 2, lambda rows: 0.55)
    assert late.tolist() == [True, False, False, False, False]
    assert chosen.tolist() == [1, 2]


def test_grouped_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, 400)
    values = rng.exponential(0.01, 400)
    p50, p99 = grouped_percentiles(groups, values, 6, (50, 99))
    for g in range(5):
        assert p50[g] == pytest.approx(np.percentile(values[groups == g], 50) * 1e3)
        assert p99[g] == pytest.approx(np.percentile(values[groups == g], 99) * 1e3)
    assert p50[5] is None


def test_predictor_interpolates_and_never_predicts_a_larger_batch_cheaper() -> None:
    predictor = ComputePredictor(8)
    predictor.seed({1: 0.001, 8: 0.008})
    assert predictor(4) == pytest.approx(0.004)
    predictor.observe(2, 0.0001)  # noise: a cheap observation at 2
    assert predictor(2) >= predictor(1)
    assert all(predictor(n + 1) >= predictor(n) for n in range(1, 8))


def test_bucket_sizes_pad_up_to_an_allowed_size() -> None:
    table = bucket_sizes(8, [1, 2, 4])
    assert table[1:].tolist() == [1, 2, 4, 4, 8, 8, 8, 8]
    assert bucket_sizes(3, None).tolist() == [0, 1, 2, 3]


def test_padded_batches_run_at_the_allowed_sizes() -> None:
    clock = FakeClock()
    session = FakeSession(clock, 0.001)
    policy = SyntheticCameras(5, 30, 10, 1 / 30, start=0.0, feeds=feeds(8))
    Scheduler(session, policy, max_batch=8, max_queue_delay_s=0.002, clock=clock, batch_sizes=[1, 2, 4]).run()
    policy.close_counts()
    assert set(session.sizes) <= {1, 2, 4, 8}
    assert policy.stats.total()["processed"] == 50


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(RtpickError, match="--fps"):
        SyntheticCameras(2, 0, 10, 0.1, start=0.0)
    with pytest.raises(RtpickError, match="--streams"):
        SyntheticCameras(0, 10, 10, 0.1, start=0.0)
    with pytest.raises(RtpickError, match="max batch"):
        Scheduler(FakeSession(None, 0), None, max_batch=0, max_queue_delay_s=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- request queue


def make_queue(max_queue: int, max_batch: int, **kwargs: Any) -> tuple[Scheduler, RequestQueue, FakeSession]:
    clock = FakeClock()
    session = FakeSession(clock, 0.001, **kwargs)
    queue = RequestQueue(max_queue, max_batch, clock=clock.now)
    staging = HostStaging({"x": "float32"}, {"x": (3,)}, max_batch)
    scheduler = Scheduler(session, queue, max_batch=max_batch, max_queue_delay_s=0.0, clock=clock,
                          staging=staging)
    return scheduler, queue, session


def test_requests_fill_rows_are_never_split_and_get_their_own_slice() -> None:
    scheduler, queue, session = make_queue(10, 4)
    results: dict[int, RequestResult] = {}
    sizes = [3, 2, 1, 4, 1]
    for i, rows in enumerate(sizes):
        data = {"x": np.full((rows, 3), float(i), dtype=np.float32)}
        queue.submit(data, deadline=10.0, done=lambda r, i=i: results.__setitem__(i, r))
    scheduler.run(stop_when_idle=True)
    assert session.sizes == [3, 3, 4, 1]  # FIFO, a request never split: 3 | 2+1 | 4 | 1
    for i, rows in enumerate(sizes):
        assert results[i].status == "ok"
        np.testing.assert_array_equal(results[i].outputs["y"], np.full((rows, 3), 2.0 * i))


def test_a_full_queue_refuses_at_once_and_late_requests_are_dropped_before_running() -> None:
    scheduler, queue, session = make_queue(2, 4)
    answers: list[str] = []
    queue.submit(feeds(1), deadline=-1.0, done=lambda r: answers.append(r.status))  # already past its deadline
    queue.submit(feeds(1), deadline=10.0, done=lambda r: answers.append(r.status))
    with pytest.raises(QueueFull):
        queue.submit(feeds(1), deadline=10.0, done=lambda r: answers.append(r.status))
    scheduler.run(stop_when_idle=True)
    assert answers == ["late", "ok"] and session.sizes == [1]
    assert queue.counts["rejected_full"] == 1 and queue.counts["dropped_late"] == 1
    with pytest.raises(RtpickError, match="rows"):
        queue.submit(feeds(5), deadline=10.0, done=lambda r: None)


def test_a_failing_batch_answers_its_requests_and_the_loop_goes_on() -> None:
    scheduler, queue, session = make_queue(4, 1, fail_on=1)
    answers: list[str] = []
    for _ in range(2):
        queue.submit(feeds(1), deadline=10.0, done=lambda r: answers.append(r.status))
    scheduler.run(stop_when_idle=True)
    assert answers == ["error", "ok"] and queue.counts["failed"] == 1


def test_requests_pushed_from_threads_on_the_real_clock() -> None:
    session = FakeSession(None, 0.0)
    scheduler, queue = request_scheduler(session, {"x": (3,)}, max_batch=8, max_queue=64,
                                         max_queue_delay_s=0.001)
    scheduler.start()
    done = threading.Semaphore(0)
    outputs: list[np.ndarray] = []

    def client(k: int) -> None:
        for j in range(10):
            value = float(k * 100 + j)
            while True:
                try:
                    queue.submit({"x": np.full((1, 3), value, dtype=np.float32)}, deadline=queue.clock() + 5.0,
                                 done=lambda r: (outputs.append(r.outputs["y"].copy()), done.release()))
                    break
                except QueueFull:
                    pass

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert all(done.acquire(timeout=10) for _ in range(40))
    scheduler.stop()
    scheduler.join(10)
    assert scheduler.error is None
    got = sorted(float(o[0, 0]) for o in outputs)
    assert got == sorted(2.0 * (k * 100 + j) for k in range(4) for j in range(10))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda(), reason="no CUDA device here: pinned staging and the copy stream need one")
def test_cuda_staging_overlaps_and_matches_the_host_rows() -> None:
    import torch

    from rtpick.perf.staging import CudaStaging

    staging = CudaStaging({"x": "float32"}, {"x": (3,)}, 4)
    for k in range(6):  # more batches than buffer sets: each set is reused only after its copy and compute
        staging.host("x")[:2] = k
        on_device = staging.stage(2)
        staging.before_run()
        out = on_device["x"] * 2
        timer = staging.after_run()
        staging.wait_done()
        assert torch.equal(out.cpu(), torch.full((2, 3), 2.0 * k)) and timer() >= 0


def test_host_staging_hands_out_views_of_preallocated_rows() -> None:
    staging = HostStaging({"x": "float32"}, {"x": (3,)}, 4)
    staging.host("x")[:2] = 7
    first = staging.stage(2)["x"]
    assert first.shape == (2, 3) and np.shares_memory(first, staging.buffers["x"]) and (first == 7).all()
    assert staging.nbytes == 4 * 3 * 4


def test_outputs_whose_first_dim_is_not_the_batch_cannot_be_split() -> None:
    from rtpick.perf.batch_rows import rows_problem

    assert rows_problem({"y": np.zeros((4, 2)), "z": np.zeros(4)}, 4) is None
    assert "output 'kept' has shape [7, 2] for a batch of 4" in rows_problem({"kept": np.zeros((7, 2))}, 4)
    assert "shape []" in rows_problem({"count": np.zeros(())}, 1)
