"""One `--option` syntax for every command: runtime.key=value, or key=value for every runtime that has it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from rtpick.errors import RtpickError
from rtpick.options import (
    check_options,
    flatten,
    option_args,
    options_for,
    parse_option_args,
    resolve_options,
)


def test_parse_keeps_the_syntax_and_refuses_the_rest() -> None:
    assert parse_option_args(["ort-cpu.threads=2", "channels_last=true", "calibration=a=b.npz"]) == {
        "ort-cpu.threads": "2", "channels_last": "true", "calibration": "a=b.npz"}  # the first = splits
    for bad, words in [("threads", "must look like"), ("=2", "must look like"), ("ort-cpu.=2", "must look like"),
                       (".threads=2", "must look like"), ("ort_cpu.threads=2", "not a runtime"),
                       ("ort-cpu.a.b=1", "must look like")]:
        with pytest.raises(RtpickError, match=words):
            parse_option_args([bad])
    with pytest.raises(RtpickError, match="given twice"):
        parse_option_args(["threads=1", "threads=2"])


def test_options_reach_the_runtimes_they_name() -> None:
    given = {"ort-cpu.threads": "1", "graph_optimization": "basic", "torch-cpu.channels_last": "true"}
    assert options_for("ort-cpu", given) == {"threads": 1, "graph_optimization": "basic"}  # coerced to int
    assert options_for("torch-cpu", given) == {"channels_last": True}  # torch-cpu has no graph_optimization
    assert resolve_options(given, ["ort-cpu:fp32", "torch-cpu:fp32", "torch-compile-cpu:fp32"]) == {
        "ort-cpu": {"threads": 1, "graph_optimization": "basic"}, "torch-cpu": {"channels_last": True}}


def test_a_runtime_named_option_wins_over_a_bare_one_in_any_order() -> None:
    for given in ({"threads": "4", "ort-cpu.threads": "1"}, {"ort-cpu.threads": "1", "threads": "4"}):
        assert options_for("ort-cpu", given) == {"threads": 1}
        assert options_for("ort-cuda", given) == {"threads": 4}


def test_nested_api_options_are_the_same_as_flat_ones() -> None:
    nested = {"ort-cpu": {"threads": 2}, "channels_last": True}
    assert flatten(nested) == {"ort-cpu.threads": 2, "channels_last": True}
    assert options_for("ort-cpu", nested) == {"threads": 2}
    assert option_args(nested) == ["--option", "ort-cpu.threads=2", "--option", "channels_last=True"]
    assert parse_option_args(option_args(nested)[1::2]) == {"ort-cpu.threads": "2", "channels_last": "True"}


@pytest.mark.parametrize(("given", "message"), [
    ({"warp": "9"}, "no selected runtime has an option 'warp' \\(their options: ort-cpu: calibration, "),
    ({"ort-cpu.warp": "9"}, "ort-cpu has no option 'warp'; its options: calibration, calibration_samples"),
    ({"torch-cuda.mode": "x"}, "torch-cuda is not among the selected runtimes \\(ort-cpu\\)"),
    ({"ort-cpu.threads": "two"}, "threads=two for ort-cpu: .*must be a int"),
    ({"graph_optimization": "most"}, "must be one of disable, basic, extended, all"),
])
def test_an_option_that_reaches_no_runtime_is_an_error(given: dict, message: str) -> None:
    with pytest.raises(RtpickError, match=message):
        check_options(["ort-cpu:fp32"], given)


def _one_line_usage_error(done) -> str:  # type: ignore[no-untyped-def]
    assert done.returncode == 2, (done.returncode, done.stdout[-800:], done.stderr[-800:])
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_bench_takes_both_forms(small_onnx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "b.json"
    ok = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.threads=1",
                 "--option", "graph_optimization=basic", "--quick", "--duration", "0.2", "--no-isolate",
                 "--no-accuracy", "--json", str(out))
    assert ok.returncode == 0, ok.stderr[-1500:]
    data = json.loads(out.read_text())
    record = data["configurations"][0]
    assert record["status"] == "ok"
    assert "--option ort-cpu.threads=1" in data["command"]
    assert "no option 'warp'" in _one_line_usage_error(run_cli(
        "bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.warp=1", "--quick"))
    assert "must look like runtime.key=value" in _one_line_usage_error(run_cli(
        "bench", str(small_onnx), "--option", "threads", "--quick"))
    assert "no selected runtime has an option 'mode'" in _one_line_usage_error(run_cli(
        "bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "mode=reduce-overhead", "--quick"))


def test_compare_and_run_take_both_forms(small_onnx) -> None:  # type: ignore[no-untyped-def]
    ok = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "threads=1",
                 "--option", "ort-cpu.graph_optimization=basic")
    assert ok.returncode == 0, ok.stdout[-1500:] + ok.stderr[-1500:]
    assert "torch-cpu is not among the selected runtimes" in _one_line_usage_error(run_cli(
        "compare", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "torch-cpu.channels_last=true"))
    assert "must look like" in _one_line_usage_error(run_cli(
        "compare", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.threads"))
    ran = run_cli("run", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.threads=1",
                  "--option", "graph_optimization=basic")
    assert ran.returncode == 0, ran.stderr[-1500:]
    assert "no selected runtime has an option 'warp'" in _one_line_usage_error(run_cli(
        "run", str(small_onnx), "--option", "warp=1"))


def test_recommend_checks_its_options_before_measuring(small_onnx) -> None:  # type: ignore[no-untyped-def]
    assert "ort-cpu has no option 'warp'" in _one_line_usage_error(run_cli(
        "recommend", str(small_onnx), "-r", "ort-cpu:fp32", "--p99-ms", "50", "--option", "ort-cpu.warp=1"))
    assert "is not a runtime" in _one_line_usage_error(run_cli(
        "recommend", str(small_onnx), "--p99-ms", "50", "--option", "ortcpu.threads=1"))
