"""The pure parts of benchmarks/gpu_streams.py (the run itself needs a CUDA GPU), and its clear failure here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SRC

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_streams  # noqa: E402


def test_buckets_are_powers_of_two_and_the_max() -> None:
    assert gpu_streams.bucket_list(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert gpu_streams.bucket_list(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert gpu_streams.bucket_list(1) == [1]
    with pytest.raises(SystemExit):
        gpu_streams.bucket_list(0)


def test_summary_and_table_report_the_share_of_the_offline_bound() -> None:
    bound = gpu_streams.offline_bound(30_000.0, 30.0)
    assert bound == 1000.0
    search = {"max_streams": 950, "limit": {"why": "device busy"},
              "best": {"total": {"on_time_fraction": 0.995}, "pipeline": {"mean_batch": 250.0,
                                                                           "busy_fraction": 0.93}}}
    row = gpu_streams.summarise("host", search, bound)
    assert row["fraction_of_offline_bound"] == 0.95 and row["meets_target"]
    assert not gpu_streams.summarise("host", {"max_streams": 500}, bound)["meets_target"]
    text = gpu_streams.table({"images_per_s": 30_000.0, "batch": 256, "bound_cameras": bound}, [row], 30.0)
    assert "1,000 cameras" in text and "95.0%" in text and "device busy" in text


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA: the benchmark would run rather than refuse")
def test_without_cuda_it_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BENCH / "gpu_streams.py"), "--out", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(SRC),
                                                                             "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "no CUDA device" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.json").exists()
