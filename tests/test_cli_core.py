"""`rtpick runtimes` and `rtpick inspect` through a subprocess, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def test_runtimes_lists_all_with_reasons() -> None:
    result = run_cli("runtimes", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert len(rows) == 8
    assert rows["ort-cpu"]["available"] is True
    for row in rows.values():
        assert row["available"] or row["reason"]
    assert rows["tensorrt"]["verified"] is False and rows["ort-tensorrt"]["verified"] is False
    table = run_cli("runtimes")
    assert table.returncode == 0 and "ort-cpu" in table.stdout and "tensorrt" in table.stdout


def test_inspect_shows_spec_params_ops_and_flops(small_onnx: Path) -> None:
    result = run_cli("inspect", str(small_onnx))
    assert result.returncode == 0, result.stderr
    assert "x: float32[batch, 8]" in result.stdout
    assert "parameters: 192" in result.stdout  # 8x16 + 16x4
    assert "MatMul 2" in result.stdout
    data = json.loads(run_cli("inspect", str(small_onnx), "--json", "--shape", "x:4x8").stdout)
    assert data["flops"] == 2 * 4 * 8 * 16 + 2 * 4 * 16 * 4
    assert data["opsets"] == {"ai.onnx": 17}


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    for args in (("inspect", str(tmp_path / "missing.onnx")), ("inspect", str(bad))):
        result = run_cli(*args)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("rtpick: error:"), result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "inspect", str(tmp_path / "missing.onnx"))
    assert result.returncode != 0 and "Traceback" in result.stderr
