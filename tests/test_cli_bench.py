"""`rtpick bench`, `report` and `diff` as a user runs them: in a subprocess."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli


def test_bench_report_diff(small_onnx, tmp_path) -> None:
    out = tmp_path / "out.json"
    done = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--quick", "--duration", "0.3",
                   "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "host clock" in done.stdout and "ms" in done.stdout
    data = json.loads(out.read_text())
    assert data["configurations"][0]["status"] == "ok" and data["command"].startswith("rtpick bench")
    assert data["configurations"][0]["isolated"] is True
    rep = run_cli("report", str(out))
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "out.html").exists() and (tmp_path / "out.md").exists()
    same = run_cli("diff", str(out), str(out))
    assert same.returncode == 0 and "0 of 2 figures changed" in same.stdout


def test_server_and_multistream_run(small_onnx, tmp_path) -> None:
    done = run_cli("bench", str(small_onnx), "--scenario", "server", "--rate", "200", "--duration", "0.5",
                   "--batch", "4", "--no-isolate", "--json", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    server = json.loads((tmp_path / "s.json").read_text())["configurations"][0]["metrics"]
    assert server["scenario"] == "server" and server["completed"] == server["queries"] > 0
    assert server["batch_warmup_s"] > 0 and "every batch size 1-4 run before measuring" in server["method"]
    # the H100 report's command shape: a runtime-qualified option with the camera scenario
    done = run_cli("bench", str(small_onnx), "-r", "ort-cpu:fp32", "--option", "ort-cpu.threads=1",
                   "--scenario", "multistream", "--streams", "3", "--fps", "30",
                   "--duration", "0.5", "--no-isolate", "--json", str(tmp_path / "m.json"))
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "m.json").read_text())["configurations"][0]
    multi = record["metrics"]
    assert record["status"] == "ok" and record["options"] == {"threads": 1}, record.get("options")
    assert multi["total"]["frames"] == 3 * 15 and len(multi["per_camera"]) == 3
    assert multi["batch_warmup_s"] > 0


@pytest.mark.parametrize("args, words", [
    (["--scenario", "server", "--rate", "0"], "--rate"),
    (["--scenario", "server"], "--rate"),
    (["--scenario", "multistream", "--streams", "2", "--fps", "0"], "--fps"),
    (["--scenario", "multistream", "--streams", "2", "--fps", "10", "--deadline-ms", "-5"], "--deadline-ms"),
    (["--scenario", "nonsense"], "unknown scenario"),
])
def test_bad_scenario_parameters_exit_2(small_onnx, tmp_path, args, words) -> None:
    out = tmp_path / "good.json"
    out.write_text("keep me")
    done = run_cli("bench", str(small_onnx), *args, "--json", str(out))
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert out.read_text() == "keep me"


def test_batch_larger_than_a_fixed_model_allows(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    done = run_cli("bench", str(path), "--batch", "8", "--quick")
    assert done.returncode == 2 and "fixed at 1" in done.stderr


def test_unwritable_output_and_other_schema(small_onnx, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = run_cli("bench", str(small_onnx), "--quick", "--json", str(blocker / "out.json"))
    assert done.returncode == 2 and "cannot write" in done.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "rtpick.bench", "schema_version": 999}))
    for command in (["report", str(other)], ["diff", str(other), str(other)]):
        done = run_cli(*command)
        assert done.returncode == 2 and "schema version 999" in done.stderr, done.stderr
