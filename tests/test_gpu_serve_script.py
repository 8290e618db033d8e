"""The pure parts of benchmarks/gpu_serve.py (the run itself needs a CUDA GPU), and its clear failure here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SRC

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_serve  # noqa: E402


def test_buckets_and_plan() -> None:
    assert gpu_serve.bucket_list(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert gpu_serve.bucket_list(100)[-2:] == [64, 100]
    with pytest.raises(SystemExit):
        gpu_serve.bucket_list(0)
    gpu_serve.check_plan(256, 32, 4, 8)
    for bad in ((256, 0, 4, 8), (256, 257, 4, 8), (256, 32, 0, 8), (256, 32, 4, 0)):
        with pytest.raises(SystemExit):
            gpu_serve.check_plan(*bad)


def test_combine_verdict_and_table() -> None:
    outcomes = [{"statuses": {"200": 100}, "wall_s": 10.0, "p50_ms": 5.0, "p99_ms": 9.0, "errors": []},
                {"statuses": {"200": 50, "503": 2}, "wall_s": 9.5, "p50_ms": 6.0, "p99_ms": 12.0,
                 "errors": ["x"]}]
    served = gpu_serve.combine(outcomes, 32)
    assert served["images_per_s"] == pytest.approx(150 * 32 / 10.0)
    assert served["statuses"] == {"200": 150, "503": 2} and served["p99_ms_worst_client"] == 12.0
    result = gpu_serve.verdict(600.0, served["images_per_s"])
    assert result["fraction_of_offline"] == pytest.approx(0.8) and result["meets_target"]
    assert not gpu_serve.verdict(1000.0, 600.0)["meets_target"]
    assert not gpu_serve.verdict(0.0, 10.0)["meets_target"]
    text = gpu_serve.table({"batch": 256, "images_per_s": 600.0}, served, result,
                           {"images_per_s": 540.0})
    assert "80.0%" in text and "90.0%" in text and "met" in text


def test_perf_analyzer_output_is_read() -> None:
    stdout = "Concurrency: 32, throughput: 1 infer/sec\n  Throughput: 812.5 infer/sec\n"
    assert gpu_serve.perf_analyzer_images_per_s(stdout, 32) == pytest.approx(812.5 * 32)
    assert gpu_serve.perf_analyzer_images_per_s("nothing", 32) is None


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_without_cuda_it_stops_with_one_line(tmp_path) -> None:
    if _has_cuda():
        pytest.skip("this machine has CUDA: the refusal path does not apply")
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(BENCH / "gpu_serve.py"), "--out", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0 and "gpu_serve:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_both_transports_by_default_and_a_row_each() -> None:
    assert gpu_serve.transports("both") == ["none", "system"]
    assert gpu_serve.transports("system") == ["system"] and gpu_serve.transports("none") == ["none"]
    row = {"statuses": {"200": 10}, "images_per_s": 300.0, "p99_ms_worst_client": 5.0}
    text = gpu_serve.table({"batch": 256, "images_per_s": 1000.0}, row, gpu_serve.verdict(1000.0, 300.0), None,
                           {**row, "images_per_s": 800.0}, gpu_serve.verdict(1000.0, 800.0))
    assert "raw contents" in text and "shared memory" in text and "30.0%" in text and "80.0%" in text
    skipped = gpu_serve.table({"batch": 256, "images_per_s": 1000.0}, row, gpu_serve.verdict(1000.0, 300.0),
                              None, {"skipped": "RtpickError: /dev/shm has 64 MB free"}, None)
    assert "skipped: RtpickError" in skipped
