"""The "reproduce this" command stored in results gives the same configuration when run again (seed included);
--shape's batch is the measured one; a failed configuration makes bench exit 1; an old results file survives
until the new run is complete, and a failed write does not stop the measuring."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import Recorder
from conftest import run_cli

import rtpick
from rtpick.errors import RtpickError
from rtpick.perf.request import BenchRequest
from rtpick.perf.run import partial_path, run_bench
from rtpick.results import Results

SRC = Path(__file__).resolve().parents[1] / "src"


def _rerun(command: str, json_out: Path) -> Results:
    """Run a stored `rtpick bench ...` command as a user would paste it, writing to `json_out` instead."""
    words = shlex.split(command)
    assert words[:2] == ["rtpick", "bench"]
    if "--json" in words:
        index = words.index("--json")
        del words[index:index + 2]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "rtpick", *words[1:], "--json", str(json_out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    return Results.read(json_out)


def _configuration(results: Results) -> tuple[Any, ...]:
    scenario = dict(results.scenario)
    return scenario, [(r.config, r.batch, r.options, r.scenario) for r in results.configurations]


def test_the_api_command_reproduces_the_configuration_seed_included(small_onnx: Path, tmp_path: Path) -> None:
    first = rtpick.bench(str(small_onnx), "ort-cpu:fp32", seed=7, quick=True, duration_s=0.1, isolate=False,
                         batch=[1, 2], json=str(tmp_path / "api.json"))
    assert "--seed 7" in first.command and first.scenario["seed"] == 7
    again = _rerun(first.command, tmp_path / "again.json")
    assert _configuration(again) == _configuration(first)


@pytest.mark.parametrize("args", [
    ["--scenario", "offline", "--batch", "1,2", "--blocks", "3", "--block-pause", "0.01", "--samples"],
    ["--scenario", "server", "--rate", "40", "--batch", "2", "--max-queue-delay-ms", "1", "--seed", "3"],
    ["--scenario", "multistream", "--streams", "2", "--fps", "20", "--deadline-ms", "80", "--batch", "2"],
    ["--scenario", "server", "--find-max", "--p99-ms", "50", "--batch", "2"],
    ["--input-range", "x:-2:3", "--option", "ort-cpu.threads=1", "--timeout", "200", "--no-accuracy"],
], ids=["offline", "server", "multistream", "server-search", "inputs-options"])
def test_every_cli_command_reproduces_its_configuration(small_onnx: Path, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "first.json"
    done = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--quick", "--duration", "0.2", "--no-isolate",
                   *args, "--json", str(out))
    assert done.returncode == 0, done.stderr
    first = Results.read(out)
    again = _rerun(first.command, tmp_path / "again.json")
    assert _configuration(again) == _configuration(first)


def test_shape_batch_is_the_measured_batch(small_onnx: Path) -> None:
    results = rtpick.bench(str(small_onnx), "ort-cpu:fp32", shapes={"x": (4, 8)}, quick=True, duration_s=0.1,
                           isolate=False)
    (record,) = results.configurations
    assert record.ok and record.batch == 4
    assert record.measurement is not None and record.measurement.data["batch"] == 4
    with pytest.raises(RtpickError, match="contradicts --shape"):
        rtpick.bench(str(small_onnx), "ort-cpu:fp32", shapes={"x": (4, 8)}, batch=2, quick=True, isolate=False)


def test_bench_exits_1_when_any_configuration_failed(small_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.json"
    done = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32,ort-cpu:int8", "-o",
                   "ort-cpu.calibration=no/such.npz", "--quick", "--duration", "0.1", "--json", str(out))
    assert done.returncode == 1, done.stderr
    statuses = [c["status"] for c in json.loads(out.read_text())["configurations"]]
    assert statuses == ["ok", "failed"]


def test_an_old_results_file_is_kept_until_the_run_is_complete(small_onnx: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "results.json"
    out.write_text("the user's earlier results\n")
    seen: list[tuple[str, bool]] = []

    class Watch(Recorder):
        def done(self, record: Any) -> None:
            seen.append((out.read_text(), partial_path(out).exists()))

    request = BenchRequest.create("offline", batches=[1, 2], quick=True, duration_s=0.1, isolate=False)
    run_bench(str(small_onnx), [("ort-cpu", "fp32")], request, json_path=out, progress=Watch())
    assert seen[0] == ("the user's earlier results\n", False)  # figures shown before anything is written
    assert seen[1] == ("the user's earlier results\n", True)  # the partial file sits beside it
    assert Results.read(out).configurations and not partial_path(out).exists()

    real_write = Results.write

    def flaky(self: Results, path: Any) -> None:
        if str(path).endswith(".partial"):
            raise RtpickError("cannot write the results file: No space left on device")
        real_write(self, path)

    monkeypatch.setattr(Results, "write", flaky)
    results = run_bench(str(small_onnx), [("ort-cpu", "fp32")], request, json_path=out)
    assert [r.status for r in results.configurations] == ["ok", "ok"]  # measuring went on
    assert results.write_errors and "No space left" in results.write_errors[0]
    assert len(Results.read(out).configurations) == 2


@pytest.mark.parametrize("earlier", [False, True], ids=["no-earlier-file", "earlier-file"])
def test_an_interrupted_run_keeps_what_it_finished(small_onnx: Path, tmp_path: Path, earlier: bool) -> None:
    out = tmp_path / "results.json"
    if earlier:
        out.write_text("the user's earlier results\n")
    seen: list[Any] = []

    def stop_at_the_second(record: Any) -> None:
        seen.append(record)
        if len(seen) == 2:
            raise KeyboardInterrupt

    request = BenchRequest.create("offline", batches=[1, 2], quick=True, duration_s=0.1, isolate=False)
    with pytest.raises(KeyboardInterrupt):
        run_bench(str(small_onnx), [("ort-cpu", "fp32")], request, json_path=out, on_record=stop_at_the_second)
    finished = partial_path(out) if earlier else out
    assert [r.batch for r in Results.read(finished).configurations] == [1]
    if earlier:
        assert out.read_text() == "the user's earlier results\n"


def test_an_input_with_a_fixed_leading_dim_is_not_batched_where_another_has_an_open_one() -> None:
    """Silero VAD: input [n, samples], state [2, n, 128], sr a scalar. The 2 is the LSTM's two states; --shape
    state:2x1x128 must neither fix the batch at 2 nor clash with input's batch 1."""
    from types import SimpleNamespace

    from rtpick.model import ModelSpec, TensorSpec
    from rtpick.perf.request import BenchRequest
    from rtpick.perf.run import fixed_batch, plan_batches

    spec = ModelSpec("vad", (TensorSpec("input", "float32", ("n", "samples")), TensorSpec("state", "float32",
                     (2, "n", 128)), TensorSpec("sr", "int64", ())), (), "onnx", "0")
    model = SimpleNamespace(spec=spec)
    assert fixed_batch(model) is None
    request = BenchRequest(shapes={"input": (1, 512), "state": (2, 1, 128)})
    assert plan_batches(request, model) == [1]
    both_fixed = (TensorSpec("x", "float32", (4, 3)), TensorSpec("h", "float32", (2, 4)))
    fixed = SimpleNamespace(spec=ModelSpec("f", both_fixed, (), "onnx", "0"))
    assert fixed_batch(fixed) == 4  # every leading dim fixed: the first input's is the batch
