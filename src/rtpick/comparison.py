"""Prove that runtimes agree: the same feeds through every configuration, each output checked against a reference.

Why this exists: a fast runtime is worth nothing if it gives a different answer. `compare_configs` loads the
model once, makes the feeds once, runs them through each ``runtime:precision`` (building, running and closing
one session at a time), and judges every output of every configuration against the reference configuration
(default: the first fp32 one in the list).

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
5. for classifier-like outputs, ``top1_agreement >= min_top1``;
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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpick.errors import RtpickError
from rtpick.model import ModelSpec

if TYPE_CHECKING:  # numpy loads with the first comparison, so that `import rtpick` stays light
    import numpy as np

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
    # torch._scaled_mm, python benchmarks/fp8_cpu_accuracy.py): rel L2 0.040, cosine 0.9992 against fp32
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


# ------------------------------------------------------------------------------------------------ metrics


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
    top5_agreement: float | None = None
    equal_fraction: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: _json_number(value) for key, value in asdict(self).items()}


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

    cand = _as_numpy(candidate)
    ref = _as_numpy(reference)
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

    classifier = scores and is_classifier_like(ref)
    if classifier and not (cand_nan.any() or ref_nan.any()):
        cand_top1 = np.argmax(c, axis=1)
        ref_top1 = np.argmax(r, axis=1)
        check.top1_agreement = float(np.mean(cand_top1 == ref_top1))
        if ref.shape[1] > 5:
            top5 = np.argpartition(-c, 4, axis=1)[:, :5]
            check.top5_agreement = float(np.mean(np.any(top5 == ref_top1[:, None], axis=1)))
        if labels is not None:
            check.accuracy = top1_accuracy(c, labels)
        if tolerance.min_top1 is not None and not check.top1_agreement >= tolerance.min_top1:
            problems.append(f"top-1 agreement {check.top1_agreement:.3f} < {tolerance.min_top1:g}")
    elif classifier and tolerance.min_top1 is not None:
        problems.append("top-1 agreement cannot be measured on outputs with NaN")

    if problems:
        check.ok = False
        check.reason = f"{name}: " + "; ".join(problems)
    return check


def output_metrics(reference: Any, candidate: Any, labels: Any = None) -> dict[str, Any]:
    """One output's metrics as a plain dict, with the verdict of every precision's default tolerance.

    For callers that run sessions themselves (the demo): ``max_abs_error``, ``max_rel_error``, ``mean_abs_error``,
    ``cosine``, ``nan``, ``inf``, ``top1_agreement``, ``top5_agreement``, ``accuracy``, and ``within`` (precision ->
    bool) read by `within_tolerance`.
    """
    labels_array = None if labels is None else _as_numpy(labels)
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


def _as_numpy(value: Any) -> np.ndarray:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------------- result


@dataclass
class ComparisonRow:
    """One configuration's outcome: status, the one-line reason when not passing, and per-output metrics."""

    config: str
    runtime: str
    precision: str
    status: str
    reason: str = ""
    tolerance: Tolerance | None = None
    outputs: list[OutputCheck] = field(default_factory=list)
    build_time_s: float | None = None
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the options the user gave for this runtime

    @property
    def label(self) -> str:
        """The configuration with the options it ran with, as a reader needs it ("ort-cuda:fp16 prefer_nhwc=True")."""
        return " ".join([self.config, *(f"{key}={value}" for key, value in self.options.items())])

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def _values(self, key: str) -> list[float]:
        return [v for v in (getattr(o, key) for o in self.outputs) if v is not None]

    @property
    def max_abs(self) -> float | None:
        values = self._values("max_abs")
        return max(values) if values else None

    @property
    def max_rel(self) -> float | None:
        values = self._values("max_rel")
        return max(values) if values else None

    @property
    def rel_l2(self) -> float | None:
        values = self._values("rel_l2")
        return max(values) if values else None

    @property
    def cosine(self) -> float | None:
        values = self._values("cosine")
        return min(values) if values else None

    @property
    def top1_agreement(self) -> float | None:
        values = self._values("top1_agreement")
        return min(values) if values else None

    @property
    def top5_agreement(self) -> float | None:
        values = self._values("top5_agreement")
        return min(values) if values else None

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy against the labels, of the first classifier-like output."""
        values = self._values("accuracy")
        return values[0] if values else None

    @property
    def nan(self) -> int:
        return sum(o.nan for o in self.outputs)

    @property
    def inf(self) -> int:
        return sum(o.inf for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "runtime": self.runtime,
            "precision": self.precision,
            "status": self.status,
            "reason": self.reason,
            "tolerance": asdict(self.tolerance) if self.tolerance else None,
            "max_abs": _json_number(self.max_abs),
            "max_rel": _json_number(self.max_rel),
            "rel_l2": _json_number(self.rel_l2),
            "cosine": _json_number(self.cosine),
            "top1_agreement": self.top1_agreement,
            "top5_agreement": self.top5_agreement,
            "accuracy": self.accuracy,
            "nan": self.nan,
            "inf": self.inf,
            "build_time_s": self.build_time_s,
            "options": dict(self.options),
            "notes": list(self.notes),
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class Comparison:
    """Every configuration against one reference, on one set of feeds: data to print, save or assert on."""

    model: ModelSpec
    reference: str
    feeds_description: str
    rows: list[ComparisonRow]
    feed_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when the reference ran and every configuration is within tolerance."""
        return bool(self.rows) and all(row.ok for row in self.rows) and any(
            row.status == STATUS_REFERENCE for row in self.rows
        )

    def row(self, config: str) -> ComparisonRow:
        for row in self.rows:
            if row.config == config:
                return row
        raise KeyError(config)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "rtpick.compare",
            "model": self.model.to_dict(),
            "reference": self.reference,
            "feeds": self.feeds_description,
            "feed_shapes": self.feed_shapes,
            "passed": self.passed,
            "notes": list(self.notes),
            "tolerances": {name: asdict(tol) for name, tol in TOLERANCES.items()},
            "rows": [row.to_dict() for row in self.rows],
        }


