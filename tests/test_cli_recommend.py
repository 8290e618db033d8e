"""`rtpick recommend` through a subprocess: a real quick run on the bundled model, --save, --from, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
CONFIGS = "ort-cpu:fp32,ort-cpu:int8"


def rtpick(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "rtpick", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """One real quick recommendation (ort-cpu fp32 and int8, a generous budget), saved and written."""
    folder = tmp_path_factory.mktemp("recommend")
    deploy, out = folder / "deploy.json", folder / "out.json"
    done = rtpick("recommend", "rtpick:digits", "--p99-ms", "1000", "-r", CONFIGS, "--quick",
                  "--save", str(deploy), "--json", str(out))
    return deploy, out, done


def test_real_quick_recommendation_and_deploy_file(measured):
    deploy, out, done = measured
    assert done.returncode == 0, done.stderr + done.stdout
    assert "recommended:" in done.stdout
    saved = json.loads(deploy.read_text())
    chosen = saved["runtime"] + ":" + saved["precision"]
    assert chosen in CONFIGS.split(",") and f"recommended: {chosen}" in done.stdout
    assert saved["measured"]["p99_ms"] > 0 and saved["model"]["source"] == "rtpick:digits"
    records = json.loads(out.read_text())["configurations"]
    assert {r["config"] for r in records} == set(CONFIGS.split(","))  # every candidate, measured or dropped

    def refused_as_slower(r):  # the never-slower rule is a timing: on a busy machine int8 may lose, said so
        return r["config"] == "ort-cpu:int8" and "not faster than fp32" in (r["correctness"].get("reason") or "")

    assert all(r["correctness"]["passed"] or refused_as_slower(r) for r in records)
    assert all(r["status"] == "ok" or (r["status"] == "not measured" and "probe round" in r["error"])
               or refused_as_slower(r) for r in records)
    assert any(r["config"] == "ort-cpu:fp32" and r["correctness"]["passed"] for r in records)
    assert any(r["options"] == {"threads": 1} for r in records)  # ort-cpu's declared variant was searched
    # rtpick.load("deploy.json") builds exactly what the file says
    check = (
        "import json, sys, numpy as np, rtpick\n"
        "d = json.load(open(sys.argv[1]))\n"
        "s = rtpick.load(sys.argv[1])\n"
        "assert (s.runtime, s.precision) == (d['runtime'], d['precision']), (s.runtime, s.precision)\n"
        "assert s.options == d['options'], (s.options, d['options'])\n"
        "shape = d['shapes']['image']\n"
        "print(s.run({'image': np.zeros(shape, np.float32)})['logits'].shape)\n"
    )
    ran = subprocess.run([sys.executable, "-c", check, str(deploy)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"({saved['batch']}, 10)"
    # the other commands take it as it is, and refuse a flag that would change it
    assert rtpick("run", "--config", str(deploy)).returncode == 0
    clash = rtpick("bench", "--config", str(deploy), "-r", "torch-cpu:fp32")
    assert clash.returncode == 2 and "fixes the configuration" in clash.stderr


def test_impossible_budget_exits_1_with_the_closest(measured):
    _, out, _ = measured
    done = rtpick("recommend", "rtpick:digits", "--p99-ms", "0.0001", "--from", str(out))
    assert done.returncode == 1, done.stderr + done.stdout
    assert "no configuration meets" in done.stdout and "closest:" in done.stdout
    assert "over by" in done.stdout and "read from" in done.stdout  # reused, not re-measured


@pytest.mark.parametrize("args, message", [
    (["--p99-ms", "10", "--cpu-only", "-r", "torch-cuda:fp16"], "--cpu-only contradicts torch-cuda:fp16"),
    (["--streams", "16"], "--streams and --fps go together"),
    (["--streams", "4", "--fps", "30", "--min-throughput", "100"], "different questions"),
    ([], "give a budget"),
    (["--p99-ms", "10", "--repeats", "0"], "--repeats must be at least 1"),
    (["--streams", "4", "--fps", "30", "--repeats", "3"], "not to --streams"),
])
def test_contradictory_constraints_exit_2(args, message):
    done = rtpick("recommend", "rtpick:digits", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_results_for_another_model_exit_2(measured, tmp_path):
    _, out, _ = measured
    data = json.loads(out.read_text())
    data["model"]["sha256"] = "f" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    done = rtpick("recommend", "rtpick:digits", "--p99-ms", "10", "--from", str(other))
    assert done.returncode == 2 and "measured on another model" in done.stderr
    assert "Traceback" not in done.stderr


def test_repeats_measure_in_separate_processes(tmp_path):
    """--repeats reaches bench: the record's interval is over processes, and each process's summary is kept."""
    out = tmp_path / "out.json"
    done = rtpick("recommend", "rtpick:digits", "--p99-ms", "1000", "-r", "ort-cpu:fp32", "--quick",
                  "--repeats", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    record = next(r for r in json.loads(out.read_text())["configurations"] if r.get("metrics"))
    assert len(record["replicates"]) == 2
    assert "independent replications" in record["metrics"]["latency_ms"]["ci"]["method"]


def test_input_range_reaches_the_check_and_the_measurements_and_is_saved(tmp_path: Path) -> None:
    """y = x only at sr 16000 (a Reshape that cannot be done otherwise, as Silero VAD's If branches): rtpick's
    synthetic integers fail the check, --input-range sr:16000:16001 makes it pass, measured, and recorded in the
    deploy file (serve and Triton warm up with it)."""
    from conftest import rate_model

    path = Path(rate_model(tmp_path / "rated.onnx"))
    without = rtpick("recommend", str(path), "-r", "ort-cpu:fp32", "--p99-ms", "1000", "--quick")
    assert without.returncode == 1, without.stderr
    deploy = tmp_path / "deploy.json"
    done = rtpick("recommend", str(path), "-r", "ort-cpu:fp32", "--p99-ms", "1000", "--quick",
                  "--input-range", "sr:16000:16001", "--save", str(deploy))
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())  # the console wraps long notes
    assert "recommended: ort-cpu:fp32" in text and "ranges sr [16000, 16001)" in text
    assert json.loads(deploy.read_text())["input_ranges"] == {"sr": [16000.0, 16001.0]}
