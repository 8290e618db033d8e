from __future__ import annotations

import json

import pytest

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.results import SCHEMA_VERSION, Results, environment


def _results() -> Results:
    return Results(command="rtpick bench m.onnx", scenario={"scenario": "single-stream"},
                   model={"sha256": "ab", "spec": {"name": "m"}}, environment=environment(),
                   configurations=[Record(runtime="ort-cpu", precision="fp32", batch=1, scenario="single-stream",
                                          status="failed", error="hand-made")])


def test_round_trip_and_environment(tmp_path) -> None:
    path = tmp_path / "out.json"
    _results().write(path)
    back = Results.read(path)
    assert back.configurations[0].config == "ort-cpu:fp32" and back.configurations == _results().configurations
    env = back.environment
    assert env["cpu_cores_logical"] >= 1 and env["versions"]["numpy"]
    gpu = env["gpu"]
    if gpu["gpus"]:  # a GPU machine: each GPU is described with its memory
        assert all(entry["name"] and entry["memory_mb"] > 0 for entry in gpu["gpus"]) and gpu["driver"], gpu
    else:  # no NVML or no GPU: said so, not left blank
        assert gpu["reason"].startswith("not measured"), gpu
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_other_schema_version_is_refused(tmp_path) -> None:
    path = tmp_path / "old.json"
    data = _results().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(RtpickError, match="schema version"):
        Results.read(path)
    path.write_text("{}")
    with pytest.raises(RtpickError, match="not an rtpick"):
        Results.read(path)


def test_a_failed_write_leaves_the_good_file(tmp_path) -> None:
    path = tmp_path / "out.json"
    _results().write(path)
    before = path.read_text()
    bad = _results()
    bad.configurations.append(Record(runtime="ort-cpu", precision="fp32", batch=1, scenario="single-stream",
                                     status="failed", build_time_s=float("nan")))  # NaN is not JSON
    with pytest.raises(ValueError):
        bad.write(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


