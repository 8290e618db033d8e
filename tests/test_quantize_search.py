"""The int8 variant search: keeps the fastest accurate variant, refuses int8 in one line when it is slower,
caches the choice, and `compare` sees the refusal as that configuration's error (so `recommend` never picks it).

Timing is replaced by fixed numbers where the decision is under test (a unit test must not depend on how busy
the machine is); one test runs the real search end to end on a tiny model with a small budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtpick
from rtpick import quantize_search
from rtpick.errors import BuildError
from rtpick.sources import load_model as load_source
from tests.conftest import run_cli

pytest.importorskip("onnxruntime")


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_timing(monkeypatch: pytest.MonkeyPatch, ms: dict[str, float]) -> list[int]:
    calls = []

    def measure(sessions: dict[str, Any], feed: object, budget_s: float, **kwargs: object) -> tuple[dict, int]:
        calls.append(1)
        return {name: ms.get(name, 99.0) / 1e3 for name in sessions}, 7

    monkeypatch.setattr(quantize_search, "measure", measure)
    return calls


def test_keeps_the_fastest_accurate_variant_and_caches_it(small_onnx: Path, private_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    names = [v.name for v in quantize_search.candidates(quantize_search.cpu_features(), {"MatMul": 2})]
    calls = _fake_timing(monkeypatch, {"fp32": 2.0, names[0]: 1.5, names[1]: 1.0})
    with rtpick.load(str(small_onnx), "ort-cpu", "int8") as session:
        notes = session.info.notes
        out = session.run({"x": np.ones((1, 8), np.float32)})["y"]
        assert np.isfinite(out).all()
    assert "synthetic" in notes[0]
    assert f"int8 variant {names[1]}" in notes[1] and "2.00x fp32" in notes[1]
    record = json.loads(Path(notes[2].split(": ", 1)[1]).read_text())
    assert record["variant"]["name"] == names[1] and record["ratio"] == 2.0
    assert record["nodes"]["quantised"]  # which nodes run in int8 is recorded
    with rtpick.load(str(small_onnx), "ort-cpu", "int8", shapes={"x": (16, 8)}) as again:  # any batch: cached
        assert again.info.notes[1] == notes[1]
    assert len(calls) == 2  # the search and its head-to-head confirmation; nothing more once cached


def test_refuses_int8_in_one_line_when_it_is_slower(small_onnx: Path, private_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize_search, "measure",
                        lambda sessions, feed, budget_s, **kw: ({n: (0.8e-3 if n == "fp32" else 1e-3)
                                                                for n in sessions}, 5))
    with pytest.raises(BuildError) as caught:
        rtpick.load(str(small_onnx), "ort-cpu", "int8")
    message = str(caught.value)
    assert message.startswith("int8 is not faster than fp32 for this model on this CPU: 0.80×")
    assert "\n" not in message


def test_inaccurate_variants_are_never_kept(small_onnx: Path, private_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timing(monkeypatch, {"fp32": 2.0})
    monkeypatch.setattr(quantize_search, "accuracy_problem", lambda ref, out: "output 0: cosine 0.5 < 0.99")
    with pytest.raises(BuildError, match="no int8 variant stays within compare's int8 tolerance"):
        rtpick.load(str(small_onnx), "ort-cpu", "int8")


def test_real_search_on_a_tiny_model_within_its_budget(small_onnx: Path, private_cache: Path) -> None:
    """No fake timing: the search builds, checks and times real variants, and either keeps one (with a ratio of
    at least MIN_SPEEDUP) or refuses in one line; each is a legitimate outcome on a busy machine."""
    model = load_source(str(small_onnx))
    try:
        path, notes = quantize_search.choose_int8(model, {"x": (1, 8)}, None, 4, budget_s=8)
    except BuildError as exc:  # slower (with the ratio) or inaccurate (4 synthetic samples calibrate coarsely)
        assert "×" in str(exc) or "tolerance" in str(exc)
        return
    assert path.exists() and "x fp32 at batch 1" in notes[1]


def test_no_vnni_means_reduce_range() -> None:
    without = quantize_search.candidates({"vnni": False, "amx": False}, {"Conv": 3})
    assert without and all(v.reduce_range for v in without)
    with_vnni = quantize_search.candidates({"vnni": True}, {"Conv": 3, "MatMul": 4})
    assert not with_vnni[0].reduce_range and any(v.fmt == "dynamic" for v in with_vnni)
    assert all(v.activation == "u8" for v in with_vnni)  # s8 activations: 0.56x on ddddocr-det with VNNI


def test_conv_models_try_every_op_in_int8_first_and_depthwise_out_later() -> None:
    """The order is the order of measured wins (quantize_variants' docstring): the all-op variants first (the
    budget may run out before the last), the depthwise-out ones after the convolution-only one."""
    names = [v.name for v in quantize_search.candidates({"vnni": True}, {"Conv": 3})]
    assert names[:2] == ["qdq-u8s8-pc-all", "qop-u8s8-pc-all"]
    assert names.index("qdq-u8s8-pc") < names.index("qop-u8s8-pc-nodw")
    assert len(names) == len(set(names))
    head_only = quantize_search.candidates({"vnni": True}, {"Conv": 30, "MatMul": 1})  # a CNN classifier's head
    assert head_only and all(v.fmt != "dynamic" and "Conv" in (v.ops or ("Conv",)) for v in head_only)


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 1, 32, 32), dtype=np.float32)


def _split_real(tmp_path: Path, name: str, count: int) -> tuple[Any, Any, Any]:
    """The demo model's calibration from an .npz of `count` images, split: (data, calibrate, checks)."""
    from rtpick.quantize import calibration_data
    from rtpick.sources import load_bundled

    model = load_bundled("digits")
    data_file = tmp_path / name
    np.savez(data_file, image=_images(count))
    data = calibration_data(model, {"image": (1, 1, 32, 32)}, str(data_file), count)
    return (data, *quantize_search.split_calibration(model, {"image": (1, 1, 32, 32)}, data))


