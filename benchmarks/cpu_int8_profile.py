"""Where the time goes: ONNX Runtime's per-operator profile of fp32 and of rtpick's int8 choice, per corpus model.

For each model of the int8 corpus (`scripts/fetch_int8_corpus.py`) at batch 1, on one image of rendered text
(`cpu_int8.text_images`, normalised as the model's package does): the int8 variant rtpick's search keeps
(searched on a fresh private cache; where int8 is refused, the variant the search found best, and where no variant
kept the int8 tolerance, its first candidate), then fp32 as given, fp32 rewritten (the copy ``ort-cpu:fp32`` runs,
its decomposed HardSwish and scalar scale/shift fused: `rtpick.fused_model`; where there was something to
rewrite) and that int8 model
each run alone with
``SessionOptions.enable_profiling`` (3 warm-up runs, then 20 profiled ones) and their kernel times are summed per
operator type (ms per run). Profiling adds its own overhead: the totals say where time goes, not the latency
(`benchmarks/cpu_int8.py` measures that).

    PYTHONPATH=src python benchmarks/cpu_int8_profile.py --out benchmarks/results/cpu_int8_profile.md
"""

from __future__ import annotations

import argparse
import json
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
from cpu_int8 import corpus, results_header, text_images  # noqa: E402

from rtpick.errors import RtpickError  # noqa: E402
from rtpick.files import atomic_write_bytes  # noqa: E402

RUNS, WARM = 20, 3


def op_totals(path: Path, feed: dict[str, np.ndarray], folder: Path) -> tuple[dict[str, float], float]:
    """(ms per run spent in each operator type, median ms of a whole run) from ONNX Runtime's own profile."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(WARM + RUNS):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3 / (WARM + RUNS)
    runs = [event["dur"] / 1e3 for event in events if event.get("name") == "model_run"][WARM:]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])), float(np.median(runs))


def int8_of(name: str, path: Path, shape: str, normalise: str, folder: Path) -> tuple[Path, str]:
    """rtpick's int8 choice for the model (min_speedup 0: the best variant even where int8 is refused)."""
    from rtpick.data import parse_shape
    from rtpick.model import resolve_shapes
    from rtpick.quantize import quantize_int8
    from rtpick.quantize_search import choose_int8, cpu_features
    from rtpick.quantize_variants import candidates, op_counts
    from rtpick.sources import load_model

    model = load_model(str(path))
    shapes = resolve_shapes(model.spec.inputs, dict([parse_shape(shape)]) if shape else None, batch=1)
    (input_name, input_shape), = shapes.items()
    calibration = folder / f"{name}-calibration.npz"
    np.savez(calibration, **{input_name: text_images(32, input_shape, normalise, seed=0)})
    try:
        best, notes = choose_int8(model, shapes, str(calibration), 32, min_speedup=0)
        return best, notes[1]
    except RtpickError as exc:
        first = candidates(cpu_features(), op_counts(path))[0]
        built, _ = quantize_int8(model, shapes, str(calibration), 32, variant=first)
        return built, f"no variant kept the int8 tolerance ({str(exc)[:90]}...); profiled: {first.name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cpu_int8_profile.md")
    parser.add_argument("--models", default="", help="comma-separated subset of the corpus names")
    parser.add_argument("--top", type=int, default=10, help="operator types shown per model and precision")
    args = parser.parse_args()
    from rtpick.data import parse_shape
    from rtpick.fused_model import fp32_model
    from rtpick.model import resolve_shapes
    from rtpick.sources import load_model

    wanted = set(filter(None, args.models.split(",")))
    lines = results_header("Where the time goes: per-operator ONNX Runtime profile, fp32 vs rtpick's int8 choice",
                           "cpu_int8_profile.py", __doc__)
    models = list(corpus(wanted))  # found in the real cache, before it is pointed at a private one
    with tempfile.TemporaryDirectory(prefix="rtpick-int8-profile-") as tmp:
        folder = Path(tmp)
        os.environ["RTPICK_CACHE_DIR"] = str(folder / "cache")
        for entry, path, absent in models:
            if absent:
                lines += [f"## {entry.name}", "", absent, ""]
                continue
            int8, what = int8_of(entry.name, path, entry.shape, entry.normalise, folder)
            (input_spec,) = load_model(str(path)).spec.inputs
            shapes = resolve_shapes([input_spec], dict([parse_shape(entry.shape)]) if entry.shape else None, batch=1)
            feed = {input_spec.name: text_images(1, shapes[input_spec.name], entry.normalise, seed=2)}
            rewritten, _ = fp32_model(load_model(str(path)), shapes)  # what ort-cpu:fp32 runs
            files = {"fp32": path, **({"fp32 rewritten": rewritten} if rewritten != path else {}), "int8": int8}
            rows: dict[str, Any] = {label: op_totals(model_file, feed, folder) for label, model_file in files.items()}
            lines += [f"## {entry.name}", "", f"int8: {what}", "",
                      f"whole run, median of {RUNS} profiled: "
                      + ", ".join(f"{label} {rows[label][1]:.2f} ms" for label in rows)
                      + "; kernel time summed: "
                      + ", ".join(f"{label} {sum(rows[label][0].values()):.2f} ms" for label in rows), "",
                      "| precision | top operator types, ms per run |", "|---|---|"]
            for label in rows:
                top = list(rows[label][0].items())[:args.top]
                lines.append(f"| {label} | " + ", ".join(f"{op} {ms:.2f}" for op, ms in top) + " |")
            lines.append("")
            print(*lines[-len(rows) - 4:], sep="\n", flush=True)
    atomic_write_bytes(Path(args.out), "\n".join(lines).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
