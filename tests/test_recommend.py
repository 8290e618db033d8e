"""The ranking of `rtpick recommend`, on hand-made bench records: the tail decides, correctness gates, costs count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rtpick.comparison.metrics import OutputCheck
from rtpick.comparison.result import Comparison, ComparisonRow
from rtpick.deploy import DeployConfig
from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.perf.scenarios.multistream import MultistreamMeasurement
from rtpick.recommendation import (
    BUILD_FAILED,
    CHOSEN,
    FAILED_ACCURACY,
    MEETS,
    NOT_ALLOWED,
    OOM,
    OVER_BUDGET,
    OVER_MEMORY,
    Constraints,
    correctness_records,
    plan,
    rank,
)

PASSED = {"status": "pass", "passed": True, "gate": "tolerance", "reason": ""}


def record(config: str, *, p50: float = 1.0, p99: float = 2.0, throughput: float = 500.0, status: str = "ok",
           build: float | None = 0.1, host: float = 100.0, gpu: float | None = None, device: str | None = None,
           correctness: dict | None = None, scenario: str = "single-stream", batch: int = 1, **extra: object
           ) -> Record:
    runtime, precision = config.split(":")
    device = device or ("cpu" if runtime.endswith("cpu") else "cuda")
    rec: dict = {"config": config, "runtime": runtime, "precision": precision, "batch": batch, "status": status,
                 "scenario": scenario, "device": device, "correctness": PASSED if correctness is None else correctness,
                 **extra}
    if build is not None:
        rec["build_time_s"] = build
    if status == "ok":
        rec["metrics"] = {"scenario": scenario, "method": "hand-made", "batch": batch, "n": 100, "duration_s": 1.0,
                          "latency_ms": {"p50": p50, "p90": p99, "p99": p99, "mean": p50, "max": p99},
                          "throughput": throughput}
        memory = {"host_rss_peak_mb": host}
        if device == "cuda":
            memory.update({"gpu_memory_peak_mb": gpu} if gpu is not None else {"gpu_memory": "not measured (test)"})
        rec["memory"] = memory
    return Record.from_dict(rec)


def test_p99_not_the_median_decides_the_budget():
    records = [record("ort-cpu:fp32", p50=0.5, p99=30.0), record("torch-cpu:fp32", p50=5.0, p99=8.0)]
    out = rank(records, Constraints(p99_ms=10.0))
    assert out.chosen is not None and out.chosen.config == "torch-cpu:fp32"
    (missed,) = out.closest
    assert missed.config == "ort-cpu:fp32" and missed.verdict == OVER_BUDGET
    assert "over by 20 ms" in missed.reason and missed.miss == pytest.approx(2.0)


def test_ranking_is_by_tail_among_those_that_meet():
    records = [record("ort-cpu:fp32", p50=0.5, p99=9.0), record("torch-cpu:fp32", p50=5.0, p99=8.0)]
    out = rank(records, Constraints(p99_ms=10.0))
    assert [r.config for r in out.ranked] == ["torch-cpu:fp32", "ort-cpu:fp32"]
    assert [r.rank for r in out.ranked] == [1, 2]
    assert out.ranked[0].verdict == CHOSEN and out.ranked[1].verdict == MEETS


def test_failed_accuracy_is_excluded_even_when_fastest():
    bad = {"status": "mismatch", "passed": False, "gate": "tolerance", "reason": "logits: cosine 0.5 < 0.99"}
    records = [record("ort-cpu:int8", p99=0.1, correctness=bad), record("ort-cpu:fp32", p99=3.0)]
    out = rank(records, Constraints(p99_ms=10.0))
    assert out.chosen.config == "ort-cpu:fp32"
    (excluded,) = out.excluded
    assert excluded.verdict == FAILED_ACCURACY and "cosine" in excluded.reason


def test_build_time_is_amortised_over_expected_inferences():
    records = [record("torch-compile-cpu:fp32", p99=5.0, build=60.0), record("ort-cpu:fp32", p99=8.0, build=0.1)]
    few = rank(records, Constraints(p99_ms=10.0, expected_inferences=1000))
    assert few.chosen.config == "ort-cpu:fp32"
    assert few.ranked[1].cost_ms == pytest.approx(5.0 + 60.0 * 1e3 / 1000)
    many = rank(records, Constraints(p99_ms=10.0, expected_inferences=10**9))
    assert many.chosen.config == "torch-compile-cpu:fp32"
    assert many.chosen.cost_ms == pytest.approx(5.0 + 60.0 * 1e3 / 1e9)


def test_memory_limits_exclude_with_the_amount():
    records = [record("ort-cpu:fp32", p99=1.0, host=900.0), record("torch-cpu:fp32", p99=2.0, host=300.0),
               record("torch-cuda:fp16", p99=0.5, gpu=3000.0), record("ort-cuda:fp32", p99=0.6)]
    out = rank(records, Constraints(p99_ms=10.0, max_host_mem_mb=500.0, max_gpu_mem_mb=2000.0))
    assert out.chosen.config == "torch-cpu:fp32"
    reasons = {r.config: r for r in out.excluded}
    assert reasons["ort-cpu:fp32"].verdict == OVER_MEMORY and "by 400 MB" in reasons["ort-cpu:fp32"].reason
    assert reasons["torch-cuda:fp16"].verdict == OVER_MEMORY and "by 1,000 MB" in reasons["torch-cuda:fp16"].reason
    # a GPU figure that was not measured cannot pass a GPU memory limit
    assert reasons["ort-cuda:fp32"].verdict == OVER_MEMORY and "cannot be checked" in reasons["ort-cuda:fp32"].reason


def test_cpu_only():
    records = [record("torch-cuda:fp16", p99=0.2, gpu=500.0), record("ort-cpu:fp32", p99=3.0)]
    out = rank(records, Constraints(p99_ms=10.0, cpu_only=True))
    assert out.chosen.config == "ort-cpu:fp32"
    assert out.excluded[0].verdict == NOT_ALLOWED
    with pytest.raises(RtpickError, match="--cpu-only contradicts torch-cuda:fp16"):
        plan(["ort-cpu:fp32", "torch-cuda:fp16"], cpu_only=True)
    runnable, skipped = plan(None, cpu_only=True)
    assert "ort-cpu:fp32" in runnable and all(s.verdict in (NOT_ALLOWED, "unavailable here") for s in skipped)
    assert {s.config for s in skipped} >= {"torch-cuda:fp32", "tensorrt:fp16"}


def test_no_configuration_meets_the_budget_gives_the_closest_with_miss_amounts():
    records = [record("ort-cpu:fp32", p99=12.0), record("torch-cpu:fp32", p99=30.0),
               record("ort-cpu:int8", status="oom", error="out of memory: bad_alloc"),
               record("torch-compile-cpu:fp32", status="failed", build=None, error="InductorError: boom")]
    out = rank(records, Constraints(p99_ms=10.0))
    assert out.chosen is None and not out.ok
    assert [r.config for r in out.closest] == ["ort-cpu:fp32", "torch-cpu:fp32"]
    assert "over by 2 ms, 20%" in out.closest[0].reason and "over by 20 ms, 200%" in out.closest[1].reason
    verdicts = {r.config: r.verdict for r in out.excluded}
    assert verdicts == {"ort-cpu:int8": OOM, "torch-compile-cpu:fp32": BUILD_FAILED}


def test_nan_never_passes():
    out = rank([record("ort-cpu:fp32", p50=1.0, p99=math.nan)], Constraints(p99_ms=10.0))
    assert out.chosen is None and out.closest[0].miss == math.inf


def test_throughput_mode_picks_the_cheapest_batch_that_meets():
    sweep = [record("ort-cpu:fp32", scenario="offline", batch=b, throughput=tp, p99=p99)
             for b, tp, p99 in ((1, 1000.0, 1.0), (8, 6000.0, 2.0), (32, 9000.0, 5.0))]
    out = rank(sweep, Constraints(min_throughput=5000.0))
    assert out.chosen.batch == 32 and out.chosen.cost_ms == pytest.approx(1e3 / 9000.0)
    tight = rank(sweep, Constraints(min_throughput=5000.0, p99_ms=3.0))
    assert tight.chosen.batch == 8
    short = rank(sweep, Constraints(min_throughput=20000.0))
    assert short.chosen is None and "short by 11,000/s" in short.closest[0].reason


def test_streams_mode_needs_frames_on_time():
    def cams(config: str, on_time: float) -> Record:
        rec = record(config)
        rec.scenario = "multistream"
        rec.measurement = MultistreamMeasurement.from_dict(
            {"scenario": "multistream", "streams": 4, "fps": 30.0, "duration_s": 2.0, "method": "m",
             "total": {"p99_ms": 10.0, "p50_ms": 5.0, "on_time_fraction": on_time, "processed": 240, "frames": 240,
                       "late": 0, "dropped": 0}})
        return rec

    out = rank([cams("ort-cpu:fp32", 0.95), cams("torch-cpu:fp32", 1.0)], Constraints(streams=4, fps=30.0))
    assert out.chosen.config == "torch-cpu:fp32" and out.chosen.throughput == pytest.approx(120.0)
    assert "short by 4.0 points" in out.closest[0].reason


@pytest.mark.parametrize("kwargs, message", [
    ({"streams": 16}, "--streams and --fps go together"),
    ({"fps": 30.0}, "--streams and --fps go together"),
    ({}, "give a budget"),
    ({"p99_ms": -1.0}, "--p99-ms must be a positive"),
    ({"streams": 2, "fps": 30.0, "min_throughput": 10.0}, "different questions"),
    ({"p99_ms": 5.0, "max_accuracy_drop": -0.5}, "percentage points"),
    ({"p99_ms": 5.0, "expected_inferences": 0}, "at least 1"),
])
def test_contradictory_constraints(kwargs, message):
    with pytest.raises(RtpickError, match=message):
        Constraints(**kwargs).validate()


def _comparison(rows: list[ComparisonRow]) -> Comparison:
    from rtpick.model import ModelSpec

    spec = ModelSpec(name="m", inputs=(), outputs=(), source="onnx", sha256="0")
    return Comparison(model=spec, reference="ort-cpu:fp32", feeds_description="labelled", rows=rows)


def _row(config: str, status: str, accuracy: float, agreement: float, reason: str = "") -> ComparisonRow:
    runtime, precision = config.split(":")
    out = OutputCheck(name="logits", shape=[10, 10], dtype="float32", ok=status != "mismatch",
                      accuracy=accuracy, top1_agreement=agreement)
    return ComparisonRow(config=config, runtime=runtime, precision=precision, status=status, reason=reason,
                         outputs=[out])


def test_accuracy_drop_gate_replaces_tolerances():
    comparison = _comparison([
        _row("ort-cpu:fp32", "reference", 0.990, 1.0),
        _row("ort-cpu:int8", "mismatch", 0.987, 0.97, reason="logits: cosine 0.98 < 0.99"),
        _row("torch-cpu:bf16", "pass", 0.970, 0.98),
    ])
    configs = ["ort-cpu:fp32", "ort-cpu:int8", "torch-cpu:bf16"]
    by_tolerance = correctness_records(comparison, configs, None)
    assert [by_tolerance[c]["passed"] for c in configs] == [True, False, True]
    by_drop = correctness_records(comparison, configs, 0.5)
    assert [by_drop[c]["passed"] for c in configs] == [True, True, False]
    assert by_drop["ort-cpu:int8"]["gate"] == "accuracy drop"
    assert "drop 2.00 points > 0.5" in by_drop["torch-cpu:bf16"]["reason"]


def test_agreement_gate_without_labels():
    comparison = _comparison([_row("ort-cpu:fp32", "reference", None, 1.0), _row("ort-cpu:int8", "pass", None, 0.99)])
    check = correctness_records(comparison, ["ort-cpu:int8"], 0.5)["ort-cpu:int8"]
    assert check["gate"] == "agreement" and check["passed"] is False


def test_deploy_file_round_trip_and_hash_check(tmp_path):
    deploy = DeployConfig(model_source="rtpick:digits", model_sha256="0" * 64, model_name="rtpick:digits",
                          runtime="ort-cpu", precision="fp32", options={"threads": 1}, batch=4,
                          shapes={"image": [4, 1, 32, 32]})
    path = tmp_path / "deploy.json"
    deploy.write(path)
    again = DeployConfig.read(path)
    assert again.to_dict() == deploy.to_dict()
    with pytest.raises(RtpickError, match="was made for"):
        again.load_model()
    (tmp_path / "other.json").write_text('{"schema": "rtpick.bench"}')
    with pytest.raises(RtpickError, match="not an rtpick deploy file"):
        DeployConfig.read(tmp_path / "other.json")


def test_deploy_file_loads_as_it_is(tmp_path):
    import rtpick
    from rtpick.sources import load_model

    digits = load_model("rtpick:digits")
    path = tmp_path / "deploy.json"
    DeployConfig(model_source="rtpick:digits", model_sha256=digits.spec.sha256, model_name="rtpick:digits",
                 runtime="ort-cpu", precision="fp32", options={"threads": 1}, batch=2,
                 shapes={"image": [2, 1, 32, 32]}).write(path)
    with rtpick.load(str(path)) as session:
        assert (session.runtime, session.precision, session.options["threads"]) == ("ort-cpu", "fp32", 1)
        out = session.run({"image": np.zeros((2, 1, 32, 32), np.float32)})
        assert out["logits"].shape == (2, 10)
    with pytest.raises(RtpickError, match="fixes the configuration"):
        rtpick.load(str(path), runtime="torch-cpu")
