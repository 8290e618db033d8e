"""One `--option` syntax for every command: runtime.key=value, or key=value for every runtime that has it."""

from __future__ import annotations

import pytest
from conftest import run_cli

from rtpick.errors import RtpickError
from rtpick.runtimes.registry import check_options, options_for


def test_options_reach_the_runtimes_they_name() -> None:
    given = {"ort-cpu.threads": "1", "graph_optimization": "basic", "torch-cpu.channels_last": "true"}
    assert options_for("ort-cpu", given) == {"threads": "1", "graph_optimization": "basic"}
    assert options_for("torch-cpu", given) == {"channels_last": "true"}  # torch-cpu has no graph_optimization
    check_options(["ort-cpu", "torch-cpu"], given)


@pytest.mark.parametrize(("given", "message"), [
    ({"warp": "9"}, "none of ort-cpu has such an option"),
    ({"ort-cpu.warp": "9"}, "ort-cpu has no option 'warp'"),
    ({"torch-cuda.mode": "x"}, "not among the runtimes asked for"),
])
def test_an_option_that_reaches_no_runtime_is_an_error(given: dict, message: str) -> None:
    with pytest.raises(RtpickError, match=message):
        check_options(["ort-cpu"], given)


def test_bench_takes_runtime_qualified_options(small_onnx) -> None:  # type: ignore[no-untyped-def]
    ok = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.threads=1", "--quick",
                 "--duration", "0.2", "--no-isolate", "--no-accuracy")
    assert ok.returncode == 0, ok.stderr[-1500:]
    bad = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.warp=1", "--quick")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no option 'warp'" in bad.stderr
