"""Orchestration: load the model once, make the feeds once, build, run and close one configuration at a time,
and judge each against the reference (metrics and policy in the sibling modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtpick.comparison.metrics import OutputCheck, as_numpy, check_output, holds_class_scores
from rtpick.comparison.policy import (
    STATUS_ERROR,
    STATUS_MISMATCH,
    STATUS_PASS,
    STATUS_REFERENCE,
    STATUS_UNCHECKED,
    Tolerance,
    tolerance_for,
)
from rtpick.comparison.result import Comparison, ComparisonRow
from rtpick.errors import MissingRuntime, RtpickError, one_line
from rtpick.model import ModelSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    SessionProvider = Callable[[str, str, dict[str, Any], dict[str, tuple[int, ...]]], Any]


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
        arrays = {name: as_numpy(value) for name, value in feeds.items()}
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
    text = (f"synthetic, seed {seed} (floats uniform in [0, 1), integers in [0, 100) or below the size of the "
            "table they index, unless ranged)")
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
    progress: Any = None,
    sessions: SessionProvider | None = None,
    chunk: int | None = None,
) -> Comparison:
    """Run the same feeds through every ``runtime:precision`` in `configs` and judge each against a reference.

    `reference` defaults to the first fp32 configuration; one not in `configs` is run too. `options` maps a
    runtime name to its build options (``{"ort-cpu": {"threads": 2}}``). `labels` (ints, one per row of a
    classifier-like output) add each configuration's top-1 accuracy. A configuration that fails to build or run
    is a row with status ``error`` and its reason; the others still run. `progress` (a
    `rtpick.perf.progress.Phases`) hears one step per configuration before it is built (a cold torch.compile
    takes minutes: a log must say so). User mistakes (unknown runtime,
    feeds that do not fit the model, bad labels) raise `RtpickError` before anything is built.

    `sessions` lets a caller that measures the same configurations afterwards (`recommend`) lend its own
    sessions: ``sessions(runtime, precision, options, shapes)`` returns a built session that the caller keeps
    (it is not closed here), and `chunk` runs the feeds through it `chunk` rows at a time, the batch the caller
    built for. Why: a torch.compile or TensorRT build is per input shape, so checking at another batch than the
    one measured would build (compile) every candidate twice.
    """
    from rtpick.sources import load_model

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
    if progress is not None:
        progress.phase("compare", len(names))
    for name, (runtime, precision, problem) in zip(names, parsed):
        if progress is not None:
            progress.step(f"building and running {name}")
        row = ComparisonRow(config=name, runtime=runtime, precision=precision, status=STATUS_ERROR,
                            options=dict(options.get(runtime, {})))
        rows[name] = row
        if problem is not None:
            row.reason = problem
            continue
        outputs = _run_one(row, source, runtime, precision, feed_shapes, arrays, options.get(runtime, {}),
                           sessions, chunk)
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
    sessions: SessionProvider | None = None,
    chunk: int | None = None,
) -> dict[str, np.ndarray] | None:
    """Build (or borrow from `sessions`), run, close what was built here; any exception becomes the row's
    one-line reason (the others still run)."""
    from rtpick.runtimes.registry import get_runtime

    session = None
    parts = _chunks(feeds, chunk) if sessions is not None else [dict(feeds)]
    try:
        if sessions is not None:
            first = parts[0]
            session = sessions(runtime, precision, dict(options),
                               {name: tuple(int(d) for d in value.shape) for name, value in first.items()})
        else:
            session = get_runtime(runtime).build(model, precision, dict(shapes), **options)
        row.build_time_s = session.info.build_time_s
        row.notes.extend(n for n in session.info.notes if n not in row.notes)
        produced = [{name: as_numpy(value) for name, value in session.run(part).items()} for part in parts]
        return _joined(produced, next(iter(feeds.values())).shape[0] if len(parts) > 1 else 0)
    except Exception as exc:  # noqa: BLE001 - a failing configuration never takes the others down
        row.reason = one_line(exc)
        row.unavailable = isinstance(exc, MissingRuntime)
        return None
    finally:
        if session is not None and sessions is None:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001
                row.notes.append(f"closing the session failed: {one_line(exc)}")


def _chunks(feeds: Mapping[str, np.ndarray], chunk: int | None) -> list[dict[str, np.ndarray]]:
    """The feeds cut into runs of exactly `chunk` rows, the last one topped up with the first rows (their
    outputs are cut off again by `_joined`): a session built for one batch may accept no other. Whole where
    the inputs do not all share one leading batch dimension."""
    import numpy as np

    rows = {value.shape[0] if value.ndim else -1 for value in feeds.values()}
    if not chunk or len(rows) != 1 or (total := rows.pop()) <= chunk:
        return [dict(feeds)]
    parts = []
    for start in range(0, total, chunk):
        part = {name: value[start:start + chunk] for name, value in feeds.items()}
        short = chunk - next(iter(part.values())).shape[0]
        if short:
            part = {name: np.concatenate([value, feeds[name][:short]], axis=0) for name, value in part.items()}
        parts.append(part)
    return parts


def _joined(parts: Sequence[Mapping[str, np.ndarray]], rows: int) -> dict[str, np.ndarray]:
    """Per-chunk outputs joined along the batch axis and cut to the `rows` fed (one chunk: as it is)."""
    import numpy as np

    if len(parts) == 1:
        return dict(parts[0])
    joined = {}
    for name in parts[0]:
        pieces = [part[name] for part in parts]
        if any(piece.ndim == 0 for piece in pieces):
            raise RtpickError(f"output {name} has no batch axis, so the rows cannot be checked in chunks")
        joined[name] = np.concatenate(pieces, axis=0)[:rows]
    return joined


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
    array = as_numpy(labels)
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
