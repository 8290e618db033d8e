"""How fast could int8 make each CNN of the corpus at best? An Amdahl bound from the per-operator profile.

Reads ``benchmarks/results/cpu_int8_profile.md`` (made by ``benchmarks/cpu_int8_profile.py``: ONNX Runtime's
per-operator kernel times at batch 1 on this machine) and, per CNN, assumes the most int8 could give:

- every convolution in int8, each as much faster than its fp32 ``Conv``/``FusedConv`` as this model's ``QLinearConv``
  kernels were (the fp32 convolutions an int8 choice left in fp32 are counted at their fp32 time, so the rate is
  that of the convolutions actually quantised);
- every other operator as fast as in the fp32 graph ort-cpu runs (fp32 rewritten where there is one), and no
  Quantize/DequantizeLinear, no requantised activation, no layout reorder in int8 at all.

Real int8 graphs add those, so the bound is optimistic; it says whether a speed-up target is reachable by int8 at
all on these models. The geomean is over the CNNs, with a model whose bound is under 1x counted at 1x (rtpick
refuses int8 there and fp32 runs).

    PYTHONPATH=src python benchmarks/cpu_int8_ceiling.py > benchmarks/results/cpu_int8_ceiling.md
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

PROFILE = Path(__file__).parent / "results" / "cpu_int8_profile.md"
CNNS = ("ppocr-det", "ppocr-cls", "orientation", "ddddocr-det")
KERNELS = re.compile(r"kernel time summed: (.*)$")


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)
    return {part.split("\n", 1)[0].strip(): part for part in parts[1:]}


def kernel_totals(section: str) -> dict[str, float]:
    """{"fp32": ms, "fp32 rewritten": ms, "int8": ms} from the section's 'kernel time summed' line."""
    line = next(m.group(1) for m in map(KERNELS.search, section.splitlines()) if m)
    return {name.strip(): float(ms) for name, ms in re.findall(r"([a-z0-9 ]+?) ([0-9.]+) ms", line)}


def op_times(section: str, precision: str) -> dict[str, float]:
    """The operator-type times (ms per run) of one precision's table row."""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == precision:
            return {op: float(ms) for op, ms in re.findall(r"([A-Za-z]+) ([0-9.]+)", cells[1])}
    raise ValueError(f"no {precision} row")


def bound(section: str) -> tuple[float, str]:
    totals = kernel_totals(section)
    fp32_name = "fp32 rewritten" if "fp32 rewritten" in totals else "fp32"
    fp32, int8 = op_times(section, fp32_name), op_times(section, "int8")
    conv = fp32.get("Conv", 0.0) + fp32.get("FusedConv", 0.0)  # ONNX Runtime's conv+activation is a conv too
    kept_fp32 = int8.get("Conv", 0.0) + int8.get("FusedConv", 0.0)  # left in fp32 by the int8 choice
    quantised = int8.get("QLinearConv", 0.0)
    rate = (conv - kept_fp32) / quantised if quantised else 0.0
    best = totals[fp32_name] / (totals[fp32_name] - conv + conv / rate) if rate else 0.0
    words = (f"{fp32_name} kernels {totals[fp32_name]:.2f} ms, of which Conv {conv:.2f}; QLinearConv {quantised:.2f} "
             f"ms for the convolutions int8 took ({conv - kept_fp32:.2f} ms in fp32): {rate:.2f}x")
    return best, words


def other_ops(section: str) -> tuple[float, float]:
    """Kernel ms of everything but convolutions: (fp32 graph ort-cpu runs, int8 choice).

    The bound counts these at their fp32 time. If ONNX Runtime's int8 graphs did this work faster than fp32 (a
    quarter of the bytes to move), the bound would not be optimistic; the profiles say whether they do.
    """
    totals = kernel_totals(section)
    fp32_name = "fp32 rewritten" if "fp32 rewritten" in totals else "fp32"
    fp32, int8 = op_times(section, fp32_name), op_times(section, "int8")
    conv = fp32.get("Conv", 0.0) + fp32.get("FusedConv", 0.0)
    int8_conv = int8.get("QLinearConv", 0.0) + int8.get("Conv", 0.0) + int8.get("FusedConv", 0.0)
    return totals[fp32_name] - conv, totals["int8"] - int8_conv


def main() -> int:
    text = PROFILE.read_text()
    found = sections(text)
    print("# The most int8 could give on the corpus CNNs (an Amdahl bound)\n")
    print("Command: `PYTHONPATH=src python benchmarks/cpu_int8_ceiling.py > benchmarks/results/cpu_int8_ceiling.md`, "
          f"from `{PROFILE.relative_to(Path.cwd()) if PROFILE.is_relative_to(Path.cwd()) else PROFILE}` "
          "(per-operator kernel times at batch 1 on the 2-core machine). Bound = fp32 time / (fp32 time - Conv + "
          "Conv / the model's measured QLinearConv speed-up): every convolution in int8 at that speed-up, "
          "everything else as in fp32, no quantise/dequantise or reorder cost. Optimistic by construction.\n")
    print("| model | int8 bound | from | other operators, fp32 -> int8 choice (kernel ms) |")
    print("|---|---|---|---|")
    bounds, dearer = [], []
    for name in CNNS:
        if name not in found:
            print(f"| {name} | - | not in the profile | - |")
            continue
        best, words = bound(found[name])
        fp32_other, int8_other = other_ops(found[name])
        bounds.append(max(best, 1.0))
        dearer.append(int8_other > fp32_other)
        print(f"| {name} | {best:.2f}x | {words} | {fp32_other:.2f} -> {int8_other:.2f} |")
    geomean = math.exp(sum(map(math.log, bounds)) / len(bounds)) if bounds else float("nan")
    print(f"\nGeomean of the bounds over {len(bounds)} CNNs (under 1x counted as 1x: int8 refused, fp32 runs): "
          f"**{geomean:.2f}x**. Issue 16's target is 1.8x.")
    print(f"\nThe last column checks the bound's one assumption that could be pessimistic: that the operators other "
          f"than convolutions cost in int8 what they cost in fp32. In {sum(dearer)} of {len(dearer)} profiled int8 "
          "graphs they cost more (requantised elementwise ops, Quantize/DequantizeLinear at fp32 islands, NHWC "
          "transposes; on ddddocr-det every operator runs in int8, QLinearSigmoid + QLinearMul in place of fp32's "
          "fused QuickGelu)." + (" So the bound is optimistic on both counts." if all(dearer) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
