"""How outputs are judged: the metrics, and the tolerance each precision is held to. Pure: no runtime here.

Metrics, per output (floats in float64, over the elements that are finite in both arrays):

- ``max_abs``: max |candidate - reference|; ``mean_abs``: mean |candidate - reference|.
- ``max_rel``: max |candidate - reference| / max(|reference|, floor), with floor = max(1e-6, 1e-3 * max|reference|),
  so that reference values near zero do not turn a tiny absolute error into an enormous relative one.
- ``rel_l2``: ||candidate - reference|| / ||reference|| over the finite elements (the norm-wise relative error).
- ``cosine``: cosine similarity of the flattened outputs (1.0 when both are all zeros).
- ``nan``/``inf``: NaN and Inf counts in the candidate (``ref_nan``/``ref_inf`` in the reference).
- Classifier-like outputs (float, 2-D ``[batch, classes >= 2]``, and either the model's only output or named like
  scores: logits, probs, scores, classes, preds): ``top1_agreement``, the fraction of rows whose
  arg-max equals the reference's; ``top5_agreement``, the fraction of rows whose reference top-1 class is among
  the candidate's five highest scores (only with more than five classes); ``accuracy``, top-1 accuracy against
  the caller's labels when given.
- Integer and bool outputs: ``equal_fraction``, the fraction of elements exactly equal to the reference's.

Tolerance policy (`TOLERANCES`), by the candidate's precision:

    precision  atol   rtol   max rel L2  min cosine  min top-1
    fp32       1e-4   1e-3   -           -           -
    tf32       -      -      5e-3        0.9999      0.99
    fp16       -      -      1e-2        0.999       0.99
    bf16       -      -      5e-2        0.995       0.99
    int8       -      -      -           0.99        0.90
    fp8        -      -      -           0.99        0.90

An output is within tolerance when ALL of these hold (a check whose threshold is "-" is skipped):

1. it exists and has the reference's shape, and a float output is float where the reference is (and so on);
2. NaN and Inf appear in exactly the same elements as in the reference (a NaN or Inf the reference does not
   have fails, whatever the other numbers say; NaN never passes a check);
3. elementwise: every finite element satisfies |candidate - reference| <= atol + rtol * |reference|;
3b. relative error over the whole output, ``rel_l2`` = ||candidate - reference|| / ||reference|| <= max rel L2;
4. ``cosine >= min_cosine``;
5. for classifier-like outputs, top-1 agreement >= min_top1 over the decisive rows: those whose reference top-1
   leads its runner-up by more than twice the error one score may carry (the candidate's ``rel_l2``, capped at
   the precision's max rel L2 or, for int8/fp8, the error its min cosine allows, times the row's RMS score).
   A flip in another row is a near-tie broken the other way (a randomly initialised network's logits differ by
   ~1e-3), not a wrong answer; ``top1_agreement`` still reports all rows, ``top1_decisive_rows`` how many count;
6. integer/bool outputs are exactly equal, or, where the precision has a min top-1, at least that fraction of
   their elements is equal (integer outputs of classifiers are usually arg-max indices).

A configuration passes when all its outputs are within tolerance. ``atol``/``rtol`` given by the caller replace
the elementwise tolerances of every precision and switch the elementwise check on for int8 (an unspecified one of
the pair becomes the precision's default, or 0 for int8); the cosine and top-1 checks stay.

Why these numbers: fp32 runtimes differ only in summation order and fused kernels. Measured on the bundled
digits model over its 540 held-out images (logits up to 22 in magnitude), ort-cpu:fp32 against torch-cpu:fp32
differs by at most 4.8e-6, 1.5% of the fp32 tolerance, which leaves room for deeper models without hiding real
bugs. Reduced precisions are judged norm-wise, not element by element: TF32 and fp16 round to a 10-bit
mantissa and bf16 to a 7-bit one, and through 50 layers a few of 64,000 logits land far from their fp32 value
while the output as a whole stays right. ResNet-50 on an H100, batch 64 (benchmarks/results/h100/): tf32 had
57 logits beyond 1e-2 + 1e-2*|ref| and bf16 35 beyond 0.1 + 0.1*|ref|, yet norm-wise errors were about 5e-4
(tf32, fp16) and 5e-3 (bf16), cosine 0.99999 or better and top-1 agreement 100%. The limits leave a margin of
about ten times those errors; every reduced precision must also keep the output's direction (cosine) and give
the same top-1 answer on 99% of the rows of a classifier-like output. int8 errors are larger by nature (ort-
cpu:int8 on digits: max abs error 0.36, cosine 0.99992, top-1 agreement 99.8%, accuracy 99.6% against fp32's
99.4%), so int8 is judged by direction (cosine >= 0.99) and by the answer a classifier gives (top-1 agreement
>= 90% of rows; with few rows this check is coarse: compare on a larger batch). ``atol``/``rtol`` given by the
caller switch the elementwise check on for every precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rtpick.errors import RtpickError

STATUS_REFERENCE = "reference"  # the configuration everything else is compared with (it ran)
STATUS_PASS = "pass"  # ran, every output within tolerance
STATUS_MISMATCH = "mismatch"  # ran, at least one output out of tolerance (reason says which and why)
STATUS_ERROR = "error"  # did not build or run (reason is the one-line error)
STATUS_UNCHECKED = "unchecked"  # ran, but the reference did not, so nothing could be judged
OK_STATUSES = (STATUS_REFERENCE, STATUS_PASS)


@dataclass(frozen=True)
class Tolerance:
    """How close a precision's outputs must be to the reference; a None threshold skips that check."""

    atol: float | None
    rtol: float | None
    min_cosine: float | None = None
    min_top1: float | None = None
    max_rel_l2: float | None = None

    def describe(self) -> str:
        parts = []
        if self.atol is not None:
            parts.append(f"|d| <= {self.atol:g} + {self.rtol or 0:g}*|ref|")
        if self.max_rel_l2 is not None:
            parts.append(f"||d||/||ref|| <= {self.max_rel_l2:g}")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        if self.min_top1 is not None:
            parts.append(f"top-1 agreement >= {self.min_top1:g}")
        return ", ".join(parts) or "none"


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "tf32": Tolerance(atol=None, rtol=None, max_rel_l2=5e-3, min_cosine=0.9999, min_top1=0.99),
    "fp16": Tolerance(atol=None, rtol=None, max_rel_l2=1e-2, min_cosine=0.999, min_top1=0.99),
    "bf16": Tolerance(atol=None, rtol=None, max_rel_l2=5e-2, min_cosine=0.995, min_top1=0.99),
    "int8": Tolerance(atol=None, rtol=None, min_cosine=0.99, min_top1=0.90),
    # FP8 e4m3 keeps 3 mantissa bits: judged like int8. A 12-layer BERT-like encoder, its Linear layers in FP8 (CPU
    # torch._scaled_mm, tests/test_fp8.py): rel L2 0.040, cosine 0.9992 against fp32
    "fp8": Tolerance(atol=None, rtol=None, min_cosine=0.99, min_top1=0.90),
}

REL_FLOOR_ABS = 1e-6
REL_FLOOR_SCALE = 1e-3


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The tolerance a `precision` is judged by, with the caller's atol/rtol (if any) replacing the defaults."""
    base = TOLERANCES.get(precision)
    if base is None:
        raise RtpickError(f"no tolerance policy for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise RtpickError(f"--{name} must be a finite number >= 0, not {value}")
    if atol is None and rtol is None:
        return base
    return replace(
        base,
        atol=atol if atol is not None else (base.atol if base.atol is not None else 0.0),
        rtol=rtol if rtol is not None else (base.rtol if base.rtol is not None else 0.0),
    )
