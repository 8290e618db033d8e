"""`rtpick runtimes` and `rtpick inspect` through a subprocess, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SRC, run_cli

from rtpick.runtimes.registry import RUNTIMES, get_runtime


def test_runtimes_lists_all_with_reasons() -> None:
    result = run_cli("runtimes", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == list(RUNTIMES)
    assert rows["ort-cpu"]["available"] is True
    for name, row in rows.items():
        assert row["available"] or row["reason"]
        assert row["verified"] is get_runtime(name).verified


def test_runtime_names_and_options_are_never_cut_at_80_columns_to_a_pipe() -> None:
    """Other columns fold; the name column never does, and -v lists every option whole on its own line."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "rtpick", "runtimes", "-v"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    first_cells = [line.split("│")[1].strip() for line in lines if line.startswith("│") and line.count("│") > 2]
    for name in RUNTIMES:
        assert name in first_cells, f"{name} is not whole in its table cell:\n{result.stdout}"
        assert f"{name} options" in lines
    text = " ".join(lines)
    for name in RUNTIMES:
        for key, option in get_runtime(name).options.items():
            assert f"{key}={option.default!r}" in text, (name, key)
    assert "…" not in result.stdout


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


def test_both_module_entry_points_run_the_cli() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for module in ("rtpick", "rtpick.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                                timeout=120)
        assert result.returncode == 0, (module, result.stderr)
        assert "runtimes" in result.stdout and "compare" in result.stdout and "bench" in result.stdout
