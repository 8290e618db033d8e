"""Every int8 variant of a corpus model timed against fp32 in one interleaved run: the evidence behind the order
of `rtpick.quantize_variants.candidates` and the variants it leaves out.

For each chosen model of the int8 corpus (`scripts/fetch_int8_corpus.py`) at batch 1: quantise it as each named
variant below (calibrated on 24 images of rendered text, `cpu_int8.text_images` seed 0), check it on 8 others
(seed 1: cosine and top-1 agreement against fp32, never calibrated on), then time fp32 and all the variants that
built in one interleaved run (`rtpick.quantize_timing.measure`: rotating order, a pause and an untimed call before
each slot; median of the rounds). A variant can carry session options (``cfg``) as well. The accuracy gate of the
search is not applied here: the table shows every variant's figures.

    PYTHONPATH=src python benchmarks/cpu_int8_variants.py --models ddddocr-det,ppocr-det \\
        --out benchmarks/results/cpu_int8_variants.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from cpu_int8 import results_header, text_images  # noqa: E402
from fetch_int8_corpus import CORPUS, model_path  # noqa: E402

from rtpick.files import atomic_write_bytes  # noqa: E402
from rtpick.quantize import Variant  # noqa: E402

CONV = ("Conv", "MatMul", "Gemm")
# name -> (variant, ONNX Runtime session config entries)
VARIANTS: dict[str, tuple[Variant, dict[str, str]]] = {
    "qdq-all-u8": (Variant("qdq-all-u8", "qdq", "u8", ops=()), {}),
    "qop-all-u8": (Variant("qop-all-u8", "qoperator", "u8", ops=()), {}),
    "qdq-all-u8 +qdq_cleanup": (Variant("qdq-all-u8", "qdq", "u8", ops=()),
                                {"session.enable_quant_qdq_cleanup": "1"}),
    "qdq-all-s8": (Variant("qdq-all-s8", "qdq", "s8", ops=()), {}),
    "qdq-conv-u8": (Variant("qdq-conv-u8", "qdq", "u8", ops=CONV), {}),
    "qdq-conv-u8-nodw": (Variant("qdq-conv-u8-nodw", "qdq", "u8", ops=CONV, skip_depthwise=True), {}),
    "qop-conv-u8-nodw": (Variant("qop-conv-u8-nodw", "qoperator", "u8", ops=CONV, skip_depthwise=True), {}),
    "qop-conv-u8-pt-nodw": (Variant("qop-conv-u8-pt-nodw", "qoperator", "u8", False, ops=CONV,
                                    skip_depthwise=True), {}),
    "qdq-conv-u8-percentile": (Variant("qdq-conv-u8-pct", "qdq", "u8", ops=CONV, calibrate="percentile"), {}),
}


def session(path: Path, config: dict[str, str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def one_model(entry: Any, folder: Path) -> list[str]:
    from rtpick.comparison.metrics import output_metrics
    from rtpick.data import parse_shape
    from rtpick.model import resolve_shapes
    from rtpick.quantize import _quantize, _Reader
    from rtpick.quantize_timing import measure
    from rtpick.sources import load_model

    path = model_path(entry)
    model = load_model(str(path))
    shapes = resolve_shapes(model.spec.inputs, dict([parse_shape(entry.shape)]) if entry.shape else None, batch=1)
    (name, shape), = shapes.items()
    calibration = [{name: image[None]} for image in text_images(24, shape, entry.normalise, seed=0)]
    checks = [{name: image[None]} for image in text_images(8, shape, entry.normalise, seed=1)]
    feed = {name: text_images(1, shape, entry.normalise, seed=2)}
    sessions = {"fp32": session(path, {})}
    reference = np.concatenate([sessions["fp32"].run(None, c)[0].reshape(1, -1) for c in checks])
    accuracy: dict[str, str] = {}
    for label, (variant, config) in VARIANTS.items():
        target = folder / f"{entry.name}-{variant.name}.onnx"
        try:
            if not target.exists():
                _quantize(path, target, _Reader(iter(calibration)), variant, prepared_as=folder / f"prep-{entry.name}")
            sessions[label] = session(target, config)
        except Exception as exc:  # noqa: BLE001 - a variant failing is a row, not a crash
            accuracy[label] = f"failed: {str(exc).splitlines()[0][:80]}"
            continue
        out = np.concatenate([sessions[label].run(None, c)[0].reshape(1, -1) for c in checks])
        metrics = output_metrics(reference, out)
        top1 = metrics["top1_agreement"] if entry.kind == "classifier" else None
        accuracy[label] = f"{metrics['cosine']:.4f}" + (f" / {top1:.3f}" if top1 is not None else "")
    medians, rounds = measure(sessions, feed, budget_s=20.0, min_rounds=9, max_rounds=21)
    lines = [f"## {entry.name}", "", f"{rounds} interleaved rounds; load average at the end "
             f"{[round(x, 2) for x in os.getloadavg()]}", "",
             "| variant | p50 ms | ratio (fp32 p50 / p50) | cosine (/ top-1) on 8 held-out images |",
             "|---|---|---|---|"]
    for label in ("fp32", *VARIANTS):
        if label in medians:
            lines.append(f"| {label} | {medians[label] * 1e3:.2f} | {medians['fp32'] / medians[label]:.2f} | "
                         f"{accuracy.get(label, '-')} |")
        elif label in accuracy:
            lines.append(f"| {label} | - | - | {accuracy[label]} |")
        else:
            lines.append(f"| {label} | dropped after 3 rounds (>1.5x the best) | - | - |")
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cpu_int8_variants.md")
    parser.add_argument("--models", default="ddddocr-det,ppocr-det", help="comma-separated corpus names")
    args = parser.parse_args()
    wanted = set(filter(None, args.models.split(",")))
    lines = results_header("int8 variants against fp32, one interleaved run per model", "cpu_int8_variants.py",
                           __doc__)
    with tempfile.TemporaryDirectory(prefix="rtpick-int8-variants-") as tmp:
        for entry in CORPUS:
            if entry.name in wanted:
                if not model_path(entry).exists():
                    lines += [f"## {entry.name}", "", "absent: run scripts/fetch_int8_corpus.py", ""]
                    continue
                lines += one_model(entry, Path(tmp))
                print("\n".join(lines[-len(VARIANTS) - 3:]), flush=True)
    atomic_write_bytes(Path(args.out), "\n".join(lines).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
