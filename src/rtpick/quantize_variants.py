"""Which int8 variants are worth building for a model on this CPU, and what a quantised model runs in int8.

The order of `candidates` is the order of likely wins, measured on the corpus of `scripts/fetch_int8_corpus.py`
(`benchmarks/cpu_int8_variants.py`, results in ``benchmarks/results/cpu_int8_variants.md``: 2-core AMD EPYC with
AVX-512 VNNI, onnxruntime 1.32, batch 1, fp32 p50 / variant p50 from one interleaved run per model):

- every op quantised, QDQ or QOperator, u8 activations: ddddocr-det 2.29x against 1.76-1.83x with only the
  convolutions in int8 (its SiLU activations and Concats run as int8 lookup tables and copies instead of
  DequantizeLinear -> Sigmoid -> Mul -> QuantizeLinear in fp32); on ppocr-det 1.11-1.17x against 1.21-1.22x,
  and less accurate (cosine 0.974 against 0.976-0.980 on held-out images), so convolution-only variants follow;
- depthwise convolutions in or out of int8: out kept the MobileNetV3 orientation classifier accurate (cosine
  0.998 against 0.961), though no variant of it was faster than fp32 (0.71-0.83x: its fp32 convolutions
  already run fused with their activations);
- s8 activations: 0.58x on ddddocr-det, 0.60x on ppocr-det, 0.24x on orientation, with the same accuracy as u8
  (asymmetric s8 and u8 make the same grid): ONNX Runtime's x86 int8 kernels take u8 activations with s8
  weights (VNNI's u8*s8 dot product), so s8 is never built;
- ONNX Runtime's ``session.enable_quant_qdq_cleanup``: no gain (2.27x against 2.29x on ddddocr-det) and on
  ppocr-det a worse answer (cosine 0.900 against 0.974); percentile calibration: no accuracy gain.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtpick.onnx_graphs import bodies, nodes
from rtpick.quantize import FAST_INT8_OPS, Variant

QUANTISED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                 "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeLSTM"}
# A convolutional model gets MatMul/Gemm-only variants when it has at least this many: a CNN's one classifier-head
# MatMul in int8 is not int8 inference of the model, and its "speed-up" is noise (0.90-1.05x on ppocr-cls and
# orientation, where the search kept it as the fastest accurate variant).
MATRIX_HEAVY = 4
_QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
# Ops that ONNX Runtime's CPU provider runs in int8 when a QDQ graph puts them between DequantizeLinear and
# QuantizeLinear: int8 kernels (binary, variadic, unary lookup tables and pools) or data movement whose Q/DQ pair
# it drops; Relu and Clip are absorbed into the QuantizeLinear before them. Anything else (HardSigmoid, Div...)
# between a DQ and a Q still runs in fp32.
INT8_BETWEEN_QDQ = {"Add", "Mul", "Concat", "Sigmoid", "LeakyRelu", "Softmax", "AveragePool", "GlobalAveragePool",
                    "MaxPool", "Resize", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather",
                    "Slice", "Split", "Pad", "Where", "Relu", "Clip"}


def cpu_features() -> dict[str, Any]:
    """The CPU model and its int8 dot-product instructions, from /proc/cpuinfo (Linux) or the platform."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": name,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni", "asimddp"}),
        "amx": "amx_int8" in flags,
        "avx512": "avx512bw" in flags,
    }


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the main graph of the model at `path` has, and under the key
    ``BODY_FAST_OPS`` how many of `FAST_INT8_OPS` sit inside If/Loop/Scan bodies (static quantisation does not
    reach those; the count lets the refusal say where the model's convolutions and matrix products are)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    in_bodies = [inner for node in graph.node for body in bodies(node) for inner in nodes(body)]
    inside = sum(inner.op_type in FAST_INT8_OPS for inner in in_bodies)
    if inside:
        counts[BODY_FAST_OPS] = inside
    return counts


BODY_FAST_OPS = "<fast ops in bodies>"


def candidates(features: Mapping[str, Any], ops: Mapping[str, int]) -> list[Variant]:
    """The variants worth building for a model with these op counts on a CPU with these features, most likely
    winner first (see the module's docstring for the measurements behind the order).

    u8 activations with s8 weights is the x86 fast path (VNNI's u8*s8 dot product); without VNNI, reduce_range
    (7-bit weights) keeps the u8*s8 sums from saturating. Convolutional models get static variants; models with
    MatMul/Gemm also get dynamic ones (no calibration, activation ranges per call: transformers).
    """
    rr = not features.get("vnni") and not features.get("amx")
    fast = tuple(FAST_INT8_OPS)
    tag = "-rr" if rr else ""
    result = []
    if ops.get("Conv", 0):
        result += [
            Variant(f"qdq-u8s8-pc-all{tag}", "qdq", "u8", True, rr, ()),
            Variant(f"qop-u8s8-pc-all{tag}", "qoperator", "u8", True, rr, ()),
            Variant(f"qdq-u8s8-pc{tag}", "qdq", "u8", True, rr, fast),
            Variant(f"qop-u8s8-pc-nodw{tag}", "qoperator", "u8", True, rr, fast, skip_depthwise=True),
            Variant(f"qdq-u8s8-pc-nodw{tag}", "qdq", "u8", True, rr, fast, skip_depthwise=True),
            Variant(f"qop-u8s8-pt-nodw{tag}", "qoperator", "u8", False, rr, fast, skip_depthwise=True),
        ]
    matrices = ops.get("MatMul", 0) + ops.get("Gemm", 0)
    if matrices >= MATRIX_HEAVY or (matrices and not ops.get("Conv", 0)):
        result += [
            Variant(f"dynamic-pc{tag}", "dynamic", "u8", True, rr, ("MatMul", "Gemm")),
            Variant(f"dynamic-pt{tag}", "dynamic", "u8", False, rr, ("MatMul", "Gemm")),
            Variant(f"qop-u8s8-matmul{tag}", "qoperator", "u8", True, rr, ("MatMul", "Gemm")),
        ]
    return result


def node_report(path: Path, keep_first: int = 0) -> dict[str, Any]:
    """Which nodes of a quantised model run in int8 and why the other Conv/MatMul/Gemm nodes stay in fp32
    (`keep_first`: the variant left that many leading layers in fp32 for accuracy), and how many of the other
    ops run in int8 (QLinear* nodes, or in a QDQ graph, nodes between DequantizeLinear and QuantizeLinear that
    ONNX Runtime fuses into int8 kernels) or in fp32."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {out: node for node in graph.node for out in node.output}
    used_by: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            used_by.setdefault(name, []).append(node)
    initialisers = {init.name for init in graph.initializer}
    quantised, fp32, other, other_int8 = [], {}, {}, {}
    for node in graph.node:
        if node.op_type in QUANTISED_OPS:
            quantised.append(node.name or node.output[0])
        elif node.op_type in FAST_INT8_OPS:
            weight = node.input[1] if len(node.input) > 1 else ""
            producer = made_by.get(weight)
            if producer is not None and producer.op_type == "DequantizeLinear":
                quantised.append(node.name or node.output[0])  # QDQ: ONNX Runtime fuses it into an int8 kernel
            elif node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute):
                fp32[node.name] = "grouped/depthwise: left in fp32 (this variant keeps them out)"
            elif keep_first > sum(why.startswith("one of the first") for why in fp32.values()):
                fp32[node.name] = (f"one of the first {keep_first} layers: kept in fp32, int8 there failed "
                                   "compare's int8 tolerance")
            elif weight not in initialisers and producer is not None:
                fp32[node.name] = "its weight is computed at run time, not a constant"
            else:
                fp32[node.name] = "left in fp32 by the quantiser"
        elif node.op_type.startswith("QLinear") or _between_qdq(node, made_by, used_by):
            other_int8[node.op_type] = other_int8.get(node.op_type, 0) + 1
        elif node.op_type not in (*_QDQ, "Constant"):
            other[node.op_type] = other.get(node.op_type, 0) + 1
    return {"quantised": quantised, "fp32": fp32,
            "other_ops_int8": dict(sorted(other_int8.items(), key=lambda kv: -kv[1])),
            "other_ops_fp32": dict(sorted(other.items(), key=lambda kv: -kv[1])),
            "why": (f"{', '.join(FAST_INT8_OPS)} have int8 kernels faster than fp32 here; the other ops run in int8 "
                    "only in variants that quantise them (each variant is timed: a Q/DQ pair around an op can "
                    "cost more than it saves)")}


def _between_qdq(node: Any, made_by: Mapping[str, Any], used_by: Mapping[str, list[Any]]) -> bool:
    """A node of a QDQ graph whose data inputs all come from DequantizeLinear and whose outputs all go to
    QuantizeLinear: ONNX Runtime runs it as an int8 kernel (or drops the pair around a data-movement op)."""
    if node.op_type not in INT8_BETWEEN_QDQ or not node.input or not node.output:
        return False
    data = [made_by.get(name) for name in node.input if name and name in made_by]
    if not data or any(p.op_type != "DequantizeLinear" for p in data):
        return False
    consumers = [c for out in node.output for c in used_by.get(out, [])]
    return bool(consumers) and all(c.op_type == "QuantizeLinear" for c in consumers)
