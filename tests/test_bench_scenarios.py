from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from bench_fakes import CompilingSession, SpinSession, feeds

from rtpick.errors import RtpickError
from rtpick.perf import scenarios
from rtpick.perf.isolation import run_isolated
from rtpick.perf.job import Job
from rtpick.perf.scenarios import closedloop
from rtpick.perf.scenarios.closedloop import ClosedLoopParams
from rtpick.perf.worker import is_oom, run_job


def test_multistream_on_time_when_fast_and_late_or_dropped_when_slow() -> None:
    fast = scenarios.multistream(SpinSession(0.001), feeds(4), streams=4, fps=20, duration_s=0.5)
    assert fast["total"]["frames"] == 4 * 10
    assert fast["meets"] and fast["total"]["late"] == 0 and fast["total"]["dropped"] == 0
    assert len(fast["per_camera"]) == 4 and all(c["frames"] == 10 for c in fast["per_camera"])
    # 30 ms per batch, 4 cameras at 50 fps (20 ms deadline): nothing can be on time
    slow = scenarios.multistream(SpinSession(0.030, sleep=True), feeds(4), streams=4, fps=50, duration_s=0.4)
    total = slow["total"]
    assert not slow["meets"]
    assert total["late"] + total["dropped"] == total["frames"] - total["on_time"]
    assert total["late"] + total["dropped"] > 0.9 * total["frames"]


def test_find_max_streams_stops_where_the_deadline_breaks() -> None:
    # 4 ms + 4 ms per frame at 25 fps (40 ms deadline): batches of up to 8 take <= 36 ms
    session = SpinSession(0.004, per_sample=0.004, sleep=True)
    result = scenarios.find_max_streams(session, feeds(8), fps=25, duration_s=0.4, limit=16)
    assert 1 <= result["max_streams"] <= 16
    assert result["best"]["meets"]
    failing = [t for t in result["trials"] if not t["meets"]]
    assert all(t["streams"] > result["max_streams"] for t in failing)


def test_find_max_rate_respects_the_bound() -> None:
    session = SpinSession(0.005, sleep=True)
    result = scenarios.find_max_rate(session, feeds(1), p99_bound_ms=30, duration_s=0.5, max_batch=1, steps=3)
    assert result["max_qps"] is not None and result["max_qps"] < 210
    assert result["best"]["latency_ms"]["p99"] <= 30
    assert result["batch_warmup_s"] > 0 and "run before measuring" in result["method"]
    assert all("run before the trials" in trial["method"] for trial in result["trials"])


def test_bad_parameters_are_user_errors() -> None:
    session = SpinSession(0.001)
    with pytest.raises(RtpickError, match="--rate"):
        scenarios.server(session, feeds(), rate_qps=0, duration_s=1)
    with pytest.raises(RtpickError, match="--fps"):
        scenarios.multistream(session, feeds(), streams=1, fps=0, duration_s=1)
    with pytest.raises(RtpickError, match="--deadline-ms"):
        scenarios.multistream(session, feeds(), streams=1, fps=10, duration_s=1, deadline_ms=-1)


def test_saturation_batch() -> None:
    assert scenarios.saturation_batch([(1, 100.0), (2, 190.0), (4, 300.0), (8, 310.0)]) == 4
    assert scenarios.saturation_batch([]) is None


def test_a_failing_configuration_is_recorded_not_raised(small_onnx) -> None:
    params = ClosedLoopParams(duration_s=0.1, min_queries=10, warmup=2, blocks=2)
    job = Job(model=str(small_onnx), runtime="ort-cpu", precision="fp32", batch=2, scenario="single-stream",
              params=params, shapes={"x": [2, 9]})  # wrong width: the build or run must fail, and be recorded
    record = run_job(job)
    assert record.status == "failed" and record.error is not None and "x" in record.error
    good = run_isolated(replace(job, shapes={}), timeout_s=120)
    assert good.status == "ok", good
    assert good.measurement is not None and good.measurement.data["batch"] == 2
    assert good.build_time_s and good.build_time_s > 0 and good.first_inference_ms and good.first_inference_ms > 0
    assert good.memory_figure("host_rss_peak_mb")
    assert (good.memory or {})["gpu_memory"].startswith("not measured")