def test_real_calibration_is_split_and_the_gate_never_sees_a_calibrated_sample(tmp_path: Path) -> None:
    data, calibrate, checks = _split_real(tmp_path, "cal.npz", 32)
    calibrated = np.concatenate([feed["image"] for feed in calibrate.feeds])
    checked = np.concatenate([feed["image"] for feed in checks])
    assert len(calibrated) == 24 and len(checked) == 8
    assert not any((calibrated == sample).all(axis=(1, 2, 3)).any() for sample in checked)
    assert calibrate.key != data.key  # the cached int8 model is the one calibrated on the 24
    assert "24 of the 32 samples in cal.npz" in calibrate.note and "held out" in calibrate.note


def test_synthetic_calibration_is_gated_on_fresh_random_inputs(small_onnx: Path) -> None:
    from rtpick.quantize import calibration_data

    model = load_source(str(small_onnx))
    data = calibration_data(model, {"x": (1, 8)}, None, 4)
    calibrate, checks = quantize_search.split_calibration(model, {"x": (1, 8)}, data)
    assert len(calibrate.feeds) == 4 and len(checks) == 8
    assert not any(np.array_equal(check["x"], feed["x"]) for check in checks for feed in calibrate.feeds)
    assert "seeds 10000-10007" in calibrate.note


def test_one_real_sample_cannot_be_split_and_the_note_says_so(tmp_path: Path) -> None:
    _, calibrate, checks = _split_real(tmp_path, "one.npz", 1)
    assert len(checks) == 1 and "too few to hold any out" in calibrate.note


