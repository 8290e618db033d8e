"""Progress of multi-configuration runs: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from bench_fakes import Recorder
from conftest import run_cli
from rich.console import Console

from rtpick.perf.progress import BarProgress, Silent, for_console
from rtpick.perf.record import Record
from rtpick.perf.run import BenchRequest, run_bench


def test_a_sweep_reports_its_plan_each_job_and_what_it_skipped(small_onnx, tmp_path) -> None:
    recorder = Recorder()
    # a missing calibration file fails the build of the first batch, so the sweep stops there (an unknown
    # option would be refused before anything runs)
    request = BenchRequest.create(scenario="offline", batches=[1, 2, 4], quick=True, duration_s=0.05, isolate=False,
                           options={"calibration": "no/such/calibration.npz"})
    results = run_bench(str(small_onnx), [("ort-cpu", "int8")], request, progress=recorder)
    assert results.configurations[0].status == "failed"
    assert recorder.events == [("plan", 3), ("start", "ort-cpu:int8 batch 1"), ("done", 1), ("skip", 2)]


def test_the_bar_draws_on_a_terminal_only() -> None:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=100)
    with for_console(terminal) as progress:
        assert isinstance(progress, BarProgress)
        progress.plan(4)
        progress.start("ort-cpu:fp32 batch 8")
        progress.done(Record(runtime="ort-cpu", precision="fp32", batch=8, scenario="offline", status="failed"))
        progress.skip(2, "throughput stopped growing")
    text = buffer.getvalue()
    assert "1/2" in text and "sweep stopped" in text
    with for_console(Console(file=io.StringIO(), force_terminal=False)) as plain:
        assert isinstance(plain, Silent)


def test_cli_off_a_terminal_prints_plain_lines(small_onnx) -> None:
    done = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--scenario", "offline", "--batch", "1,2",
                   "--quick", "--duration", "0.1", "--no-isolate")
    assert done.returncode == 0, done.stderr
    assert "measuring ort-cpu:fp32 batch 1 (offline)..." in done.stdout
    assert "━" not in done.stdout.split("rtpick bench:")[0]  # no bar drawn into a pipe
