"""The native tensorrt runtime.

Everywhere: availability gives the exact reason it cannot run, and the pure parts (precision flags, profiles,
engine-cache key, parser messages, QDQ checks) behave. Where TensorRT 10 imports and an NVIDIA GPU is present:
real engines of the bundled digits model, checked against ort-cpu. No fake `tensorrt` module is ever installed:
the availability tests below replace rtpick's import helper only to exercise its diagnosis of broken installs.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

import rtpick
import rtpick.api
from rtpick.errors import BuildError, MissingRuntime, RtpickError
from rtpick.runtimes import tensorrt as trt_runtime
from rtpick.runtimes.registry import availability, get_runtime
from rtpick.runtimes.tensorrt_plan import (
    describe_parser_errors,
    engine_cache_key,
    precision_flags,
    profile_for,
    qdq_zero_point_problem,
    version_major,
)

STATE = availability("tensorrt")
needs_tensorrt = pytest.mark.skipif(not STATE.ok, reason=f"tensorrt is not available here: {STATE.reason}")


# ------------------------------------------------------------------------------------------ availability


def test_runtime_facts() -> None:
    runtime = get_runtime("tensorrt")
    assert (runtime.name, runtime.device, runtime.engine, runtime.needs_source) == (
        "tensorrt", "cuda", "tensorrt", "onnx")
    assert runtime.precisions == ("fp32", "tf32", "fp16", "bf16", "int8")
    assert runtime.verified is False
    for option in ("workspace_mb", "cuda_graph", "min_batch", "max_batch", "calibration",
                   "builder_optimization_level", "timing_cache"):
        assert option in runtime.options


def test_listed_with_a_precise_reason_when_unavailable() -> None:
    rows = {row["name"]: row for row in rtpick.api.runtimes()}
    row = rows["tensorrt"]
    assert row["available"] is STATE.ok
    if STATE.ok:
        pytest.skip("tensorrt is available on this machine")
    assert row["reason"] == STATE.reason
    assert len(STATE.reason) > 30 and "\n" not in STATE.reason
    # The reason names what is missing and how to get it.
    assert any(word in STATE.reason for word in ("tensorrt", "TensorRT", "GPU", "torch"))
    assert "pip install" in STATE.reason or "GPU" in STATE.reason or "torch" in STATE.reason


def test_not_installed_reason_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = trt_runtime.importlib.util.find_spec
    monkeypatch.setattr(trt_runtime.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorrt" else real_find_spec(name, *a))
    state, _ = trt_runtime.library_availability()
    assert not state.ok
    assert "not installed" in state.reason and "pip install" in state.reason
    assert "NVIDIA's own package index" in state.reason


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, loader: object) -> None:
    """Make rtpick believe a tensorrt distribution is present and let `loader` stand for its import."""
    real_find_spec = trt_runtime.importlib.util.find_spec
    monkeypatch.setattr(trt_runtime.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorrt" else real_find_spec(name, *a))
    monkeypatch.setattr(trt_runtime, "_trt", loader)


def test_library_that_does_not_load_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("libnvinfer.so.10: cannot open shared object file: No such file or directory")

    _pretend_installed(monkeypatch, broken)
    state, _ = trt_runtime.library_availability()
    assert not state.ok
    assert "does not load" in state.reason and "libnvinfer.so.10" in state.reason and "reinstall" in state.reason


def test_stub_package_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_installed(monkeypatch, lambda: types.SimpleNamespace(__version__="10.9.0"))  # no Builder: a stub
    state, _ = trt_runtime.library_availability()
    assert not state.ok and "stub" in state.reason and "NVIDIA's own package index" in state.reason


def test_other_major_versions_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_installed(monkeypatch, lambda: types.SimpleNamespace(__version__="11.3.0", Builder=object))
    state, version = trt_runtime.library_availability()
    assert not state.ok and version == "11.3.0"
    assert "TensorRT 11.3.0" in state.reason and "TensorRT 10" in state.reason


def test_version_major() -> None:
    assert version_major("10.9.0.34") == 10
    assert version_major("8.6.1") == 8
    assert version_major("") == 0


def test_build_on_a_machine_without_it_raises_the_reason() -> None:
    if STATE.ok:
        pytest.skip("tensorrt is available on this machine")
    with pytest.raises(MissingRuntime, match="tensorrt is not available here"):
        rtpick.load("rtpick:digits", "tensorrt", "fp16")


def test_options_are_checked_before_anything_heavy() -> None:
    runtime = get_runtime("tensorrt")
    with pytest.raises(RtpickError, match="must be one of"):
        runtime.check_options({"builder_optimization_level": 7})
    with pytest.raises(RtpickError, match="no option 'workspace'"):
        runtime.check_options({"workspace": 1})
    options = runtime.check_options({"workspace_mb": "1024", "cuda_graph": "on", "min_batch": "1"})
    assert options["workspace_mb"] == 1024 and options["cuda_graph"] is True and options["min_batch"] == 1
    with pytest.raises(RtpickError, match="does not support fp64|unknown precision"):
        rtpick.load("rtpick:digits", "tensorrt", "fp64")


# ------------------------------------------------------------------------------------------ pure parts


def test_precision_flags() -> None:
    assert precision_flags("fp32") == ((), ("TF32",))  # TensorRT allows TF32 by default: fp32 clears it
    assert precision_flags("tf32") == (("TF32",), ())
    assert precision_flags("fp16") == (("FP16",), ())
    assert precision_flags("bf16") == (("BF16",), ())
    to_set, to_clear = precision_flags("int8")
    assert "INT8" in to_set and to_clear == ()
    with pytest.raises(RtpickError, match="does not support fp8"):
        precision_flags("fp8")


def _specs() -> tuple:
    from rtpick.model import TensorSpec

    return (TensorSpec("image", "float32", ("batch", 1, 32, 32)), TensorSpec("scale", "float32", (1,)))


def test_profile_is_the_shape_asked_for_or_a_batch_range() -> None:
    image, _scale = _specs()
    shapes = {"image": (8, 1, 32, 32), "scale": (1,)}
    assert profile_for(_specs(), shapes) == {"image": ((8, 1, 32, 32), (8, 1, 32, 32), (8, 1, 32, 32))}
    assert profile_for(_specs(), shapes, min_batch=1, max_batch=64) == {
        "image": ((1, 1, 32, 32), (8, 1, 32, 32), (64, 1, 32, 32))}
    assert profile_for(_specs(), shapes, max_batch=16)["image"][0] == (8, 1, 32, 32)
    with pytest.raises(RtpickError, match="outside min_batch..max_batch"):
        profile_for(_specs(), shapes, min_batch=16, max_batch=64)
    with pytest.raises(RtpickError, match="needs a concrete shape"):
        profile_for(_specs(), {"scale": (1,)})
    with pytest.raises(RtpickError, match="min_batch and max_batch"):
        profile_for(_specs(), shapes, min_batch=-1)
    assert profile_for((_specs()[1],), {}) == {}  # static inputs need no profile
    with pytest.raises(RtpickError, match="need an input whose leading"):
        profile_for((_specs()[1],), {}, max_batch=8)


def test_engine_cache_key_changes_with_each_component() -> None:
    profile = {"image": ((8, 1, 32, 32),) * 3}
    base = dict(model_sha256="a" * 64, precision="fp16", profile=profile, trt_version="10.9.0.34",
                gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                build_options={"workspace_mb": 4096, "builder_optimization_level": 3})
    key = engine_cache_key(**base)
    assert len(key) == 64 and key == engine_cache_key(**base)
    changes = {
        "model_sha256": "b" * 64,
        "precision": "fp32",
        "profile": {"image": ((1, 1, 32, 32), (8, 1, 32, 32), (64, 1, 32, 32))},
        "trt_version": "10.8.0.43",
        "gpu_name": "NVIDIA A100-SXM4-80GB",
        "compute_capability": (8, 0),
        "build_options": {"workspace_mb": 1024, "builder_optimization_level": 3},
    }
    keys = {key}
    for field, value in changes.items():
        changed = engine_cache_key(**{**base, field: value})
        assert changed != key, field
        keys.add(changed)
    assert len(keys) == len(changes) + 1
    # The order options are given in does not matter.
    reordered = {"builder_optimization_level": 3, "workspace_mb": 4096}
    assert engine_cache_key(**{**base, "build_options": reordered}) == key


def test_parser_errors_name_the_node() -> None:
    errors = [
        {"desc": "No importer registered for op: Mystery\nmore", "node": 3, "node_name": "mystery_1",
         "operator": "Mystery"},
        {"desc": "second", "node": 5, "node_name": "", "operator": ""},
        {"desc": "third", "node": -1},
        {"desc": "fourth", "node": -1},
    ]
    text = describe_parser_errors(errors)
    assert "node 'mystery_1' (Mystery): No importer registered for op: Mystery" in text
    assert "node #5: second" in text and "third" in text and "(+1 more)" in text and "\n" not in text


def _qdq_model(tmp_path: Path, zero_point: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
             numpy_helper.from_array(zero_point, "zero_point")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], name="dequant_x")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    path = tmp_path / f"qdq-{zero_point.dtype}-{int(zero_point)}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_qdq_models_must_be_symmetric_int8(tmp_path: Path) -> None:
    assert qdq_zero_point_problem(_qdq_model(tmp_path, np.array(0, np.int8))) == ""
    problem = qdq_zero_point_problem(_qdq_model(tmp_path, np.array(3, np.int8)))
    assert "non-zero zero point" in problem and "quant_x" in problem
    problem = qdq_zero_point_problem(_qdq_model(tmp_path, np.array(128, np.uint8)))
    assert "uint8" in problem and "signed int8" in problem


def test_rtpick_int8_models_are_buildable_by_tensorrt() -> None:
    from rtpick.model import resolve_shapes
    from rtpick.quantize import quantize_int8
    from rtpick.sources import load_model

    model = load_model("rtpick:digits")
    path, _ = quantize_int8(model, resolve_shapes(model.spec.inputs, batch=4), None, 4, recipe="tensorrt")
    assert qdq_zero_point_problem(path) == ""


# ------------------------------------------------------------------------------------------ with TensorRT


def _digits_eval() -> tuple[np.ndarray, np.ndarray]:
    from rtpick.sources import assets_dir

    with np.load(assets_dir() / "digits_eval.npz") as data:
        return data["image"], data["label"]


def _reference(images: np.ndarray) -> np.ndarray:
    with rtpick.load("rtpick:digits", "ort-cpu", shapes={"image": images.shape}) as session:
        return session.run({"image": images})["logits"]


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_engine_outputs_agree_with_ort_cpu(precision: str) -> None:
    from rtpick.comparison.metrics import check_output
    from rtpick.comparison.policy import tolerance_for

    images, labels = _digits_eval()
    images = images[:256]
    reference = _reference(images)
    with rtpick.load("rtpick:digits", "tensorrt", precision, shapes={"image": images.shape}) as session:
        out = session.run({"image": images})["logits"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == reference.shape
    assert np.isfinite(out).all()
    check = check_output("logits", out, reference, tolerance_for(precision), labels[:256])
    assert check.ok, check.reason
    assert check.top1_agreement is not None and check.top1_agreement >= 0.99


@needs_tensorrt
def test_device_tensors_stay_on_the_device_and_numpy_round_trips() -> None:
    import torch

    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (4, 1, 32, 32)).astype(np.float32)
    with rtpick.load("rtpick:digits", "tensorrt", "fp32", batch=4) as session:
        host = session.run({"image": x})["logits"]
        device = session.run({"image": torch.from_numpy(x).cuda()})["logits"]
        assert isinstance(host, np.ndarray)
        assert isinstance(device, torch.Tensor) and device.is_cuda and device.device == torch.device("cuda", 0)
        assert device.dtype == torch.float32
        session.synchronize()
        np.testing.assert_allclose(device.cpu().numpy(), host, rtol=1e-5, atol=1e-6)


@needs_tensorrt
def test_cuda_graph_replays_fresh_inputs(private_cache: Path) -> None:
    rng = np.random.default_rng(11)
    batches = [rng.uniform(0, 1, (8, 1, 32, 32)).astype(np.float32) for _ in range(3)]
    with rtpick.load("rtpick:digits", "tensorrt", "fp32", batch=8) as plain:
        expected = [plain.run({"image": b})["logits"] for b in batches]
    with rtpick.load("rtpick:digits", "tensorrt", "fp32", batch=8, cuda_graph=True) as graphed:
        for batch, want in zip(batches, expected):  # a stale replay would return the previous batch's answer
            np.testing.assert_allclose(graphed.run({"image": batch})["logits"], want, rtol=1e-5, atol=1e-6)


@needs_tensorrt
def test_engine_cache_makes_the_second_build_fast(private_cache: Path) -> None:
    first = rtpick.load("rtpick:digits", "tensorrt", "fp16", batch=16)
    first.close()
    second = rtpick.load("rtpick:digits", "tensorrt", "fp16", batch=16)
    second.close()
    assert not any("loaded from rtpick's cache" in n for n in first.info.notes)
    assert any("loaded from rtpick's cache" in n for n in second.info.notes)
    assert second.info.build_time_s < first.info.build_time_s / 2, (first.info.build_time_s,
                                                                      second.info.build_time_s)
    assert list((private_cache / "tensorrt" / "engines").glob("*.engine"))
    assert list((private_cache / "tensorrt").glob("timing-*.cache"))
    # Another precision is another engine, not the cached fp16 one.
    other = rtpick.load("rtpick:digits", "tensorrt", "fp32", batch=16)
    other.close()
    assert not any("loaded from rtpick's cache" in n for n in other.info.notes)


@needs_tensorrt
def test_batch_range_profile() -> None:
    rng = np.random.default_rng(3)
    with rtpick.load("rtpick:digits", "tensorrt", "fp32", batch=4, min_batch=1, max_batch=8) as session:
        for batch in (1, 4, 8):
            out = session.run({"image": rng.uniform(0, 1, (batch, 1, 32, 32)).astype(np.float32)})["logits"]
            assert out.shape == (batch, 10) and np.isfinite(out).all()
        with pytest.raises(RtpickError, match="outside the engine's profile"):
            session.run({"image": np.zeros((16, 1, 32, 32), np.float32)})


@needs_tensorrt
def test_int8_engine_keeps_the_answers(tmp_path: Path) -> None:
    from rtpick.comparison.metrics import check_output
    from rtpick.comparison.policy import tolerance_for

    images, labels = _digits_eval()
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=images[:128])
    reference = _reference(images)
    with rtpick.load("rtpick:digits", "tensorrt", "int8", shapes={"image": images.shape},
                     calibration=str(calibration)) as session:
        out = session.run({"image": images})["logits"]
    assert any("explicit quantisation" in n for n in session.info.notes)
    check = check_output("logits", out, reference, tolerance_for("int8"), labels)
    assert check.ok, check.reason
    assert check.accuracy is not None and check.accuracy >= 0.97


@needs_tensorrt
def test_unsupported_operator_names_the_node(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Mystery", ["x"], ["y"], name="mystery_node", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "mystery.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BuildError, match="mystery_node"):
        rtpick.load(path, "tensorrt", "fp32")


# ------------------------------------------------------------------------------------------ ort-tensorrt


def test_ort_tensorrt_provider_options_follow_the_documentation() -> None:
    """Option names and types as ONNX Runtime's TensorRT provider documents them (Python: bools as True/False)."""
    from rtpick.sources import load_model

    runtime = get_runtime("ort-tensorrt")
    assert runtime.precisions == ("tf32", "fp16", "int8")  # TensorRT's default TF32 cannot be turned off there
    model = load_model("rtpick:digits")
    options = runtime.check_options({"workspace_mb": 512})
    by_precision = {}
    for precision in runtime.precisions:
        (name, trt), (fallback, cuda) = runtime._providers(precision, options, model)
        assert (name, fallback) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
        assert trt["trt_max_workspace_size"] == 512 << 20 and isinstance(trt["device_id"], int)
        assert trt["trt_engine_cache_enable"] is True and trt["trt_timing_cache_enable"] is True
        assert Path(trt["trt_engine_cache_path"]).is_dir()
        assert "trt_int8_calibration_table_name" not in trt  # a QDQ model must not be given a table
        by_precision[precision] = (trt["trt_fp16_enable"], trt["trt_int8_enable"])
    assert by_precision == {"tf32": (False, False), "fp16": (True, False), "int8": (True, True)}
