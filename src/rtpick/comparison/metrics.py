"""The metrics of one output against the reference, and the verdict under a `Tolerance` (the rules are in
`rtpick.comparison.policy`). Pure numpy: no runtime, no model loading; numpy loads with the first check so
that importing this module stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rtpick.comparison.policy import REL_FLOOR_ABS, REL_FLOOR_SCALE, TOLERANCES, Tolerance
from rtpick.errors import RtpickError
from rtpick.model import ModelSpec

FP16_SMALLEST_NORMAL = 6.103515625e-05  # 2**-14

if TYPE_CHECKING:  # numpy loads with the first comparison, so that `import rtpick` stays light
    import numpy as np


@dataclass
class OutputCheck:
    """The metrics of one output of one configuration against the reference, and the verdict."""

    name: str
    shape: list[int]
    dtype: str
    ok: bool
    reason: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    nan: int = 0
    inf: int = 0
    ref_nan: int = 0
    ref_inf: int = 0
    top1_agreement: float | None = None
    top1_decisive_rows: int | None = None  # rows whose reference top-1 leads by more than the error can move
    top1_decisive_agreement: float | None = None  # agreement over those rows: what the top-1 gate judges
    top5_agreement: float | None = None
    equal_fraction: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: json_number(value) for key, value in asdict(self).items()}


def is_classifier_like(array: np.ndarray) -> bool:
    """Float, 2-D ``[batch, classes >= 2]``: what top-k agreement and accuracy make sense for."""
    return array.ndim == 2 and array.shape[1] >= 2 and array.dtype.kind == "f" and array.shape[0] >= 1


SCORE_NAME_HINTS = ("logit", "prob", "score", "class", "pred")


def holds_class_scores(name: str, spec: ModelSpec) -> bool:
    """Whether output `name` is class scores, so that top-k agreement and accuracy mean something.

    Shape alone cannot tell: a BERT pooled embedding [batch, 768] looks like ImageNet scores [batch, 1000]. An
    output is taken for scores when it is the model's only output or its name says so (logits, probs, scores...).
    """
    return len(spec.outputs) == 1 or any(hint in name.lower() for hint in SCORE_NAME_HINTS)


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    import numpy as np

    return float(np.mean(np.argmax(scores, axis=1) == labels))


def check_output(
    name: str,
    candidate: Any,
    reference: Any,
    tolerance: Tolerance,
    labels: np.ndarray | None = None,
    scores: bool = True,
) -> OutputCheck:
    """Metrics of `candidate` against `reference` and whether it is within `tolerance` (rules in the module doc).

    `scores=False` says the output is not class scores (see `holds_class_scores`): no top-k checks then."""
    import numpy as np

    cand = as_numpy(candidate)
    ref = as_numpy(reference)
    check = OutputCheck(name=name, shape=list(cand.shape), dtype=str(cand.dtype), ok=True)
    if cand.shape != ref.shape:
        check.ok = False
        check.reason = f"{name}: shape {list(cand.shape)} but the reference has {list(ref.shape)}"
        return check
    cand_float = cand.dtype.kind in "fc"
    ref_float = ref.dtype.kind in "fc"
    if cand_float != ref_float:
        check.ok = False
        check.reason = f"{name}: dtype {cand.dtype} but the reference has {ref.dtype}"
        return check
    if not cand_float:
        return _check_exact(check, cand, ref, tolerance)

    c = cand.astype(np.float64)
    r = ref.astype(np.float64)
    cand_nan, ref_nan = np.isnan(c), np.isnan(r)
    cand_inf, ref_inf = np.isinf(c), np.isinf(r)
    check.nan, check.inf = int(cand_nan.sum()), int(cand_inf.sum())
    check.ref_nan, check.ref_inf = int(ref_nan.sum()), int(ref_inf.sum())
    problems: list[str] = []
    if (cand_nan != ref_nan).any():
        problems.append(f"NaN in {int((cand_nan & ~ref_nan).sum())} elements where the reference has none"
                        if (cand_nan & ~ref_nan).any() else "NaN pattern differs from the reference")
    if (cand_inf != ref_inf).any() or (c[cand_inf & ref_inf] != r[cand_inf & ref_inf]).any():
        problems.append(f"Inf in {int((cand_inf & ~ref_inf).sum())} elements where the reference has none"
                        if (cand_inf & ~ref_inf).any() else "Inf pattern differs from the reference")

    finite = np.isfinite(c) & np.isfinite(r)
    cf, rf = c[finite], r[finite]
    if cf.size:
        diff = np.abs(cf - rf)
        scale = float(np.max(np.abs(rf)))
        floor = max(REL_FLOOR_ABS, REL_FLOOR_SCALE * scale)
        check.max_abs = float(diff.max())
        check.mean_abs = float(diff.mean())
        check.max_rel = float(np.max(diff / np.maximum(np.abs(rf), floor)))
        check.cosine = _cosine(cf, rf)
        ref_norm = float(np.linalg.norm(rf))
        check.rel_l2 = float(np.linalg.norm(cf - rf)) / ref_norm if ref_norm > 0 else float(np.linalg.norm(cf))
        if tolerance.max_rel_l2 is not None and not check.rel_l2 <= tolerance.max_rel_l2:
            problems.append(f"relative error ||d||/||ref|| {check.rel_l2:.3g} > {tolerance.max_rel_l2:g}")
        if tolerance.atol is not None:
            limit = tolerance.atol + (tolerance.rtol or 0.0) * np.abs(rf)
            over = diff > limit
            if over.any():
                worst = int(np.argmax(diff - limit))
                problems.append(
                    f"{int(over.sum())} of {cf.size} elements beyond atol {tolerance.atol:g} + rtol "
                    f"{tolerance.rtol or 0:g}*|ref| (max abs err {check.max_abs:.3g}, at ref {rf[worst]:.4g})"
                )
        if tolerance.min_cosine is not None and not check.cosine >= tolerance.min_cosine:
            problems.append(f"cosine {check.cosine:.6f} < {tolerance.min_cosine:g}")
        if problems and 0.0 < scale < FP16_SMALLEST_NORMAL and not np.any(cf):
            problems.append(f"every value is 0 where the reference's are at most {scale:.2g} in magnitude, under "
                            f"fp16's smallest normal number ({FP16_SMALLEST_NORMAL:.2g}): reduced precision flushes "
                            "values that small to zero (outputs this small often come from untrained weights)")

    classifier = scores and is_classifier_like(ref)
    if classifier and not (cand_nan.any() or ref_nan.any()):
        cand_top1 = np.argmax(c, axis=1)
        ref_top1 = np.argmax(r, axis=1)
        check.top1_agreement = float(np.mean(cand_top1 == ref_top1))
        decisive = _decisive_rows(r, check.rel_l2, tolerance)
        check.top1_decisive_rows = int(decisive.sum())
        agree = cand_top1[decisive] == ref_top1[decisive]
        check.top1_decisive_agreement = float(np.mean(agree)) if agree.size else None
        if ref.shape[1] > 5:
            # the reference's class is in the candidate's top 5 when its score reaches the 5th highest: tie-aware
            # (argpartition picks among tied scores arbitrarily, so identical outputs with ties scored 0%)
            fifth = -np.partition(-c, 4, axis=1)[:, 4]
            check.top5_agreement = float(np.mean(c[np.arange(len(c)), ref_top1] >= fifth))
        if labels is not None:
            check.accuracy = top1_accuracy(c, labels)
        judged = check.top1_decisive_agreement
        if tolerance.min_top1 is not None and judged is not None and not judged >= tolerance.min_top1:
            rows = len(ref_top1)
            problems.append(f"top-1 agreement {judged:.3f} < {tolerance.min_top1:g}" + (
                "" if check.top1_decisive_rows == rows else
                f" on the {check.top1_decisive_rows} of {rows} rows whose reference top-1 leads by more than the "
                f"error can move (all rows: {check.top1_agreement:.3f})"))
    elif classifier and tolerance.min_top1 is not None:
        problems.append("top-1 agreement cannot be measured on outputs with NaN")

    if problems:
        check.ok = False
        check.reason = f"{name}: " + "; ".join(problems)
    return check


def _decisive_rows(ref: np.ndarray, rel_l2: float | None, tolerance: Tolerance) -> np.ndarray:
    """The rows of a class-score output whose answer a tolerated error cannot flip: the reference's top-1 leads
    its runner-up by more than twice the error one score may carry (the candidate's norm-wise relative error,
    capped at what the precision tolerates, times the row's RMS score). A flip in any other row is a tie broken
    the other way, not a wrong answer: a randomly initialised ResNet-50's logits differ by ~1e-3, and fp16 that
    is right to 1e-3 norm-wise flipped 6% of such rows on an H200 (benchmarks/results/h200/recommend-resnet50.md)."""
    import numpy as np

    allowed = tolerance.max_rel_l2
    if allowed is None and tolerance.min_cosine is not None:
        allowed = math.sqrt(2.0 * (1.0 - tolerance.min_cosine))  # ||a-b||/||b|| at that cosine, equal norms
    error = min(rel_l2 or 0.0, allowed if allowed is not None else 0.0)
    top2 = np.sort(ref, axis=1)[:, -2:]
    rms = np.sqrt(np.mean(ref * ref, axis=1))
    return (top2[:, 1] - top2[:, 0]) > 2.0 * error * rms


def output_metrics(reference: Any, candidate: Any, labels: Any = None) -> dict[str, Any]:
    """One output's metrics as a plain dict, with the verdict of every precision's default tolerance.

    For callers that run sessions themselves (the demo): ``max_abs_error``, ``max_rel_error``, ``mean_abs_error``,
    ``cosine``, ``nan``, ``inf``, ``top1_agreement``, ``top5_agreement``, ``accuracy``, and ``within`` (precision ->
    bool) read by `within_tolerance`.
    """
    labels_array = None if labels is None else as_numpy(labels)
    checks = {name: check_output("output", candidate, reference, tol, labels_array)
              for name, tol in TOLERANCES.items()}
    first = checks["fp32"]
    return {
        "max_abs_error": first.max_abs, "max_rel_error": first.max_rel, "mean_abs_error": first.mean_abs,
        "rel_l2": first.rel_l2,
        "cosine": first.cosine, "nan": first.nan, "inf": first.inf, "top1_agreement": first.top1_agreement,
        "top5_agreement": first.top5_agreement, "accuracy": first.accuracy,
        "within": {name: check.ok for name, check in checks.items()},
        "reasons": {name: check.reason for name, check in checks.items() if not check.ok},
    }


def within_tolerance(metrics: Mapping[str, Any], precision: str) -> bool:
    """Whether `output_metrics` found the output within `precision`'s default tolerance (`TOLERANCES`)."""
    if precision not in metrics["within"]:
        raise RtpickError(f"no tolerance policy for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return bool(metrics["within"][precision])


def _check_exact(check: OutputCheck, cand: np.ndarray, ref: np.ndarray, tolerance: Tolerance) -> OutputCheck:
    """Integer, bool and string outputs: equality, element by element."""
    import numpy as np

    equal = cand == ref
    check.equal_fraction = float(np.mean(equal)) if equal.size else 1.0
    if cand.dtype.kind in "iub" and ref.dtype.kind in "iub" and cand.size:
        diff = np.abs(cand.astype(np.int64) - ref.astype(np.int64))
        check.max_abs = float(diff.max())
        check.mean_abs = float(diff.mean())
    needed = 1.0 if tolerance.min_top1 is None else tolerance.min_top1
    if check.equal_fraction < needed:
        check.ok = False
        check.reason = (f"{check.name}: {int((~equal).sum())} of {equal.size} elements differ "
                        f"(need {needed:.0%} equal)")
    return check


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def as_numpy(value: Any) -> np.ndarray:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
