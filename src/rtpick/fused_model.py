"""The fp32 ONNX file ``ort-cpu`` runs: the user's, or a verified copy with its element-wise chains fused.

Why: ONNX Runtime fuses none of the four element-wise ops paddle2onnx writes for each HardSwish, nor the scalar
scale and shift PP-OCRv4 puts after its convolutions; the rewritten form (`rtpick.onnx_fusion.fuse`) lets it fold
both into the convolution. On the corpus of ``scripts/fetch_int8_corpus.py`` the HardSwish rewrite alone made
fp32 itself 1.08-1.66x faster (``benchmarks/results/cpu_int8.md``, fp32 as given against fp32 rewritten), so fp32
gets it too, which also keeps int8's measured speed-up honest: int8 is judged against the fp32 a user would run,
not against a slower one.

The user's file is never changed: the copy lives in the cache, keyed by the model's hash, and is used only after
it gave the given model's outputs within `compare`'s fp32 tolerance on fresh random inputs (a NaN or Inf in
either output fails the check: nothing is proven on such an input). What was found is recorded beside the copy
(verified, unchanged, or refused with the reason), so the check runs once per model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes, read_json, write_json
from rtpick.model import Model, resolve_shapes
from rtpick.settings import cache_dir

FUSION_VERSION = "fused-v2"  # bump when `rtpick.onnx_fusion` rewrites differently (v2: scalar affine folded too)
CHECKS = 2  # random inputs the copy is verified on: uniform [0, 1) and uniform [-4, 4) for float inputs


def _record(model: Model) -> Path:
    return cache_dir() / "onnx" / f"{model.spec.sha256[:32]}-fp32-{FUSION_VERSION}.json"


def fp32_model(model: Model, shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[Path, str]:
    """(the fp32 file to run, a note for the session: '' when it is the user's file as given).

    `shapes` are the input shapes the caller will use; the check runs at them (dynamic batch axes at 1). Without
    concrete shapes the copy cannot be checked, so the given file is used and the note says why."""
    source = model.onnx_path()
    record_path = _record(model)
    copy = record_path.with_suffix(".onnx")
    if record_path.exists():
        try:
            record = read_json(record_path, "fp32 rewrite record")
        except RtpickError:
            record = {}
        if record.get("status") == "verified" and copy.exists():
            return copy, record["note"]
        if record.get("status") in ("unchanged", "refused"):
            return source, record.get("note", "")
    try:
        rewritten = _rewritten(source)
    except Exception:  # noqa: BLE001 - a model the rewrite cannot read (malformed tensors): it runs as given,
        rewritten = None  # and ONNX Runtime says in one line what is wrong with it
    if rewritten is None:
        write_json(record_path, {"status": "unchanged", "note": ""}, "fp32 rewrite record")
        return source, ""
    proto, described = rewritten
    try:
        concrete = resolve_shapes(model.spec.inputs, dict(shapes or {}), batch=1)
    except RtpickError:
        return source, (f"fp32 runs the model as given: {described} would be possible, but it is verified at "
                        "concrete input shapes first (give shapes)")
    problem, worst, settled = _verify(source, proto.SerializeToString(), model, concrete)
    if problem:
        note = f"fp32 runs the model as given: {described}, but the copy was refused ({problem})"
        if settled:  # the outputs differed: a finding about this model, kept; an error may pass next time
            write_json(record_path, {"status": "refused", "note": note}, "fp32 rewrite record")
        return source, note
    atomic_write_bytes(copy, proto.SerializeToString())
    note = (f"fp32 runs a cached copy with {described}, equal to the given model within fp32 tolerance on "
            f"{CHECKS} random inputs (max abs error {worst:.2g}); the given file is unchanged")
    write_json(record_path, {"status": "verified", "note": note, "checked_at": {k: list(v) for k, v in
                                                                             concrete.items()}},
               "fp32 rewrite record")
    return copy, note


def _rewritten(source: Path) -> tuple[Any, str] | None:
    """The rewritten model and what was done, or None when there is nothing to rewrite (or the model keeps its
    weights in external files or is too large for one protobuf, which a copy in the cache would not carry)."""
    import onnx

    from rtpick.onnx_fusion import fuse

    if source.stat().st_size >= 2**31:
        return None
    proto = onnx.load(str(source), load_external_data=False)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        return None
    rewritten, report = fuse(proto)
    return (rewritten, report.describe()) if report.total else None


def _verify(source: Path, candidate: bytes, model: Model,
            shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, float, bool]:
    """('', max abs error, True) when the candidate's outputs match the source's within fp32 tolerance on `CHECKS`
    random inputs; else (the first reason, nan, whether that is settled: outputs that differ are, an error on the
    way is not). Both run as ort-cpu runs them (all graph optimisations)."""
    import tempfile

    from rtpick.data import synthetic_feeds
    from rtpick.quantize_timing import timing_session

    floats = {spec.name: (-4.0, 4.0) for spec in model.spec.inputs if np.dtype(spec.dtype).kind == "f"}
    worst = 0.0
    try:
        with tempfile.TemporaryDirectory(prefix="rtpick-fused-") as tmp:
            path = Path(tmp) / "fused.onnx"
            path.write_bytes(candidate)
            given, rewritten = timing_session(source), timing_session(path)
        for seed, ranges in enumerate([None, floats][:CHECKS]):
            feeds = synthetic_feeds(model.spec.inputs, shapes, seed=90_000 + seed, ranges=ranges)
            pairs = zip(given.run(None, feeds), rewritten.run(None, feeds))
            for index, (ref, out) in enumerate(pairs):
                problem, error = _compare(np.asarray(ref), np.asarray(out))
                if problem:
                    return f"output {index} on a random input: {problem}", float("nan"), True
                worst = max(worst, error)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's (or the feeds') errors: the given model still runs
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0][:160] if text else ''}", float("nan"), False
    return "", worst, True


def _compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[str, float]:
    """('', max abs error) when `candidate` is `reference` within fp32 tolerance, else why not. NaN or Inf in
    either fails: equality is not shown on such an input."""
    from rtpick.comparison.metrics import output_metrics, within_tolerance

    if reference.dtype.kind != "f":
        same = reference.shape == candidate.shape and np.array_equal(reference, candidate)
        return ("" if same else "differs"), 0.0
    if not (np.isfinite(reference).all() and np.isfinite(candidate).all()):
        return "NaN or Inf in an output", float("nan")
    metrics = output_metrics(reference, candidate)
    if not within_tolerance(metrics, "fp32"):
        return metrics["reasons"].get("fp32", "out of fp32 tolerance"), float("nan")
    return "", float(metrics["max_abs_error"] or 0.0)
