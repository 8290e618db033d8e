"""rtpick.comparison (behind rtpick.compare): metrics, the tolerance policy, real comparisons across runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rtpick
from rtpick.comparison.metrics import check_output
from rtpick.comparison.policy import (
    STATUS_ERROR,
    STATUS_MISMATCH,
    STATUS_PASS,
    STATUS_REFERENCE,
    STATUS_UNCHECKED,
    TOLERANCES,
    Tolerance,
    tolerance_for,
)
from rtpick.comparison.run import compare_configs
from rtpick.errors import RtpickError
from rtpick.runtimes.registry import availability
from rtpick.sources import load_model

FP32 = TOLERANCES["fp32"]
ASSETS = Path(rtpick.__file__).parent / "assets"


def _torch_cpu_skip() -> pytest.MarkDecorator:
    state = availability("torch-cpu")
    return pytest.mark.skipif(not state.ok, reason=f"torch-cpu is not available here: {state.reason}")


# ------------------------------------------------------------------------------------------- metrics


def test_identical_outputs_have_zero_error_and_pass() -> None:
    ref = np.linspace(-3, 3, 24, dtype=np.float32).reshape(4, 6)
    check = check_output("y", ref.copy(), ref, FP32)
    assert check.ok, check.reason
    assert check.max_abs == 0 and check.mean_abs == 0 and check.max_rel == 0
    assert check.cosine == pytest.approx(1.0)
    assert (check.nan, check.inf) == (0, 0)


def test_perturbed_output_metrics_are_exact() -> None:
    ref = np.array([[1.0, -2.0, 4.0, 0.0]], dtype=np.float32)
    cand = ref.copy()
    cand[0, 2] += 0.5  # one element off by 0.5 at |ref| = 4
    check = check_output("y", cand, ref, FP32)
    assert not check.ok
    assert check.max_abs == pytest.approx(0.5)
    assert check.mean_abs == pytest.approx(0.5 / 4)
    assert check.max_rel == pytest.approx(0.5 / 4.0)
    expected_cos = float(ref.ravel() @ cand.ravel() / (np.linalg.norm(ref) * np.linalg.norm(cand)))
    assert check.cosine == pytest.approx(expected_cos)
    assert "1 of 4 elements" in check.reason


def test_relative_error_has_a_floor_near_zero() -> None:
    ref = np.array([1000.0, 0.0], dtype=np.float32)
    cand = np.array([1000.0, 1e-3], dtype=np.float32)
    check = check_output("y", cand, ref, FP32)
    # denominator floor = 1e-3 * max|ref| = 1.0, not 0: the relative error stays finite and small
    assert check.max_rel == pytest.approx(1e-3, rel=1e-3)


def test_nan_where_the_reference_has_none_fails_whatever_the_tolerance() -> None:
    ref = np.ones((2, 3), dtype=np.float32)
    cand = ref.copy()
    cand[1, 1] = np.nan
    loose = Tolerance(atol=1e9, rtol=1e9)
    check = check_output("y", cand, ref, loose)
    assert not check.ok
    assert check.nan == 1 and check.ref_nan == 0
    assert "NaN" in check.reason
    assert check.max_abs == 0.0  # measured on the finite elements only


def test_nan_in_the_same_places_as_the_reference_is_agreement() -> None:
    ref = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    check = check_output("y", ref.copy(), ref, FP32)
    assert check.ok, check.reason
    assert check.nan == 1 and check.ref_nan == 1


def test_missing_nan_is_a_mismatch_too() -> None:
    ref = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    cand = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert not check_output("y", cand, ref, FP32).ok


def test_inf_where_the_reference_has_none_fails_and_sign_matters() -> None:
    ref = np.array([1.0, np.inf, 3.0], dtype=np.float32)
    extra = np.array([np.inf, np.inf, 3.0], dtype=np.float32)
    flipped = np.array([1.0, -np.inf, 3.0], dtype=np.float32)
    same = ref.copy()
    bad = check_output("y", extra, ref, FP32)
    assert not bad.ok and bad.inf == 2 and "Inf" in bad.reason
    assert not check_output("y", flipped, ref, FP32).ok
    assert check_output("y", same, ref, FP32).ok


def test_all_nan_output_never_passes() -> None:
    ref = np.zeros((2, 10), dtype=np.float32)
    cand = np.full((2, 10), np.nan, dtype=np.float32)
    for precision in TOLERANCES:
        assert not check_output("y", cand, ref, TOLERANCES[precision]).ok, precision


def test_shape_and_kind_mismatches_fail() -> None:
    ref = np.zeros((2, 3), dtype=np.float32)
    assert "shape" in check_output("y", np.zeros((3, 2), np.float32), ref, FP32).reason
    assert "dtype" in check_output("y", np.zeros((2, 3), np.int64), ref, FP32).reason


def test_classifier_agreement_and_accuracy() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((10, 8)).astype(np.float32)
    cand = ref.copy()
    # row 0: swap the top class with the runner-up -> top-1 disagrees, reference top-1 still in top-5
    order = np.argsort(-ref[0])
    cand[0, order[0]], cand[0, order[1]] = ref[0, order[1]], ref[0, order[0]]
    # row 1: push the reference's top class to the bottom -> not even in the top-5
    cand[1, np.argmax(ref[1])] = -100.0
    labels = np.argmax(ref, axis=1)
    check = check_output("logits", cand, ref, TOLERANCES["int8"], labels)
    assert check.top1_agreement == pytest.approx(0.8)
    assert check.top5_agreement == pytest.approx(0.9)
    assert check.accuracy == pytest.approx(0.8)
    # the gate counts the rows whose lead is beyond the error int8 may carry: 7 here, one of them flipped
    assert check.top1_decisive_rows == 7 and check.top1_decisive_agreement == pytest.approx(6 / 7)
    assert not check.ok and "top-1 agreement 0.857 < 0.9 on the 7 of 10 rows" in check.reason


def test_top5_is_only_reported_with_more_than_five_classes() -> None:
    ref = np.eye(3, 4, dtype=np.float32)
    check = check_output("p", ref.copy(), ref, FP32)
    assert check.top1_agreement == 1.0 and check.top5_agreement is None


def test_integer_outputs_are_exact_unless_the_precision_is_lenient() -> None:
    ref = np.arange(20, dtype=np.int64)
    cand = ref.copy()
    cand[3] = 99
    strict = check_output("idx", cand, ref, FP32)
    assert not strict.ok and strict.equal_fraction == pytest.approx(0.95)
    assert check_output("idx", cand, ref, TOLERANCES["int8"]).ok  # 95% equal >= 90%
    assert check_output("idx", ref.copy(), ref, FP32).ok
    flags = np.array([True, False, True])
    assert check_output("m", flags.copy(), flags, FP32).ok


# ---------------------------------------------------------------------------------------- tolerance policy


def test_policy_covers_every_precision_and_orders_strictness() -> None:
    from rtpick.runtimes.base import PRECISIONS

    assert set(TOLERANCES) == set(PRECISIONS)
    assert TOLERANCES["fp32"].atol is not None  # fp32 is held element by element
    assert TOLERANCES["tf32"].max_rel_l2 < TOLERANCES["fp16"].max_rel_l2 < TOLERANCES["bf16"].max_rel_l2
    assert all(TOLERANCES[p].min_top1 == 0.99 for p in ("tf32", "fp16", "bf16"))
    assert TOLERANCES["int8"].atol is None and TOLERANCES["int8"].min_cosine == 0.99
    assert TOLERANCES["int8"].min_top1 is not None


def test_bf16_sized_error_passes_bf16_but_not_fp32() -> None:
    rng = np.random.default_rng(1)
    ref = (rng.standard_normal((16, 10)) * 5).astype(np.float32)
    cand = ref * (1 + rng.uniform(-8e-3, 8e-3, ref.shape)).astype(np.float32)  # ~2 bf16 roundings
    assert check_output("y", cand, ref, tolerance_for("bf16")).ok
    assert not check_output("y", cand, ref, tolerance_for("fp32")).ok


def test_a_few_far_elements_pass_reduced_precision_norm_wise_but_a_wrong_output_does_not() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((64, 1000)).astype(np.float32)
    cand = ref + rng.normal(0, 2e-3, ref.shape).astype(np.float32)  # fp16-sized rounding noise
    cand[0, :40] += 0.3  # a few dozen logits far off, as a deep network in fp16 gives
    assert check_output("y", cand, ref, tolerance_for("fp16")).ok
    assert not check_output("y", cand, ref, tolerance_for("fp32")).ok
    shuffled = ref[rng.permutation(64)]  # right values, wrong rows: top-1 and the norm both catch it
    check = check_output("y", shuffled, ref, tolerance_for("fp16"))
    assert not check.ok and check.rel_l2 > 1e-2


def test_cosine_catches_a_wrong_output_below_atol() -> None:
    ref = np.linspace(-0.01, 0.01, 50, dtype=np.float32)  # tiny values: far below bf16's atol of 0.1
    wrong = -ref  # every element within atol, yet the output points the other way
    check = check_output("y", wrong, ref, tolerance_for("bf16"))
    assert not check.ok and "cosine" in check.reason


def test_atol_rtol_override() -> None:
    tol = tolerance_for("fp32", atol=0.5)
    assert tol.atol == 0.5 and tol.rtol == FP32.rtol
    int8 = tolerance_for("int8", rtol=0.01)
    assert int8.atol == 0.0 and int8.rtol == 0.01 and int8.min_cosine == 0.99  # elementwise switched on
    ref = np.array([1.0, 2.0], np.float32)
    assert check_output("y", ref + 0.4, ref, tol).ok
    with pytest.raises(RtpickError, match="atol"):
        tolerance_for("fp32", atol=-1)
    with pytest.raises(RtpickError, match="rtol"):
        tolerance_for("fp32", rtol=float("nan"))


# ------------------------------------------------------------------------------------- real comparisons


# The tiny MLP's int8 is slower than its fp32 (ort-cpu refuses it by default): keep it, to test comparing it.
KEEP_SLOW_INT8 = {"ort-cpu": {"int8_min_speedup": 0}}


def test_failing_configurations_do_not_stop_the_others(small_onnx: Path) -> None:
    result = compare_configs(
        small_onnx, ["ort-cpu:fp32", "ort-cpu:bf16", "ort-cuda:fp32", "torch-cpu:fp32", "ort-cpu:int8"], batch=32,
        options=KEEP_SLOW_INT8,
    )
    rows = {row.config: row for row in result.rows}
    assert rows["ort-cpu:fp32"].status == STATUS_REFERENCE
    assert rows["ort-cpu:bf16"].status == STATUS_ERROR
    assert "does not support bf16" in rows["ort-cpu:bf16"].reason
    if availability("ort-cuda").ok:
        assert rows["ort-cuda:fp32"].status == STATUS_PASS, rows["ort-cuda:fp32"].reason
    else:
        assert rows["ort-cuda:fp32"].status == STATUS_ERROR
        assert "not available" in rows["ort-cuda:fp32"].reason
    # an ONNX-only model cannot be built by a torch runtime: an error row with the reason, not a crash
    assert rows["torch-cpu:fp32"].status == STATUS_ERROR and rows["torch-cpu:fp32"].reason
    assert "\n" not in rows["torch-cpu:fp32"].reason
    int8 = rows["ort-cpu:int8"]
    assert int8.status in (STATUS_PASS, STATUS_MISMATCH), int8.reason
    assert int8.cosine is not None and int8.cosine > 0.9
    assert not result.passed
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["rows"][1]["status"] == STATUS_ERROR


def test_a_reference_outside_the_list_runs_first(small_onnx: Path) -> None:
    result = compare_configs(small_onnx, ["ort-cpu:fp32"], reference="ort-cpu:int8", batch=8, seed=5,
                             options=KEEP_SLOW_INT8)
    assert result.reference == "ort-cpu:int8"
    assert [row.config for row in result.rows] == ["ort-cpu:int8", "ort-cpu:fp32"]
    assert result.rows[0].status == STATUS_REFERENCE
    assert result.feed_shapes == {"x": [8, 8]}
    assert "seed 5" in result.feeds_description


def test_reference_outside_the_list_that_fails_leaves_rows_unchecked(small_onnx: Path) -> None:
    result = compare_configs(small_onnx, ["ort-cpu:fp32"], reference="torch-cpu:fp32")
    rows = {row.config: row for row in result.rows}
    assert rows["torch-cpu:fp32"].status == STATUS_ERROR
    assert rows["ort-cpu:fp32"].status == STATUS_UNCHECKED
    assert "reference torch-cpu:fp32 did not run" in rows["ort-cpu:fp32"].reason
    assert not result.passed


def test_default_reference_falls_back_to_the_next_fp32_that_runs(small_onnx: Path) -> None:
    result = compare_configs(small_onnx, ["torch-cpu:fp32", "ort-cpu:fp32"])
    assert result.reference == "ort-cpu:fp32"
    assert any("torch-cpu:fp32 did not run" in note for note in result.notes)


def test_feeds_from_a_file_and_given_feeds(small_onnx: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(3).uniform(size=(5, 8)).astype(np.float32)
    path = tmp_path / "x.npz"
    np.savez(path, x=x)
    from_file = compare_configs(small_onnx, ["ort-cpu:fp32"], input_path=path)
    assert from_file.feeds_description == f"from {path}" and from_file.feed_shapes == {"x": [5, 8]}
    given = compare_configs(small_onnx, ["ort-cpu:fp32"], feeds={"x": x})
    assert given.feeds_description == "given by the caller" and given.passed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"configs": ["nope:fp32"]}, "unknown runtime"),
        ({"configs": ["ort-cpu:fp64"]}, "unknown precision"),
        ({"configs": ["ort-cpu:int8"]}, "no fp32 configuration"),
        ({"configs": ["ort-cpu:fp32", "ort-cpu"]}, "given twice"),
        ({"configs": ["ort-cpu:fp32"], "feeds": {"wrong": np.zeros((1, 8), np.float32)}}, "wrong"),
        ({"configs": ["ort-cpu:fp32"], "feeds": {"x": np.zeros((1, 9), np.float32)}}, "axis 1"),
        ({"configs": ["ort-cpu:fp32"], "labels": np.array([1, 2, 3])}, "labels"),
        ({"configs": ["ort-cpu:fp32"], "labels": np.array([0.5])}, "integer"),
        ({"configs": ["ort-cpu:fp32"], "options": {"torch-cpu": {}}}, "not among"),
        ({"configs": ["ort-cpu:fp32"], "input_ranges": {"nope": (0, 1)}}, "nope"),
        ({"configs": []}, "no configuration"),
    ],
)
def test_user_mistakes_raise_before_anything_runs(small_onnx: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(RtpickError, match=message):
        compare_configs(small_onnx, **kwargs)


def test_bad_option_value_is_an_error_row(small_onnx: Path) -> None:
    result = compare_configs(small_onnx, ["ort-cpu:fp32"], options={"ort-cpu": {"graph_optimization": "max"}})
    assert result.rows[0].status == STATUS_ERROR and "graph_optimization" in result.rows[0].reason


@_torch_cpu_skip()
def test_ort_cpu_and_torch_cpu_agree_on_the_bundled_model() -> None:
    data = np.load(ASSETS / "digits_eval.npz")
    result = rtpick.compare(
        "rtpick:digits", ["ort-cpu:fp32", "torch-cpu:fp32", "torch-cpu:bf16"],
        feeds={"image": data["image"][:200]}, labels=data["label"][:200],
    )
    rows = {row.config: row for row in result.rows}
    assert result.passed, [(r.config, r.status, r.reason) for r in result.rows]
    assert rows["torch-cpu:fp32"].max_abs < 1e-4
    assert rows["torch-cpu:fp32"].top1_agreement == 1.0
    assert rows["torch-cpu:bf16"].cosine > 0.999
    for row in result.rows:
        assert row.accuracy is not None and row.accuracy >= 0.95


@_torch_cpu_skip()
def test_a_torch_module_source_runs_on_ort_and_torch() -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()
    model = load_model(module, input_specs={"x": (2, 3, 16, 16)})
    result = compare_configs(model, ["torch-cpu:fp32", "ort-cpu:fp32"], batch=4)
    assert result.reference == "torch-cpu:fp32"
    assert result.passed, [(r.config, r.status, r.reason) for r in result.rows]
    assert result.row("ort-cpu:fp32").max_abs < 1e-4


def test_output_metrics_gives_each_precisions_verdict() -> None:
    from rtpick.comparison.metrics import output_metrics, within_tolerance

    rng = np.random.default_rng(2)
    ref = (rng.standard_normal((32, 10)) * 5).astype(np.float32)
    cand = ref * (1 + rng.uniform(-8e-3, 8e-3, ref.shape)).astype(np.float32)
    metrics = output_metrics(ref, cand)
    assert metrics["max_abs_error"] == pytest.approx(float(np.abs(cand.astype(np.float64) - ref).max()))
    assert metrics["top1_agreement"] is not None
    assert within_tolerance(metrics, "bf16") and not within_tolerance(metrics, "fp32")
    json.dumps(metrics, allow_nan=False)


def test_public_functions_stay_functions_after_their_modules_load(small_onnx: Path) -> None:
    import rtpick.comparison.run  # noqa: F401
    import rtpick.perf.run  # noqa: F401
    import rtpick.recommendation  # noqa: F401

    rtpick.compare(small_onnx, ["ort-cpu:fp32"])
    for name in ("compare", "bench", "recommend", "load"):
        function = getattr(rtpick, name)
        assert callable(function) and function.__module__ == "rtpick.api", name


def test_top1_gates_only_outputs_that_hold_class_scores() -> None:
    from rtpick.comparison.metrics import holds_class_scores
    from rtpick.model import ModelSpec, TensorSpec

    def spec(*names: str) -> ModelSpec:
        return ModelSpec("m", (), tuple(TensorSpec(n, "float32", ("batch", 768)) for n in names), "onnx", "0")

    assert holds_class_scores("output", spec("output"))  # a model's only output
    assert holds_class_scores("logits", spec("logits", "hidden"))
    assert not holds_class_scores("output_1", spec("output_0", "output_1"))  # e.g. BERT's pooled embedding
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((32, 768)).astype(np.float32)
    cand = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)  # near-ties flip some arg-maxes
    fp16 = tolerance_for("fp16")
    as_scores = check_output("pooled", cand, ref, fp16)
    as_embedding = check_output("pooled", cand, ref, fp16, scores=False)
    assert as_embedding.top1_agreement is None
    assert as_embedding.rel_l2 == as_scores.rel_l2


def test_rows_carry_the_options_they_ran_with() -> None:
    """A figure is only reproducible with its configuration: the options a runtime got are in the row."""
    import rtpick

    result = rtpick.compare("rtpick:digits", ["ort-cpu:fp32"], batch=2,
                            options={"ort-cpu": {"threads": 1}})
    row = result.rows[0]
    assert row.options == {"threads": 1}
    assert row.label == "ort-cpu:fp32 threads=1"
    assert result.to_dict()["rows"][0]["options"] == {"threads": 1}


def test_lent_sessions_run_in_chunks_of_their_batch_and_stay_open() -> None:
    """`recommend` lends the sessions its search measures: each is asked for once, at the chunk's shapes, the
    rows run through it `chunk` at a time (the last chunk topped up, its extra rows cut off), and it is not
    closed; the verdicts and outputs are those of a whole-batch comparison."""
    from rtpick.runtimes.registry import get_runtime

    model = load_model("rtpick:digits")
    name = model.spec.inputs[0].name
    lent: list[tuple[str, dict]] = []
    built: dict[str, object] = {}

    def sessions(runtime: str, precision: str, options: dict, shapes: dict) -> object:
        lent.append((f"{runtime}:{precision}", shapes))
        session = get_runtime(runtime).build(model, precision, dict(shapes), **options)
        built[f"{runtime}:{precision}"] = session
        return session

    chunked = compare_configs(model, ["ort-cpu:fp32", "torch-cpu:fp32"], batch=10, sessions=sessions, chunk=4)
    whole = compare_configs(model, ["ort-cpu:fp32", "torch-cpu:fp32"], batch=10)
    assert [config for config, _ in lent] == ["ort-cpu:fp32", "torch-cpu:fp32"]
    assert all(shapes[name][0] == 4 for _, shapes in lent)
    rows = {row.config: row for row in chunked.rows}
    assert rows["torch-cpu:fp32"].status == STATUS_PASS, rows["torch-cpu:fp32"].reason
    assert [row.status for row in chunked.rows] == [row.status for row in whole.rows]
    assert chunked.feed_shapes == whole.feed_shapes and chunked.feed_shapes[name][0] == 10
    mine, theirs = rows["torch-cpu:fp32"].outputs[0], whole.rows[1].outputs[0]
    assert mine.shape == theirs.shape and mine.shape[0] == 10
    assert mine.max_abs == pytest.approx(theirs.max_abs, abs=1e-5)
    session = built["ort-cpu:fp32"]
    shape = (3, *chunked.feed_shapes[name][1:])
    assert session.run({name: np.zeros(shape, np.float32)})  # still open: the lender closes it
    for s in built.values():
        s.close()


def test_top1_flips_on_near_ties_are_not_wrong_answers_but_decisive_flips_are() -> None:
    """fp16 right to 1e-3 norm-wise: near-tied rows (a random-init network's logits) may flip without failing;
    a flip where the reference's lead is far beyond the error fails, whatever the norm-wise error says."""
    rng = np.random.default_rng(0)
    tied = 5.0 + rng.standard_normal((32, 100)) * 1e-4  # every row: leads of ~1e-4 on scores of ~5
    noisy = tied * (1 + rng.standard_normal(tied.shape) * 1e-3)
    check = check_output("logits", noisy, tied, TOLERANCES["fp16"])
    assert check.top1_agreement is not None and check.top1_agreement < 0.9  # many ties broke the other way
    assert check.top1_decisive_rows == 0 and check.ok, check.reason

    decided = rng.standard_normal((32, 100))
    decided[np.arange(32), rng.integers(0, 100, 32)] += 10.0  # a clear winner in every row
    wrong = decided.copy()
    wrong[0] = decided[0][::-1]  # one row's answer changed outright
    check = check_output("logits", wrong, decided, TOLERANCES["fp16"])
    assert check.top1_decisive_rows == 32 and check.top1_decisive_agreement == pytest.approx(31 / 32)
    assert not check.ok and "top-1 agreement 0.969 < 0.99" in check.reason


def test_outputs_flushed_to_zero_say_the_reference_was_below_fp16s_range() -> None:
    """An untrained MobileNetV3's logits were ~5e-10 (H200 recommend run): fp16 made them all 0, cosine 0. The
    verdict stays a failure, and the reason says why the values vanished."""
    import numpy as np

    from rtpick.comparison.metrics import output_metrics

    reference = np.random.default_rng(0).normal(0, 2e-10, size=(4, 1000)).astype(np.float32)
    metrics = output_metrics(reference, np.zeros_like(reference))
    assert metrics["within"]["fp16"] is False
    assert "under fp16's smallest normal number" in metrics["reasons"]["fp16"]
    ordinary = np.random.default_rng(1).normal(0, 1.0, size=(4, 1000)).astype(np.float32)
    assert "smallest normal" not in output_metrics(ordinary, np.zeros_like(ordinary))["reasons"]["fp16"]


def test_top5_agreement_is_tie_aware() -> None:
    """Identical outputs whose rows are all ties (a model-zoo graph with its weights stripped) agree 100% in top-5,
    as they do in top-1; argpartition's arbitrary pick among ties scored them 0%."""
    flat = np.full((3, 1000), 0.001, np.float32)
    check = check_output("prob", flat, flat.copy(), tolerance_for("fp32"))
    assert check.top1_agreement == 1.0 and check.top5_agreement == 1.0
    scores = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    moved = scores.copy()
    moved[0, np.argmax(scores[0])] = scores[0].min() - 1  # row 0's reference class falls out of its top 5
    assert check_output("prob", moved, scores, tolerance_for("int8")).top5_agreement == 0.75
