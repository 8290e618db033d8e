"""`rtpick compare` and `rtpick run` through a subprocess, as a user runs them: exit codes, files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import rtpick
from rtpick.runtimes.registry import availability

EVAL = Path(rtpick.__file__).parent / "assets" / "digits_eval.npz"


def _one_line_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    """The error's text; one line, except a feed check that names each of several mistakes on its own line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    text = result.stderr.strip()
    assert text.startswith("rtpick: error: "), text
    lines = text.splitlines()
    assert len(lines) == 1 or all("input" in line for line in lines), text
    return text


def test_all_within_tolerance_exits_0_and_writes_json(small_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "report" / "compare.json"
    result = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32", "--reference", "ort-cpu:fp32",
                     "--batch", "4", "--seed", "7", "--option", "ort-cpu.threads=1", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reference: ort-cpu:fp32" in result.stdout and "seed 7" in result.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["reference"] == "ort-cpu:fp32"
    assert data["feed_shapes"] == {"x": [4, 8]}
    assert data["rows"][0]["status"] == "reference"
    assert data["command"].startswith("rtpick compare ")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_out_of_tolerance_exits_1(small_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32,ort-cpu:int8", "--batch", "16",
                     "--atol", "0", "--rtol", "0", "--json", str(out),
                     "-o", "ort-cpu.int8_min_speedup=0")  # a tiny MLP's int8 is not faster: keep it to judge it
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ort-cpu:int8"]["status"] == "mismatch"
    assert "beyond atol 0" in rows["ort-cpu:int8"]["reason"]
    assert "mismatch" in result.stdout


def test_a_configuration_that_cannot_build_exits_1_and_the_others_run(small_onnx: Path, tmp_path: Path) -> None:
    state = availability("ort-cuda")
    if state.ok:
        pytest.skip("ort-cuda runs here; this test needs a runtime that cannot build")
    out = tmp_path / "c.json"
    result = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32,ort-cuda:fp32", "--json", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ort-cpu:fp32"]["status"] == "reference"
    assert rows["ort-cuda:fp32"]["status"] == "error" and "not available" in rows["ort-cuda:fp32"]["reason"]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.skipif(not availability("torch-cpu").ok, reason="torch-cpu is not available here (torch missing)")
def test_bundled_model_with_labels_from_the_input_file(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = run_cli("compare", "rtpick:digits", "-r", "ort-cpu:fp32,torch-cpu:fp32", "--input", str(EVAL),
                     "--labels", f"{EVAL}:label", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert "without 'label'" in data["feeds"]
    for row in data["rows"]:
        assert row["accuracy"] >= 0.95
    assert data["rows"][1]["top1_agreement"] == 1.0
    assert "accuracy" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compare", "no/such/model.onnx", "-r", "ort-cpu:fp32"], "model file 'no/such/model.onnx' does not exist"),
        (["compare", "{model}", "-r", "nosuch-runtime:fp32"], "unknown runtime"),
        (["compare", "{model}", "-r", "ort-cpu:fp99"], "unknown precision"),
        (["compare", "{model}", "-r", "ort-cpu:int8"], "no fp32 configuration"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--input", "{wrong_names}"], "'y'"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--option", "threads"], "must look like runtime.key=value"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--option", "torch-cpu.threads=2"], "not among"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--atol", "-1"], "--atol"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--shape", "x:2x9"], "fixed dim"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--input-range", "z:0:1"], "'z'"),
        (["compare", "{model}", "-r", "ort-cpu:fp32", "--labels", "{wrong_names}"], "labels"),
        (["compare", "{not_a_model}", "-r", "ort-cpu:fp32"], "not a readable ONNX model"),
        (["run", "{model}", "-r", "ort-cpu:fp32,ort-cpu:int8"], "one configuration"),
        (["run", "{model}", "-r", "ort-cpu:bf16"], "does not support bf16"),
        (["run", "{model}", "--output", "out.txt"], ".npz"),
    ],
)
def test_usage_errors_exit_2_with_one_line(small_onnx: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, y=np.zeros((1, 8), np.float32))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    values = {"model": str(small_onnx), "wrong_names": str(wrong), "not_a_model": str(junk)}
    line = _one_line_error(run_cli(*[a.format(**values) for a in args]))
    assert expected in line, line


def test_run_writes_outputs_and_never_overwrites_the_input(small_onnx: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(size=(3, 8)).astype(np.float32)
    inp = tmp_path / "x.npz"
    np.savez(inp, x=x)
    before = inp.read_bytes()
    out = tmp_path / "y.npz"
    result = run_cli("run", str(small_onnx), "-r", "ort-cpu:fp32", "--input", str(inp), "--output", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "y" in result.stdout and "3x4" in result.stdout
    with np.load(out) as saved:
        assert saved.files == ["y"] and saved["y"].shape == (3, 4)
        with rtpick.load(small_onnx, batch=3) as session:
            np.testing.assert_array_equal(saved["y"], session.run({"x": x})["y"])
    refused = run_cli("run", str(small_onnx), "--input", str(inp), "--output", str(inp))
    assert "is the input file" in _one_line_error(refused)
    assert inp.read_bytes() == before


def test_run_with_synthetic_feeds_prints_a_summary(small_onnx: Path) -> None:
    result = run_cli("run", str(small_onnx), "--batch", "2", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seed 3" in result.stdout and "2x4" in result.stdout and "float32" in result.stdout


def test_bad_model_path_is_exactly_one_line() -> None:
    result = run_cli("compare", "missing.onnx", "-r", "ort-cpu:fp32")
    assert result.returncode == 2 and result.stdout == ""
    expected = "rtpick: error: model file 'missing.onnx' does not exist; check the path"
    assert result.stderr.strip().splitlines() == [expected]