# ---------------------------------------------------------------------------------------------------- feeds


def make_feeds(
    spec: ModelSpec,
    *,
    feeds: Mapping[str, Any] | None = None,
    input_path: str | Path | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    seed: int = 0,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """Feeds for `spec` and a sentence saying how they were made: the caller's, a file's, or synthetic.

    Checked here, before any runtime is built, so that a feed that does not fit the model is the user's
    mistake (one error, exit 2) rather than the same error repeated in every row.
    """
    from rtpick import data
    from rtpick.model import resolve_shapes

    if feeds is not None and input_path is not None:
        raise RtpickError("give feeds or an input file, not both")
    if feeds is not None:
        arrays = {name: _as_numpy(value) for name, value in feeds.items()}
        return data.validate_feeds(spec.inputs, arrays, source="the feeds"), "given by the caller"
    if input_path is not None and not Path(input_path).is_dir():
        # .npz/.npy arrays keep their own shapes: symbolic dims need not be set on the command line
        return data.feeds_for(spec, {}, seed=seed, input_path=input_path), f"from {input_path}"
    resolved = resolve_shapes(spec.inputs, shapes, batch)
    arrays = data.feeds_for(spec, resolved, seed=seed, input_path=input_path, ranges=input_ranges)
    if input_path is not None:
        return arrays, f"images from {input_path}"
    return arrays, _synthetic_description(seed, input_ranges)


def _synthetic_description(seed: int, ranges: Mapping[str, tuple[float, float]] | None) -> str:
    text = f"synthetic, seed {seed} (floats uniform in [0, 1), integers in [0, 100), unless ranged)"
    if ranges:
        text += "; ranges " + ", ".join(f"{k} [{lo:g}, {hi:g})" for k, (lo, hi) in ranges.items())
    return text


# -------------------------------------------------------------------------------------------------- compare


def _parse(text: str) -> tuple[str, str, str | None]:
    """(runtime, precision, why it cannot run) for one ``runtime:precision``.

    An unknown runtime or precision name is the user's typo (raised: exit 2). A known precision that this
    runtime lacks is a fact about the configuration: it becomes an error row and the others still run.
    """
    from rtpick.runtimes.base import PRECISIONS
    from rtpick.runtimes.registry import RUNTIMES, parse_config

    runtime, _, precision = text.strip().partition(":")
    precision = precision or "fp32"
    if runtime not in RUNTIMES or precision not in PRECISIONS:
        parse_config(text)  # raises the registry's one-line message
    try:
        runtime, precision = parse_config(text)
    except RtpickError as exc:
        return runtime, precision, str(exc)
    return runtime, precision, None


def compare_configs(
    model: Any,
    configs: Sequence[str] | str,
    *,
    feeds: Mapping[str, Any] | None = None,
    input_path: str | Path | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    seed: int = 0,
    reference: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    input_ranges: Mapping[str, tuple[float, float]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Any = None,
    feeds_description: str | None = None,
) -> Comparison:
    """Run the same feeds through every ``runtime:precision`` in `configs` and judge each against a reference.

    `reference` defaults to the first fp32 configuration; one not in `configs` is run too. `options` maps a
    runtime name to its build options (``{"ort-cpu": {"threads": 2}}``). `labels` (ints, one per row of a
    classifier-like output) add each configuration's top-1 accuracy. A configuration that fails to build or run
    is a row with status ``error`` and its reason; the others still run. User mistakes (unknown runtime,
    feeds that do not fit the model, bad labels) raise `RtpickError` before anything is built.
    """
    from rtpick.model import load_model

    if isinstance(configs, str):
        configs = [part for part in configs.split(",") if part.strip()]
    texts = [c.strip() for c in configs]
    if not texts:
        raise RtpickError("no configuration given; use -r runtime:precision[,runtime:precision...]")
    parsed = [_parse(text) for text in texts]
    names = [f"{rt}:{prec}" for rt, prec, _ in parsed]
    for name in names:
        if names.count(name) > 1:
            raise RtpickError(f"configuration {name} is given twice; list each once")

    explicit_reference = reference is not None
    if reference is not None:
        ref_parsed = _parse(reference)
        ref_name = f"{ref_parsed[0]}:{ref_parsed[1]}"
        if ref_name not in names:
            parsed.insert(0, ref_parsed)
            names.insert(0, ref_name)
        candidates = [ref_name]
    else:
        candidates = [name for name, (_, prec, _) in zip(names, parsed) if prec == "fp32"]
        if not candidates:
            raise RtpickError(
                "no fp32 configuration to use as the reference; add one (e.g. ort-cpu:fp32) or pass --reference"
            )

    runtime_names = {rt for rt, _, _ in parsed}
    options = {key: dict(value) for key, value in (options or {}).items()}
    for key in options:
        if key not in runtime_names:
            raise RtpickError(f"options are given for {key!r}, which is not among the configurations {names}")

    source = model if hasattr(model, "spec") and hasattr(model, "onnx_path") else load_model(model)
    spec = source.spec
    arrays, how = make_feeds(spec, feeds=feeds, input_path=input_path, shapes=shapes, batch=batch, seed=seed,
                             input_ranges=input_ranges)
    how = feeds_description or how
    feed_shapes = {name: tuple(int(d) for d in value.shape) for name, value in arrays.items()}
    label_array = _check_labels(labels, arrays)

    results: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, ComparisonRow] = {}
    for name, (runtime, precision, problem) in zip(names, parsed):
        row = ComparisonRow(config=name, runtime=runtime, precision=precision, status=STATUS_ERROR,
                            options=dict(options.get(runtime, {})))
        rows[name] = row
        if problem is not None:
            row.reason = problem
            continue
        outputs = _run_one(row, source, runtime, precision, feed_shapes, arrays, options.get(runtime, {}))
        if outputs is not None:
            results[name] = outputs

    notes: list[str] = []
    ref_name = next((c for c in candidates if c in results), None)
    if ref_name is None:
        first = candidates[0]
        reason = f"reference {first} did not run: {rows[first].reason}"
        for row in rows.values():
            if row.config in results:
                row.status, row.reason = STATUS_UNCHECKED, reason
        return Comparison(spec, first, how, list(rows.values()), _listed(feed_shapes), [reason])
    if ref_name != candidates[0] and not explicit_reference:
        notes.append(f"the first fp32 configuration {candidates[0]} did not run; {ref_name} is the reference")

    reference_outputs = results[ref_name]
    for name, row in rows.items():
        if name not in results:
            continue
        tolerance = tolerance_for(row.precision, atol, rtol)
        row.tolerance = tolerance
        row.outputs = _judge(results[name], reference_outputs, spec, tolerance, label_array)
        if name == ref_name:
            row.status = STATUS_REFERENCE
            continue
        failing = [o.reason for o in row.outputs if not o.ok]
        row.status = STATUS_MISMATCH if failing else STATUS_PASS
        row.reason = "; ".join(failing)
    return Comparison(spec, ref_name, how, list(rows.values()), _listed(feed_shapes), notes)


def _listed(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[int]]:
    return {name: list(shape) for name, shape in shapes.items()}


def _run_one(
    row: ComparisonRow,
    model: Any,
    runtime: str,
    precision: str,
    shapes: Mapping[str, tuple[int, ...]],
    feeds: Mapping[str, np.ndarray],
    options: Mapping[str, Any],
) -> dict[str, np.ndarray] | None:
    """Build, run once, close; any exception becomes the row's one-line reason (the others still run)."""
    from rtpick.runtimes.registry import get_runtime

    session = None
    try:
        session = get_runtime(runtime).build(model, precision, dict(shapes), **options)
        row.build_time_s = session.info.build_time_s
        row.notes.extend(session.info.notes)
        produced = session.run(feeds)
        return {name: _as_numpy(value) for name, value in produced.items()}
    except Exception as exc:  # noqa: BLE001 - a failing configuration never takes the others down
        row.reason = _one_line(exc)
        return None
    finally:
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001
                row.notes.append(f"closing the session failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, RtpickError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _judge(
    outputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    spec: ModelSpec,
    tolerance: Tolerance,
    labels: np.ndarray | None,
) -> list[OutputCheck]:
    checks = []
    for name in spec.output_names():
        if name not in reference:
            continue
        if name not in outputs:
            checks.append(OutputCheck(name=name, shape=[], dtype="", ok=False, reason=f"{name}: missing"))
            continue
        rows = reference[name].shape[0] if reference[name].ndim else 0
        use_labels = labels if labels is not None and rows == len(labels) else None
        checks.append(check_output(name, outputs[name], reference[name], tolerance, use_labels,
                                   scores=holds_class_scores(name, spec)))
    return checks


def _check_labels(labels: Any, feeds: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Labels as a 1-D int array, one per row of the batch; a mismatch is the user's mistake."""
    import numpy as np

    if labels is None:
        return None
    array = _as_numpy(labels)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise RtpickError(
            f"labels must be a 1-D array of integer class ids, not {array.dtype}{list(array.shape)}"
        )
    batch = {value.shape[0] for value in feeds.values() if value.ndim}
    if batch and len(array) not in batch:
        raise RtpickError(
            f"there are {len(array)} labels but the feeds have a batch of {sorted(batch)[0]}; give one label per row"
        )
    return array.astype(np.int64)
