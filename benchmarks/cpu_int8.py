"""CPU int8 against fp32 on real models: does `ort-cpu:int8` build, is it faster, does it keep the answers?

For every model of the corpus (`scripts/fetch_int8_corpus.py`: ONNX files shipped in public packages' wheels;
absent ones are skipped with the reason) and a small BERT-like encoder exported here from torch (dynamic int8),
at batch 1 (corpus models on images of rendered text, see `text_images`; the encoder on synthetic ids):

- builds ``ort-cpu:fp32`` and ``ort-cpu:int8`` through rtpick (int8 runs its variant search: time recorded) and,
  as the baseline of issue 16, ONNX Runtime's ``quantize_static`` with default settings (QDQ, s8 activations and
  weights, per-tensor, MinMax) on the same opset-13, pre-processed graph;
- times fp32 as given, fp32 rewritten (the copy ``ort-cpu:fp32`` runs, its decomposed HardSwish activations
  and scalar scale/shift after convolutions fused: `rtpick.fused_model`; only where there was something to
  rewrite), rtpick int8 and the default int8
  interleaved (rounds in rotating order; each slot a pause
  for the previous session's workers to stop spinning and one untimed warm call: `rtpick.quantize_timing`;
  median of the per-round means), so a busy neighbour on a shared machine slows all of them alike, and reports
  p50 ratios against both fp32s (the search judges int8 against fp32 rewritten). Where rtpick refuses int8, the
  search's best variant (or, when no variant kept the int8 tolerance, its first candidate) is timed and checked
  all the same and marked "refused": what int8 would have given;
- compares int8's outputs with fp32's on 32 inputs not used to calibrate: cosine, and top-1 agreement where the output
  is class scores.

    PYTHONPATH=src python scripts/fetch_int8_corpus.py
    PYTHONPATH=src python benchmarks/cpu_int8.py --cold --out benchmarks/results/cpu_int8.json

``--cold`` puts every cache but the corpus in a fresh temporary folder, so each int8 choice is searched (and its
time measured) from scratch.

Writes a JSON file and a Markdown table beside it (same stem), with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_int8_corpus import CORPUS, model_path  # noqa: E402

import rtpick  # noqa: E402
from rtpick.data import parse_shape, synthetic_feeds  # noqa: E402
from rtpick.files import atomic_write_bytes, write_json  # noqa: E402
from rtpick.fused_model import fp32_model  # noqa: E402
from rtpick.quantize import quantize_int8  # noqa: E402
from rtpick.quantize_search import choose_int8, cpu_features, measure  # noqa: E402
from rtpick.quantize_timing import timing_session  # noqa: E402
from rtpick.quantize_variants import candidates, op_counts  # noqa: E402


def bert_like(folder: Path, width: int = 256, layers: int = 4, sequence: int = 128) -> Path:
    """A BERT-like encoder (token ids -> 2 class scores: embedding, `layers` blocks of 4-head self-attention and
    a 4x MLP with LayerNorms, mean pooling), random weights, exported to ONNX from torch (opset 17)."""
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
            self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)
            self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, length, _ = x.shape
            q, k, v = self.qkv(x).reshape(batch, length, 3, 4, width // 4).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-1, -2) / (width // 4) ** 0.5, dim=-1)
            x = self.norm1(x + self.out((attention @ v).transpose(1, 2).reshape(batch, length, width)))
            return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1000, width)
            self.blocks = torch.nn.Sequential(*[Block() for _ in range(layers)])
            self.head = torch.nn.Linear(width, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.embed(ids)).mean(1))

    path = folder / "bert-like.onnx"
    with torch.no_grad():
        torch.onnx.export(Encoder().eval(), (torch.randint(0, 1000, (1, sequence)),), str(path),
                          input_names=["ids"], output_names=["logits"], dynamic_axes={"ids": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


def text_images(count: int, shape: tuple[int, ...], normalise: str, seed: int) -> np.ndarray:
    """Images of rendered text (random capital letters, PIL's default font, dark on white), laid out as the
    model's input (N, 3, H, W) and normalised as the model's package does: the OCR and layout models of the
    corpus answer nothing on noise (the detector's fp32 probability map on uniform noise peaks at 8e-5), so
    their int8 error can only be judged on inputs that look like their data. Not real photographs."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    height, width = shape[-2], shape[-1]
    images = []
    for _ in range(count):
        image = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 6))):
            text = "".join(chr(c) for c in rng.integers(65, 91, size=int(rng.integers(3, 10))))
            low = max(8, min(height // 4, 24))
            size = int(rng.integers(low, max(low + 1, min(height, 40))))
            draw.text((int(rng.integers(0, max(1, width - 60))), int(rng.integers(0, max(1, height - size)))), text,
                      fill=tuple(int(v) for v in rng.integers(0, 90, 3)), font=ImageFont.load_default(size=size))
        pixels = np.asarray(image, np.float32)
        if normalise == "imagenet":
            pixels = (pixels / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        elif normalise == "half":
            pixels = (pixels / 255 - 0.5) / 0.5
        images.append(pixels.transpose(2, 0, 1))
    return np.stack(images).astype(np.float32)


def ort_default_int8(source: Path, calibration: list[dict[str, np.ndarray]], folder: Path) -> Path:
    """ONNX Runtime's quantize_static with its defaults, on the same prepared graph and data rtpick uses."""
    from onnxruntime.quantization import quantize_static

    from rtpick.quantize import _inside, _preprocess, _upgrade_opset

    target = folder / f"{source.stem}-ort-default-int8.onnx"
    feeds = iter(calibration)

    class Reader:
        def get_next(self) -> Any:
            return next(feeds, None)

    with _inside(folder):
        upgraded, _ = _upgrade_opset(source, folder)
        prepared, _ = _preprocess(upgraded, folder)
        quantize_static(str(prepared), str(target), Reader())
    return target


def one_model(name: str, path: Path, kind: str, shape: str, folder: Path, normalise: str = "") -> dict[str, Any]:
    """Build, check and time one model; `normalise` set: inputs are rendered-text images, else synthetic."""

    from rtpick.comparison.metrics import output_metrics
    from rtpick.model import resolve_shapes
    from rtpick.sources import load_model as load_source

    given = dict([parse_shape(shape)]) if shape else None
    row: dict[str, Any] = {"model": name, "kind": kind, "file": path.name}
    loaded = load_source(str(path))
    shapes = resolve_shapes(loaded.spec.inputs, given, batch=1)
    row["shape"] = {k: list(v) for k, v in shapes.items()}
    options: dict[str, Any] = {}
    if normalise:
        (input_name, input_shape), = shapes.items()
        calibration = folder / f"{name}-calibration.npz"
        np.savez(calibration, **{input_name: text_images(32, input_shape, normalise, seed=0)})
        options["calibration"] = str(calibration)
        calibration_feeds = [{input_name: image[None]} for image in np.load(calibration)[input_name]]
        checks = [{input_name: image[None]} for image in text_images(32, input_shape, normalise, seed=1)]
        feed = {input_name: text_images(1, input_shape, normalise, seed=2)}
        row["inputs"] = f"rendered-text images ({normalise} normalisation): 32 to calibrate, 32 others to check"
    else:
        calibration_feeds = [synthetic_feeds(loaded.spec.inputs, shapes, seed=i) for i in range(32)]
        checks = [synthetic_feeds(loaded.spec.inputs, shapes, seed=50_000 + i) for i in range(32)]
        feed = synthetic_feeds(loaded.spec.inputs, shapes, seed=12345)
        row["inputs"] = "synthetic (rtpick's default calibration: 32 samples); 32 others to check"
    sessions: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        int8 = rtpick.load(str(path), "ort-cpu", "int8", shapes=shapes, **options)
        row["int8_build"] = "ok"
        row["int8_notes"] = list(int8.info.notes)
        int8.close()
    except rtpick.errors.RtpickError as exc:
        row["int8_build"] = f"refused: {exc}"
    row["int8_choice_s"] = round(time.perf_counter() - started, 1)
    sessions["fp32"] = timing_session(path)
    rewritten, row["fp32_rewrite"] = fp32_model(loaded, shapes)  # what ort-cpu:fp32 runs (rtpick.fused_model)
    if rewritten != path:
        sessions["fp32-rewritten"] = timing_session(rewritten)
    try:  # the variant the search kept, refused or not: the cached choice, nothing measured again
        best, notes = choose_int8(loaded, shapes, options.get("calibration"), 32, min_speedup=0)
        sessions["rtpick-int8"] = timing_session(best)
        row["int8_variant_notes"] = notes
        record = json.loads(Path(notes[2].split(": ", 1)[1]).read_text())
        row["search"] = {key: record[key] for key in ("variant", "ratio", "rounds", "search_s", "calibration",
                                                      "tried")}
        row["search"]["variant"] = record["variant"]["name"]
        row["nodes"] = {"int8_conv_matmul_gemm": len(record["nodes"]["quantised"]),
                        "fp32_conv_matmul_gemm": len(record["nodes"]["fp32"]),
                        "other_ops_int8": record["nodes"].get("other_ops_int8", {}),
                        "other_ops_fp32": record["nodes"]["other_ops_fp32"]}
    except rtpick.errors.RtpickError as exc:  # no variant kept the int8 tolerance: show the first candidate's
        first = candidates(cpu_features(), op_counts(path))[0]  # figures anyway, marked as refused
        built, _ = quantize_int8(loaded, shapes, options.get("calibration"), 32, variant=first)
        sessions["rtpick-int8"] = timing_session(built)
        row["int8_variant_notes"] = [f"no variant kept the int8 tolerance ({exc}); timed and checked here: "
                                     f"{first.name}, outside the gate"]
        row["search"] = {"variant": f"{first.name}, inaccurate", "ratio": "-", "calibration": "-"}
        found = re.search(r"details in (\S+\.json)\)", str(exc))
        if found and Path(found.group(1)).is_file():  # the search's own record: what it tried, on which inputs
            record = json.loads(Path(found.group(1)).read_text())
            row["search"].update(calibration=record["calibration"], search_s=record["search_s"],
                                 tried=record["tried"])
    try:
        default = ort_default_int8(path, calibration_feeds, folder)
        sessions["ort-default-int8"] = timing_session(default)
        row["ort_default_build"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the baseline failing is a finding, not a crash
        row["ort_default_build"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    medians, rounds = measure(sessions, feed, budget_s=15.0, min_rounds=9, max_rounds=21, drop=False)
    row["rounds"] = rounds
    row["p50_ms"] = {key: round(value * 1e3, 3) for key, value in medians.items()}
    row["speedup_vs_fp32"] = {key: round(medians["fp32"] / value, 3) for key, value in medians.items()
                              if key != "fp32"}
    fp32_run = medians.get("fp32-rewritten", medians["fp32"])  # the same file when nothing was rewritten
    row["p50_ms"].setdefault("fp32-rewritten", row["p50_ms"]["fp32"])
    row["speedup_vs_fp32_rewritten"] = {key: round(fp32_run / value, 3) for key, value in medians.items()
                                        if key not in ("fp32", "fp32-rewritten")}
    reference = [sessions["fp32"].run(None, feed_)[0] for feed_ in checks]
    for key in ("rtpick-int8", "ort-default-int8"):
        if key not in sessions:
            continue
        outputs = [sessions[key].run(None, feed_)[0] for feed_ in checks]
        ref, out = np.concatenate(reference), np.concatenate(outputs)
        if ref.ndim > 2:
            ref, out = ref.reshape(len(checks), -1), out.reshape(len(checks), -1)
        metrics = output_metrics(ref, out)
        row.setdefault("accuracy", {})[key] = {
            "cosine": round(float(metrics["cosine"]), 5),
            "top1_agreement": (round(float(metrics["top1_agreement"]), 4)
                               if kind == "classifier" and metrics["top1_agreement"] is not None else None),
        }
    return row


def corpus(wanted: set[str]) -> Iterator[tuple[Any, Path, str | None]]:
    """(entry, path, why it is absent or None) for each corpus model asked for (every one when `wanted` is
    empty); the corpus stays where scripts/fetch_int8_corpus.py put it."""
    for entry in CORPUS:
        if wanted and entry.name not in wanted:
            continue
        path = model_path(entry)
        yield entry, path, None if path.exists() else f"absent ({path}); run scripts/fetch_int8_corpus.py"


def results_header(title: str, script: str, doc: str | None) -> list[str]:
    """The first lines of a results file: title, the command that made it, its method (the script docstring's
    second paragraph), and the machine's load."""
    return [f"# {title}", "", f"Command: `PYTHONPATH=src python benchmarks/{script} {' '.join(sys.argv[1:])}`", "",
            (doc or "").split("\n\n")[1].replace("\n", " "), "",
            f"Load average at start (1/5/15 min): {[round(x, 2) for x in os.getloadavg()]}; 2-core machine shared "
            "with other engineers.", ""]


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _status(row: dict[str, Any]) -> str:
    if row["int8_build"] == "ok":
        return "ok"
    if "not faster" in row["int8_build"]:
        return "refused: not faster"
    return "refused: inaccurate" if "tolerance" in row["int8_build"] else row["int8_build"][:60]


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# CPU int8 vs fp32 ({payload['machine']['cpu']}, {payload['machine']['cores']} cores, "
             f"onnxruntime {payload['machine']['onnxruntime']})", "",
             f"Machine shared: {payload['machine']['shared']} (load average, 1/5/15 min: "
             f"{payload['machine']['load_average_1_5_15_min']}).", "",
             f"Command: `{payload['command']}`", "", payload["method"], "",
             "| model | kind | rtpick int8 | variant (search's ratio) | fp32 as given p50 ms | fp32 rewritten p50 ms "
             "(ratio) | int8 p50 ms | int8 ratio vs fp32 as given | int8 ratio vs fp32 rewritten | "
             "ORT-default int8 ratio | cosine | top-1 agr. | choice s (load / search) |", "|---" * 13 + "|"]
    for row in payload["models"]:
        if "skipped" in row:
            lines.append(f"| {row['model']} | skipped: {row['skipped']} ||||||||||||")
            continue
        p50, ratio, honest = row["p50_ms"], row["speedup_vs_fp32"], row["speedup_vs_fp32_rewritten"]
        rewrite = (f"{p50['fp32-rewritten']} ({ratio['fp32-rewritten']}x)" if "fp32-rewritten" in ratio
                   else "same file: nothing to rewrite")
        acc = row.get("accuracy", {}).get("rtpick-int8", {})
        search = row.get("search", {})
        refused = " (refused)" if row["int8_build"] != "ok" and "rtpick-int8" in ratio else ""
        lines.append(
            f"| {row['model']} | {row['kind']} | {_status(row)} | {search.get('variant', '-')} "
            f"({search.get('ratio', '-')}x) | {p50['fp32']} | {rewrite} | {p50.get('rtpick-int8', '-')}{refused} | "
            f"{ratio.get('rtpick-int8', '-')}{refused} | {honest.get('rtpick-int8', '-')}{refused} | "
            f"{ratio.get('ort-default-int8', '-')} | "
            f"{acc.get('cosine', '-')}{refused} | {acc.get('top1_agreement', '-')}{refused} | "
            f"{row['int8_choice_s']} / {search.get('search_s', '-')} |")
    lines += ["", "Inputs and what each search did:", ""]
    for row in payload["models"]:
        if "skipped" not in row:
            nodes, search = row.get("nodes", {}), row.get("search", {})
            tried = search.get("tried", [])
            kept = (f"{nodes.get('int8_conv_matmul_gemm', 0)} Conv/MatMul/Gemm in int8, "
                    f"{nodes.get('fp32_conv_matmul_gemm', 0)} left fp32, other ops in int8: "
                    f"{nodes.get('other_ops_int8', {})}" if nodes else "no variant kept")
            lines.append(f"- {row['model']}: {row['inputs']}; search: {search.get('calibration', '-')}; "
                         f"{len(tried)} variants tried, {sum(t['status'] == 'accurate' for t in tried)} accurate; "
                         f"{kept}")
    lines += ["", "Where the time goes (per-operator profiles of fp32 and of these int8 choices): "
              "cpu_int8_profile.md, made by benchmarks/cpu_int8_profile.py.", "", "Targets (issue 16):", "",
              *[f"- {line}" for line in payload["summary"]], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cpu_int8.json")
    parser.add_argument("--models", default="", help="comma-separated subset of the corpus names and bert-like")
    parser.add_argument("--cold", action="store_true", help="search every int8 choice from scratch (private cache)")
    args = parser.parse_args()
    wanted = set(filter(None, args.models.split(",")))
    load_before = os.getloadavg()
    rows = []
    models = list(corpus(wanted))  # found in the real cache, before --cold points the cache elsewhere
    with tempfile.TemporaryDirectory(prefix="rtpick-int8-bench-") as tmp:
        folder = Path(tmp)
        if args.cold:
            os.environ["RTPICK_CACHE_DIR"] = str(folder / "cache")
        for entry, path, absent in models:
            if absent:
                rows.append({"model": entry.name, "skipped": absent})
                continue
            rows.append(one_model(entry.name, path, entry.kind, entry.shape, folder, entry.normalise))
            print(rows[-1]["model"], rows[-1]["int8_build"][:80], rows[-1]["speedup_vs_fp32"], flush=True)
        if not wanted or "bert-like" in wanted:
            rows.append(one_model("bert-like", bert_like(folder), "classifier", "", folder))
            print(rows[-1]["model"], rows[-1]["int8_build"][:80], rows[-1]["speedup_vs_fp32"], flush=True)
    measured = [r for r in rows if "skipped" not in r]
    cnn = [r for r in measured if r["model"] not in ("bert-like", "ppocr-rec")]  # ppocr-rec: conv + attention

    # int8 is judged against the fp32 ort-cpu runs (rewritten where rtpick.fused_model rewrote it): the honest
    # ratio; "as given" ratios say what the user gains over running their file unchanged.
    def effective(row: dict[str, Any]) -> float:  # a refused int8 means the user runs fp32: 1.0x
        return row["speedup_vs_fp32_rewritten"].get("rtpick-int8", 1.0) if row["int8_build"] == "ok" else 1.0

    def best(row: dict[str, Any]) -> float:  # the search's best variant, kept or refused
        return row["speedup_vs_fp32_rewritten"].get("rtpick-int8", float("nan"))

    def over_given(row: dict[str, Any]) -> float:  # what ort-cpu runs now (int8 if kept, else fp32 rewritten)
        key = "rtpick-int8" if row["int8_build"] == "ok" else "fp32-rewritten"
        return row["speedup_vs_fp32"].get(key, 1.0)

    classifiers = [r for r in measured if r["kind"] == "classifier"]
    top1 = {r["model"]: r.get("accuracy", {}).get("rtpick-int8", {}).get("top1_agreement") for r in classifiers}
    choice = {r["model"]: r["int8_choice_s"] for r in measured}
    cnn_geomean = geomean([effective(r) for r in cnn])
    summary = [
        f"int8 builds (or is refused as slower, with its ratio) on {len(measured)}/{len(measured)} models; built on "
        f"{sum(r['int8_build'] == 'ok' for r in measured)}: MET",
        f"geomean speed-up over the CNNs ({', '.join(r['model'] for r in cnn)}) at batch 1, rtpick int8 against "
        f"the fp32 ort-cpu runs (rewritten; refused = 1.0x, fp32 is what runs): {cnn_geomean:.2f}x; the best "
        f"variants' own, refused ones included: {geomean([best(r) for r in cnn]):.2f}x; against fp32 as given: "
        f"rtpick int8 {geomean([r['speedup_vs_fp32'].get('rtpick-int8', float('nan')) for r in cnn]):.2f}x, "
        f"fp32 rewritten {geomean([r['speedup_vs_fp32'].get('fp32-rewritten', 1.0) for r in cnn]):.2f}x, what "
        f"ort-cpu runs now (int8 where kept, else fp32 rewritten) {geomean([over_given(r) for r in cnn]):.2f}x, "
        f"ONNX Runtime's default int8 "
        f"{geomean([r['speedup_vs_fp32'].get('ort-default-int8', float('nan')) for r in cnn]):.2f}x; target >= 1.8x "
        f"(int8 against the fp32 ort-cpu runs): {'MET' if cnn_geomean >= 1.8 else 'NOT MET'}",
        "rtpick int8 p50 <= the p50 of the fp32 ort-cpu runs (refused = fp32 runs): " + ", ".join(
            f"{r['model']} ({effective(r):.2f}x)" for r in measured)
        + (": MET" if all(effective(r) >= 1.0 for r in measured) else ": NOT MET"),
        "top-1 agreement of the best int8 variant against fp32 on the 32 check inputs, classifiers (>= 99%): "
        + ", ".join(f"{r['model']} {top1[r['model']]} ({r.get('search', {}).get('variant', '-')}"
                    + ("" if r["int8_build"] == "ok" else f"; {_status(r)}") + ")" for r in classifiers)
        + (": MET" if all(v is not None and v >= 0.99 for v in top1.values()) else ": NOT MET"),
        f"choice time per model (s, the whole rtpick.load of int8, choice cache cold unless the command ran with "
        f"one): {choice}; target <= 60 s: "
        + ("MET" if all(v <= 60 for v in choice.values()) else "NOT MET"),
    ]
    payload = {
        "command": "PYTHONPATH=src python benchmarks/cpu_int8.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu_features()["cpu"], "features": cpu_features(), "cores": os.cpu_count(),
                    "platform": platform.platform(), "onnxruntime": __import__("onnxruntime").__version__,
                    "shared": "possibly: a 2-core machine others may use at the same time (the load averages "
                              "show how busy it was); ratios come from interleaved rounds, absolute ms rise with "
                              "the load",
                    "load_average_1_5_15_min": {"start": [round(x, 2) for x in load_before],
                                                "end": [round(x, 2) for x in os.getloadavg()]}},
        "method": ("batch 1; the corpus models are calibrated (calibration=FILE.npz) and checked on images of "
                   "rendered text (see each row's inputs), the BERT-like encoder on synthetic token ids < 100; "
                   "fp32 as given, fp32 rewritten (the copy ort-cpu:fp32 runs, its decomposed HardSwish and scalar "
                   "scale/shift after convolutions fused and verified: rtpick.fused_model; only where something was "
                   "rewritten), rtpick int8 (the search's "
                   "best variant, also where int8 is refused as not faster: marked 'refused'; the search judges it "
                   "against fp32 rewritten) and ONNX Runtime's default int8 timed in interleaved rounds (rotating "
                   "order, each "
                   "slot a 50 ms pause, one untimed warm call, then ~20 ms of calls, sessions as ort-cpu builds them: "
                   "rtpick.quantize_timing; 9-21 rounds); p50 = median of per-round means; ratio = fp32 p50 (as given, "
                   "or rewritten) / int8 p50; "
                   "accuracy on 32 other inputs against fp32 (top-1 agreement only for class-score outputs), "
                   "neither calibrated nor gated on; ORT threads: default"),
        "models": rows,
        "summary": summary,
    }
    out = Path(args.out)
    write_json(out, payload, "benchmark results")
    atomic_write_bytes(out.with_suffix(".md"), markdown(payload).encode())
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
