"""The pure parts of benchmarks/gpu_energy_fp8.py (the plan, the table, the verdicts, the results file) and its
models on the CPU; the measurements themselves need the H200 (benchmarks/results/h200/energy-fp8.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_energy_fp8.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_energy_fp8", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["gpu_energy_fp8"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_energy_fp8", None)


def test_plan_covers_the_issue_and_puts_bert_first(bench) -> None:
    jobs = bench.plan()
    labels = [job.label for job in jobs]
    assert jobs[0].model == "bert" and not jobs[0].measure  # the fp32 reference, outputs only
    assert {("bert", p) for p in ("fp8", "bf16", "fp16")} <= {(j.model, j.precision) for j in jobs
                                                             if j.runtime == "torch-compile-cuda"}
    resnet = {(j.runtime, j.precision, tuple(sorted(j.options.items())), j.batches) for j in jobs
              if j.model == "resnet50"}
    for precision in ("fp32", "fp16", "bf16"):
        assert ("torch-cuda", precision, (), (1, 256)) in resnet
    assert ("torch-cuda", "fp16", (("cuda_graph", True), ("fuse_conv", True)), (1, 256)) in resnet
    assert any(j.runtime == "torch-compile-cuda" and j.precision == "fp16" and j.options["mode"] == "reduce-overhead"
               and j.batches == (1, 256) for j in jobs)
    assert any(j.model == "resnet50" and j.precision == "fp8" for j in jobs)
    assert all("max-autotune" not in label for label in labels)
    assert sum(j.cost_s for j in jobs) <= bench.BUDGET_S  # every job fits the budget when estimates hold


def _ok_record(precision: str, mean_ms: float, jpi: float | None, reasons: list[dict]) -> dict:
    energy = {"joules_per_inference": jpi, "energy": "measured" if jpi else "not measured: the window (1.0 s) is "
              "shorter than 20 updates", "clock_events": {"throttled": bool(reasons), "reasons": reasons}}
    return {"model": "bert", "label": f"bert torch-compile-cuda:{precision} default", "config":
            f"torch-compile-cuda:{precision}", "runtime": "torch-compile-cuda", "precision": precision, "batch": 64,
            "scenario": "offline", "status": "ok", "accuracy": {"passed": True, "rel_l2": 0.04},
            "metrics": {"latency_ms": {"p50": mean_ms, "mean": mean_ms, "ci": {}}, "throughput": 64e3 / mean_ms,
                        "energy": energy}}


def test_rows_show_speed_energy_throttling_and_accuracy(bench) -> None:
    power = [{"reason": "power cap (software power scaling)", "throttling": True, "fraction": 0.5},
             {"reason": "GPU idle", "throttling": False, "fraction": 0.1}]
    row = bench.row_text(_ok_record("fp8", 4.0, 0.0344, power))
    assert "p50    4.000 ms" in row and "16,000/s" in row and "34.400 mJ/inf" in row
    assert "power cap 50%" in row and "GPU idle" not in row and "acc ok relL2 0.04" in row
    refused = bench.row_text(_ok_record("bf16", 4.0, None, []))
    assert "energy not measured: the window (1.0 s)" in refused and "no throttling" in refused
    job = bench.Job("resnet50", "torch-compile-cuda", "fp8", (256,), {"mode": "reduce-overhead"})
    (failed,) = bench.failed(job, "unavailable", "MissingRuntime: no FP8 here")
    assert bench.row_text(failed).endswith("unavailable: MissingRuntime: no FP8 here")
    assert job.label == "resnet50 torch-compile-cuda:fp8 reduce-overhead"


def test_verdicts_compare_fp8_with_the_best_16_bit_configuration(bench) -> None:
    records = [_ok_record("fp8", 4.15, 0.034, []), _ok_record("bf16", 4.0, 0.041, []),
               _ok_record("fp16", 3.83, 0.041, [])]
    assert bench.verdicts(records) == ["bert b64: fp8 not faster here: 0.92x torch-compile-cuda:fp16"]


def test_results_never_carry_nan(bench) -> None:
    assert bench.finite({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"}) == {"a": [1.0, None], "b": None,
                                                                                      "c": "x"}


def test_a_spent_budget_records_every_job_as_skipped(bench, tmp_path: Path, capsys) -> None:
    assert bench.main(["--out", str(tmp_path), "--budget-s", "0"]) == 0
    data = json.loads((tmp_path / "energy-fp8.json").read_text())
    assert data["records"] and all(r["status"] == "skipped" for r in data["records"])
    assert "time budget" in data["records"][0]["error"]
    assert "skipped: time budget" in capsys.readouterr().out


def test_models_on_the_cpu(bench) -> None:
    torch = pytest.importorskip("torch")
    from rtpick.errors import MissingRuntime
    from rtpick.runtimes.fp8 import swap_linear_layers

    model = bench.bert_like(layers=1)
    ids = torch.randint(0, 100, (2, 16))
    with torch.inference_mode():
        assert model(ids).shape == (2, 16, 768)
    _, report = swap_linear_layers(model.to(torch.bfloat16))
    assert len(report.converted) == 6 and not report.skipped  # q, k, v, attention out, FFN in and out
    with pytest.raises(MissingRuntime, match="TransformerEncoderLayer reads its weights directly"):
        swap_linear_layers(bench.torch_transformer(layers=1))
