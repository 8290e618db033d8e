"""Accuracy beside speed: each configuration's own session scores the labelled set."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

import rtpick
from rtpick.errors import RtpickError
from rtpick.perf import accuracy
from rtpick.sources import assets_dir, eval_set, load_model


def test_bundled_model_is_scored_in_padded_chunks() -> None:
    # batch 7 does not divide 540: the last chunk is padded, and the padding must not count
    results = rtpick.bench("rtpick:digits", "ort-cpu:fp32", batch=7, isolate=False, quick=True, duration_s=0.2)
    record = results.ok()[0]
    detail = record.accuracy_detail
    assert detail["n"] == 540 and detail["correct"] == round(record.accuracy * 540)
    assert record.accuracy == pytest.approx(537 / 540)  # the 99.44% the assets README states
    assert "chunks of batch 7" in detail["method"] and "digits_eval.npz" in detail["eval_set"]
    assert results.scenario["accuracy"] is True


def test_only_models_with_a_labelled_set_are_scored(small_onnx) -> None:
    assert eval_set("rtpick:digits") == assets_dir() / "digits_eval.npz"
    assert eval_set(str(small_onnx)) is None
    results = rtpick.bench(str(small_onnx), "ort-cpu:fp32", isolate=False, quick=True, duration_s=0.1)
    assert "accuracy" not in results.ok()[0].to_dict()
    skipped = rtpick.bench("rtpick:digits", "ort-cpu:fp32", isolate=False, quick=True, duration_s=0.1,
                           accuracy=False)
    assert "accuracy" not in skipped.ok()[0].to_dict() and "--no-accuracy" in skipped.command


def test_user_labels_and_their_mistakes(tmp_path) -> None:
    spec = load_model("rtpick:digits").spec
    with np.load(assets_dir() / "digits_eval.npz") as data:
        images, labels = data["image"][:60], data["label"][:60]
    np.savez(tmp_path / "x.npz", image=images)
    np.save(tmp_path / "y.npy", labels)
    entry = accuracy.plan("rtpick:digits", spec, str(tmp_path / "x.npz"), str(tmp_path / "y.npy"))
    assert entry is not None and entry["n"] == 60
    np.save(tmp_path / "short.npy", labels[:50])
    with pytest.raises(RtpickError, match="60 input rows but 50 labels"):
        accuracy.plan("rtpick:digits", spec, str(tmp_path / "x.npz"), str(tmp_path / "short.npy"))
    with pytest.raises(RtpickError, match="go together"):
        accuracy.plan("rtpick:digits", spec, str(tmp_path / "x.npz"), None)
    np.save(tmp_path / "float.npy", labels.astype(np.float32))
    with pytest.raises(RtpickError, match="whole-number"):
        accuracy.plan("rtpick:digits", spec, str(tmp_path / "x.npz"), str(tmp_path / "float.npy"))


def test_cli_input_and_labels(tmp_path) -> None:
    with np.load(assets_dir() / "digits_eval.npz") as data:
        np.savez(tmp_path / "x.npz", image=data["image"][:40])
        np.save(tmp_path / "y.npy", data["label"][:40])
    out = tmp_path / "r.json"
    done = run_cli("bench", "rtpick:digits", "--quick", "--duration", "0.2", "--batch", "8", "--no-isolate",
                   "--input", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy"), "--json", str(out))
    assert done.returncode == 0, done.stderr
    words = " ".join(done.stdout.split())  # rich wraps lines to the terminal's width
    assert "top-1" in words and "on 40 labelled rows" in words
    record = rtpick.results.Results.read(out).ok()[0]
    assert record.accuracy_detail["n"] == 40 and 0.9 <= record.accuracy <= 1.0
    bad = run_cli("bench", "rtpick:digits", "--quick", "--labels", str(tmp_path / "y.npy"))
    assert bad.returncode == 2 and "go together" in bad.stderr and "Traceback" not in bad.stderr
