"""The model's identity: a deploy file's sha256 pin is checked before loading; external weights are hashed too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

from rtpick.deploy import DeployConfig
from rtpick.errors import RtpickError


def _external_mlp(folder, seed: int = 1):  # type: ignore[no-untyped-def]
    """x[batch, 8] -> y[batch, 4], weights in weights.bin beside the .onnx file."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "mlp.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size == (8 * 16 + 16 * 4) * 4
    return path


def _new_weights(path) -> None:  # type: ignore[no-untyped-def]
    """Other weights in the external file, the .onnx file itself untouched."""
    data = path.parent / "weights.bin"
    values = np.frombuffer(data.read_bytes(), np.float32)
    data.write_bytes((values[::-1] * 2).astype(np.float32).tobytes())


# ---------------------------------------------------------------------------------------------- item 12


def test_external_weights_are_part_of_the_model_hash(tmp_path) -> None:
    from rtpick.sources import load_model

    path = _external_mlp(tmp_path)
    before = load_model(str(path)).spec.sha256
    onnx_bytes = path.read_bytes()
    _new_weights(path)
    assert path.read_bytes() == onnx_bytes
    assert load_model(str(path)).spec.sha256 != before


def test_a_cached_int8_model_is_not_reused_after_the_weights_change(tmp_path, monkeypatch) -> None:
    import rtpick

    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))
    path = _external_mlp(tmp_path)
    feeds = {"x": np.random.default_rng(0).uniform(0, 1, (16, 8)).astype(np.float32)}
    with rtpick.load(str(path), "ort-cpu", "int8", shapes={"x": (16, 8)}, int8_min_speedup=0) as session:
        session.run(feeds)
    _new_weights(path)
    with rtpick.load(str(path), "ort-cpu", "fp32", shapes={"x": (16, 8)}) as session:
        fresh = session.run(feeds)["y"]
    with rtpick.load(str(path), "ort-cpu", "int8", shapes={"x": (16, 8)}, int8_min_speedup=0) as session:
        quantised = session.run(feeds)["y"]
    # int8 of the new weights is close to fp32 of the new weights (the old weights are reversed and doubled)
    error = np.abs(quantised - fresh).max() / np.abs(fresh).max()
    assert error < 0.1, error
    assert len(list((tmp_path / "cache" / "onnx").glob("*int8*.onnx"))) == 2


def test_missing_external_weights_are_one_line(tmp_path) -> None:
    path = _external_mlp(tmp_path)
    (tmp_path / "weights.bin").unlink()
    done = run_cli("inspect", str(path))
    assert done.returncode == 2, done.stderr
    assert "weights.bin" in done.stderr and "missing" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- item 2


def _deploy_for(path, tmp_path):  # type: ignore[no-untyped-def]
    from rtpick.sources import load_model

    loaded = load_model(str(path))
    deploy = DeployConfig(model_source=str(path), model_sha256=loaded.spec.sha256, model_name=loaded.spec.name,
                          runtime="ort-cpu", precision="fp32", batch=2, shapes={"x": [2, 8]})
    target = tmp_path / "deploy.json"
    deploy.write(target)
    return target


def test_the_pin_is_checked_before_the_model_is_loaded(tmp_path, monkeypatch) -> None:
    import rtpick
    from rtpick import sources

    path = _external_mlp(tmp_path)
    deploy = _deploy_for(path, tmp_path)
    with rtpick.load(str(deploy)) as session:  # the pinned model itself loads
        assert session.run({"x": np.ones((2, 8), np.float32)})["y"].shape == (2, 4)
    _new_weights(path)  # someone swaps the weights

    loads: list[object] = []
    real_load = sources.load_model
    monkeypatch.setattr(sources, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with pytest.raises(RtpickError, match="deploy file was made for .* it was not loaded"):
        rtpick.load(str(deploy))
    with pytest.raises(RtpickError, match="it was not loaded"):
        DeployConfig.read(deploy).check_model(str(path))
    assert loads == []


def test_the_cli_refuses_a_swapped_model_in_one_line(tmp_path) -> None:
    path = _external_mlp(tmp_path)
    deploy = _deploy_for(path, tmp_path)
    _new_weights(path)
    done = run_cli("run", "--config", str(deploy))
    assert done.returncode == 2, done.stderr
    assert "it was not loaded" in done.stderr and len(done.stderr.strip().splitlines()) == 1