def test_compare_reports_the_refusal_and_recommend_skips_it(small_onnx: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached 'int8 lost' choice makes `compare` show int8's one-line error and exit as for any failed
    configuration, without a traceback."""
    import onnxruntime

    cache = tmp_path / "cli-cache"
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(cache))
    model = load_source(str(small_onnx))
    one = {"x": (1, 8)}
    key = quantize_search._key(model, one, 0, quantize_search.cpu_features(), onnxruntime.__version__)
    lost = quantize_search.Choice(variant=None, ratio=0.8, fp32_p50_ms=1.0, int8_p50_ms=1.25, rounds=9,
                                  search_s=3.0, cpu={}, ort_version=onnxruntime.__version__, calibration="",
                                  calibration_key="synthetic",
                                  tried=[{"name": "v", "status": "accurate"}])
    (cache / "int8-choice").mkdir(parents=True)
    (cache / "int8-choice" / f"{key}.json").write_text(json.dumps(quantize_search.asdict(lost)))
    out = tmp_path / "c.json"
    result = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32,ort-cpu:int8", "--batch", "1", "--json", str(out))
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stdout + result.stderr
    rows = {row["config"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["ort-cpu:int8"]["status"] == "error"
    assert "int8 is not faster than fp32 for this model on this CPU: 0.80×" in rows["ort-cpu:int8"]["reason"]


def test_the_int8_model_is_the_same_at_every_batch(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo builds int8 at its evaluation batch and `compare` at the user's: both must get the very same int8
    model (calibrated and chosen at batch 1), so their verdicts can differ only by the inputs they judge on."""
    from rtpick.sources import assets_dir, load_bundled

    monkeypatch.setattr(quantize_search, "measure",
                        lambda sessions, feed, budget_s, **kw: ({n: (3e-3 if n == "fp32" else 1e-3)
                                                                for n in sessions}, 5))
    model = load_bundled("digits")
    calibration = str(assets_dir() / "digits_calibration.npz")
    paths = {quantize_search.choose_int8(model, {"image": (batch, 1, 32, 32)}, calibration, 32)[0]
             for batch in (1, 16, 256)}
    assert len(paths) == 1


def test_min_speedup_zero_keeps_a_slower_int8_and_says_how_slow(small_onnx: Path, private_cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize_search, "measure",
                        lambda sessions, feed, budget_s, **kw: ({n: (0.8e-3 if n == "fp32" else 1e-3)
                                                                for n in sessions}, 5))
    with rtpick.load(str(small_onnx), "ort-cpu", "int8", int8_min_speedup=0) as session:
        assert "0.80x fp32 at batch 1" in session.info.notes[1]


def test_leading_layers_kept_in_fp32_are_found_per_family_of_variants(small_onnx: Path, private_cache: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping the first layers in fp32 rescues conv-only variants but not every-op ones (there, a kept layer's
    input is still quantised by the op before it): the count is searched once per family and reused in it; the
    rest of a family that no count rescued is skipped (it quantises the same tensors)."""
    from rtpick.quantize import Variant

    every = [Variant("all-a", ops=()), Variant("all-b", fmt="qoperator", ops=())]
    convs = [Variant("conv-a", ops=("Conv",)), Variant("conv-b", ops=("Conv",), skip_depthwise=True)]
    monkeypatch.setattr(quantize_search, "candidates", lambda features, ops: [*every, *convs])
    built: list[str] = []

    def fake_try(model: Any, shapes: Any, data: Any, variant: Any, *rest: Any) -> tuple[Any, Any, str]:
        built.append(variant.name)
        if variant.ops and variant.keep_first >= 6:
            return object(), small_onnx, "accurate"
        return None, None, "inaccurate: output 0: cosine 0.97 < 0.99"

    monkeypatch.setattr(quantize_search, "_try", fake_try)
    _fake_timing(monkeypatch, {"fp32": 2.0, "conv-a-keep6": 1.5, "conv-b-keep6": 1.0})
    model = load_source(str(small_onnx))
    path, notes = quantize_search.choose_int8(model, {"x": (1, 8)}, None, 4, min_speedup=0)
    assert built == ["all-a", "all-a-keep3", "all-a-keep6", "all-a-keep12",
                     "conv-a", "conv-a-keep3", "conv-a-keep6", "conv-b-keep6"]
    assert "int8 variant conv-b-keep6" in notes[1]
    record = json.loads(Path(notes[2].split(": ", 1)[1]).read_text())
    assert next(row for row in record["tried"] if row["name"] == "all-b")["status"].startswith("skipped: its family")


class _Scores:
    """A session answering fixed class scores per input row; `wrong` rows (by their first pixel) get others."""

    def __init__(self, wrong: set[float]) -> None:
        self.wrong = wrong

    def run(self, outputs: object, feed: dict) -> list[np.ndarray]:
        images = feed["image"]
        scores = np.stack([np.linspace(0, 1, 10, dtype=np.float32) * (1 + float(img.ravel()[0])) for img in images])
        flip = np.array([float(img.ravel()[0]) in self.wrong for img in images])
        scores[flip] = scores[flip][:, ::-1]
        return [scores]


def test_int8_must_pass_on_the_held_out_and_on_the_calibration_samples_each(tmp_path: Path) -> None:
    """Orientation's 8 held-out images passed variants that 32 fresh images (and its 24 calibration images) put
    at cosine 0.973: the gate judges each set on its own, so a failure on either is a refusal that names it."""
    data, calibrate, checks = _split_real(tmp_path, "cal.npz", 32)
    sets = quantize_search.gate_sets(calibrate, checks)
    assert [label for label, _ in sets] == ["8 held-out samples", "24 calibration samples"]
    fp32 = _Scores(set())
    references = [quantize_search._outputs(fp32, feeds) for _, feeds in sets]
    assert quantize_search.gate_problem(sets, references, _Scores(set())) == ""
    calibrated = np.concatenate([feed["image"] for feed in calibrate.feeds])
    wrong_on_calibration = _Scores({float(img.ravel()[0]) for img in calibrated[:6]})
    assert quantize_search.gate_problem(sets, references, wrong_on_calibration).startswith(
        "on the 24 calibration samples:")
    held = np.concatenate([feed["image"] for feed in checks])
    wrong_held_out = _Scores({float(img.ravel()[0]) for img in held[:2]})
    assert quantize_search.gate_problem(sets, references, wrong_held_out).startswith("on the 8 held-out samples:")


def test_with_nothing_held_out_the_gate_has_one_set(tmp_path: Path) -> None:
    _, calibrate, checks = _split_real(tmp_path, "one.npz", 1)
    assert [label for label, _ in quantize_search.gate_sets(calibrate, checks)] == [
        "1 calibration samples (too few to hold any out)"]


def test_matrix_products_only_inside_if_bodies_are_named_in_the_refusal(tmp_path: Path, private_cache: Path) -> None:
    """Silero VAD keeps every Conv/Gemm inside the branches of an If (one per sample rate); static quantisation does
    not reach them, and the refusal says where they are instead of 'the model has none'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def branch(name: str) -> onnx.GraphProto:
        weight = helper.make_node("Constant", [], [f"{name}_w"],
                                  value=numpy_helper.from_array(np.ones((8, 8), np.float32)))
        product = helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_y"])
        return helper.make_graph([weight, product], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 8])])

    cond = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True)))
    choose = helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"))
    graph = helper.make_graph([cond, choose], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "branches.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(BuildError, match=r"main graph has none of Conv, MatMul, Gemm \(its 2 are inside If"):
        rtpick.load(str(path), "ort-cpu", "int8")