def test_a_hang_is_killed_and_recorded(small_onnx) -> None:
    job = Job(model=str(small_onnx), runtime="ort-cpu", precision="fp32", batch=1, scenario="single-stream",
              params=ClosedLoopParams(duration_s=60, min_queries=10, warmup=1, blocks=2))
    record = run_isolated(job, timeout_s=3)
    assert record.status == "timeout" and "3 s" in (record.error or "")


def test_oom_messages_are_recognised() -> None:
    assert is_oom("CUDA out of memory. Tried to allocate 2 GiB")
    assert is_oom("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")
    assert not is_oom("shape mismatch")


class CountingCompiler(CompilingSession):
    """A static-shape compiled runtime (first call at each batch size slow) that counts its calls per size."""

    def __init__(self) -> None:
        super().__init__(0.002, compile_s=0.3)
        self.calls: Counter[int] = Counter()

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        self.calls[int(feeds["x"].shape[0])] += 1
        return super()._run(feeds)


def test_warming_runs_every_batch_size_past_its_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    # the stability warm-up of the smallest and largest batch must start after their compile, not be spent on it
    monkeypatch.setattr(closedloop, "WARMUP_MAX_S", 0.1)
    session = CountingCompiler()
    seconds = scenarios.warm_batches(session, feeds(4), 4)
    assert set(session.calls) == {1, 2, 3, 4} and seconds >= 4 * 0.3
    assert all(session.calls[size] >= scenarios.WARM_CALLS_PER_BATCH for size in (2, 3))
    assert session.calls[1] > scenarios.WARM_CALLS_PER_BATCH and session.calls[4] > scenarios.WARM_CALLS_PER_BATCH


def test_dynamic_batching_measures_no_first_call_at_a_new_batch_size() -> None:
    """The H100 bug: a compiled session recompiled at each new batch size during a server run (p50 18 s)."""
    # unwarmed, the fake shows the bug: a 300 ms first call lands inside the measurement
    cold = scenarios.server(CountingCompiler(), feeds(4), rate_qps=200, duration_s=0.5, max_batch=4, warm=False)
    assert cold["latency_ms"]["max"] >= 300, cold["latency_ms"]
    assert cold["batch_warmup_s"] is None and "before the trials" in cold["method"]

    session = CountingCompiler()
    served = scenarios.server(session, feeds(4), rate_qps=200, duration_s=0.5, max_batch=4)
    assert set(session.calls) == {1, 2, 3, 4}
    assert served["batch_warmup_s"] >= 4 * 0.3 and "not measured" in served["method"]
    assert served["completed"] == served["queries"]
    assert served["latency_ms"]["max"] < 250, served["latency_ms"]  # no first call among the measured queries

    cameras = CountingCompiler()
    streamed = scenarios.multistream(cameras, feeds(4), streams=4, fps=20, duration_s=0.5, max_batch=4)
    assert set(cameras.calls) == {1, 2, 3, 4} and streamed["batch_warmup_s"] >= 4 * 0.3
    assert streamed["total"]["p99_ms"] < 250, streamed["total"]
    assert streamed["total"]["dropped"] == 0, streamed["total"]


def test_the_scheduler_scenarios_run_a_model_without_a_batch_axis_one_row_per_run(tmp_path) -> None:
    """y = x * s with a scalar s: no batch axis, so the server and multistream scenarios run it one request per
    run, as rtpick serve does (they stacked rows and failed on the scalar before)."""
    import onnx
    from onnx import TensorProto, helper

    import rtpick

    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "scaled.onnx"
    onnx.save(model, str(path))
    for scenario, extra in (("multistream", {"streams": 2, "fps": 50.0}), ("server", {"rate_qps": 100.0})):
        results = rtpick.bench(str(path), "ort-cpu:fp32", scenario=scenario, quick=True, duration_s=0.3,
                               isolate=False, accuracy=False, **extra)
        (record,) = results.configurations
        assert record.ok, (scenario, record.error)
