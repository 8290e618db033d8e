"""`rtpick compare` (do the runtimes agree?) and `rtpick run` (one configuration, outputs to an .npz).

Thin wrappers: feeds, metrics and the tolerance policy live in `rtpick.comparison`; this module parses the command
line, prints the table and writes files atomically. Exit status: 0 when every configuration is within tolerance,
1 when any is not (or did not build or run), 2 for a usage error.
"""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from rtpick.commands.app import app, handles_errors, make_console
from rtpick.errors import BuildError, RtpickError
from rtpick.model import shape_text
from rtpick.options import OPTION_HELP, parse_option_args, resolve_options

console = make_console()

_STYLE = {"reference": "cyan", "pass": "green", "mismatch": "red", "error": "red", "unchecked": "yellow"}


def load_labels(text: str) -> tuple[np.ndarray, Path, str | None]:
    """``labels.npy``, ``file.npz`` (its only array, or one named label/labels) or ``file.npz:key``."""
    from rtpick.data import load_npz

    path_text, key = text, None
    if Path(text).suffix not in (".npy", ".npz") and ":" in text:
        path_text, _, key = text.rpartition(":")
    path = Path(path_text)
    arrays = load_npz(path)
    if "" in arrays:
        return arrays[""], path, None
    if key is None:
        if len(arrays) == 1:
            key = next(iter(arrays))
        else:
            key = next((k for k in ("label", "labels") if k in arrays), None)
            if key is None:
                raise RtpickError(f"--labels {text!r}: say which array holds the labels: {path}:KEY, "
                                  f"KEY one of {sorted(arrays)}")
    if key not in arrays:
        raise RtpickError(f"--labels {text!r}: {path} has no array {key!r}; it has {sorted(arrays)}")
    return arrays[key], path, key


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _write(path: str, data: bytes, what: str) -> None:
    """Atomically replace `path`; a write that fails (disk full, folder gone) is one line, not a traceback."""
    from rtpick.files import atomic_write_bytes

    try:
        atomic_write_bytes(Path(path), data)
    except OSError as exc:
        raise RtpickError(f"cannot write the {what} to {path!r}: {exc.strerror or exc}") from exc


def _write_json(path: str, payload: dict[str, Any]) -> None:
    _write(path, (json.dumps(payload, indent=2) + "\n").encode(), "comparison")


def _require_outputs(spec: Any) -> None:
    if not spec.outputs:
        raise RtpickError(f"model {spec.name!r} has no outputs, so there is nothing to run or compare; "
                          "check that the graph lists its outputs")


def _run_once(session: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """One inference; a failure inside the runtime (a bad reshape, an unsupported value) is one line."""
    try:
        return session.run(feeds)
    except RtpickError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types; the user needs what and where
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BuildError(f"{session.config}: inference failed: {type(exc).__name__}: {text}") from exc


def _command_line() -> str:
    return "rtpick " + shlex.join(sys.argv[1:])


@app.command()
@handles_errors
def compare(
    model: str = typer.Argument(..., help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    runtimes: str = typer.Option(..., "--runtimes", "-r",
                                 help="Configurations: runtime:precision[,runtime:precision...]."),
    reference: str = typer.Option(None, "--reference", help="Reference configuration (default: first fp32)."),
    atol: float = typer.Option(None, "--atol", help="Absolute tolerance for every precision (overrides)."),
    rtol: float = typer.Option(None, "--rtol", help="Relative tolerance for every precision (overrides)."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim: name:1x3x224x224 (repeatable)."),
    batch: int = typer.Option(None, "--batch", help="Batch size for a dynamic batch axis."),
    input_path: str = typer.Option(None, "--input", help="Feeds: an .npz (one array per input), .npy or image folder."),
    input_range: list[str] = typer.Option([], "--input-range", help="Synthetic input range name:lo:hi (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic feeds."),
    labels: str = typer.Option(None, "--labels", help="Class labels for accuracy: labels.npy or file.npz[:key]."),
    json_path: str = typer.Option(None, "--json", help="Also write the comparison to this JSON file."),
    option: list[str] = typer.Option([], "--option", "-o", help=OPTION_HELP),
    weights: str = typer.Option(None, "--weights", help="Trained weights for a torchvision:<name> model."),
) -> None:
    """Run the same feeds through each configuration and check every output against a reference."""
    from rtpick.comparison.policy import TOLERANCES, tolerance_for
    from rtpick.comparison.run import compare_configs
    from rtpick.data import parse_range, parse_shape, read_inputs, validate_feeds
    from rtpick.sources import load_model

    configs = [part.strip() for part in runtimes.split(",") if part.strip()]
    if not configs:
        raise RtpickError("-r needs at least one runtime:precision")
    runtime_names = [c.partition(":")[0] for c in configs]
    if reference:
        runtime_names.append(reference.partition(":")[0])
    options = resolve_options(parse_option_args(option), runtime_names)
    shapes = dict(parse_shape(s) for s in shape)
    ranges = dict(parse_range(r) for r in input_range)
    for precision in {c.partition(":")[2] or "fp32" for c in configs}:
        if precision in TOLERANCES:
            tolerance_for(precision, atol, rtol)  # a bad --atol/--rtol is a usage error before anything runs

    if json_path:
        from rtpick.files import check_writable

        check_writable(json_path, "comparison")
    label_array = None
    feeds = None
    description = None
    loaded = load_model(model, weights=weights)
    _require_outputs(loaded.spec)
    if labels:
        label_array, label_file, label_key = load_labels(labels)
        if input_path and label_key and _same_file(label_file, Path(input_path)):
            # one .npz holding inputs and labels: the labels are not a feed
            arrays = read_inputs(loaded.spec, {}, input_path)
            arrays.pop(label_key, None)
            feeds = validate_feeds(loaded.spec.inputs, arrays, source=input_path)
            description = f"from {input_path} (without {label_key!r}, the labels)"
            input_path = None

    from rtpick.perf.progress import phases_for

    with phases_for(console, prefix="compare") as phases:  # a cold torch.compile is minutes: say what runs
        result = compare_configs(
            loaded, configs, feeds=feeds, input_path=input_path, shapes=shapes, batch=batch, seed=seed,
            reference=reference, atol=atol, rtol=rtol, input_ranges=ranges, options=options, labels=label_array,
            feeds_description=description, progress=phases,
        )
    _print(result, with_accuracy=label_array is not None)
    if json_path:
        _write_json(json_path, {**result.to_dict(), "command": _command_line()})
        console.print(f"written: {escape(json_path)}")
    raise typer.Exit(0 if result.passed else 1)


def _print(result: Any, with_accuracy: bool) -> None:
    spec = result.model
    shapes = ", ".join(f"{k}={shape_text(v)}" for k, v in result.feed_shapes.items())
    console.print(f"[bold]{escape(spec.name)}[/]  reference: [cyan]{escape(result.reference)}[/]")
    console.print(f"feeds: {escape(result.feeds_description)}; shapes {escape(shapes)}")
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    table = Table(title="agreement with the reference")
    columns = ["config", "status", "max abs", "max rel", "rel L2", "cosine", "top-1", "top-5"]
    if with_accuracy:
        columns.append("accuracy")
    columns += ["NaN/Inf", "reason"]
    for column in columns:
        table.add_column(column, no_wrap=column != "reason", overflow="fold")
    for row in result.rows:
        style = _STYLE.get(row.status, "")
        cells = [
            escape(row.label), f"[{style}]{row.status}[/]" if style else row.status,
            _num(row.max_abs), _num(row.max_rel), _num(row.rel_l2), _num(row.cosine, ".6f"),
            _pct(row.top1_agreement), _pct(row.top5_agreement),
        ]
        if with_accuracy:
            cells.append(_pct(row.accuracy))
        cells.append(f"{row.nan}/{row.inf}" if row.outputs else "-")
        cells.append(escape(row.reason))
        table.add_row(*cells)
    console.print(table)
    used = {}
    for row in result.rows:
        if row.tolerance is not None and row.status != "reference":
            used.setdefault(row.precision, row.tolerance.describe())
    for precision, text in used.items():
        console.print(f"tolerance {precision}: {escape(text)}")
    for row in result.rows:
        for note in row.notes:
            console.print(f"note {escape(row.config)}: {escape(note)}")
    verdict = "[green]all within tolerance[/]" if result.passed else "[red]not all within tolerance[/]"
    console.print(f"{verdict} (policy: rtpick.comparison.policy.TOLERANCES; --atol/--rtol override)")


@app.command()
@handles_errors
def run(
    model: str = typer.Argument(None, help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    runtime: str = typer.Option(None, "--runtime", "-r", help="One configuration: runtime:precision (ort-cpu:fp32)."),
    input_path: str = typer.Option(None, "--input", help="Feeds: an .npz (one array per input), .npy or image folder."),
    output: str = typer.Option(None, "--output", help="Write the outputs to this .npz."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim: name:1x3x224x224 (repeatable)."),
    batch: int = typer.Option(None, "--batch", help="Batch size for a dynamic batch axis."),
    input_range: list[str] = typer.Option([], "--input-range", help="Synthetic input range name:lo:hi (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic feeds."),
    option: list[str] = typer.Option([], "--option", "-o", help=OPTION_HELP),
    weights: str = typer.Option(None, "--weights", help="Trained weights for a torchvision:<name> model."),
    config: str = typer.Option(None, "--config", help="A deploy file (rtpick recommend --save): use it as it is."),
) -> None:
    """Run one configuration once and print (or save) its outputs."""
    import time

    from rtpick.comparison.run import make_feeds
    from rtpick.data import parse_range, parse_shape
    from rtpick.runtimes.registry import get_runtime, parse_config
    from rtpick.sources import load_model

    deployed = None
    if config is not None:
        from rtpick.deploy import for_command

        given = {"--option": option} if option else {}
        model, runtime, deployed, batches, fixed = for_command(config, model, runtime, given,
                                                                [batch] if batch else None, dict.fromkeys(shape))
        batch, shape = batches[0], [f"{k}:{'x'.join(map(str, v))}" for k, v in fixed.items()]
    if model is None:
        raise RtpickError("give a MODEL (or --config deploy.json)")
    runtime = runtime or "ort-cpu:fp32"
    if "," in runtime:
        raise RtpickError(f"rtpick run takes one configuration, not {runtime!r}; use rtpick compare for several")
    name, precision = parse_config(runtime)
    options = deployed if deployed is not None else resolve_options(parse_option_args(option), [name]).get(name, {})
    if output is not None:
        out_path = Path(output)
        if out_path.suffix != ".npz":
            raise RtpickError(f"--output {output!r} must be an .npz file")
        if input_path and _same_file(out_path, Path(input_path)):
            raise RtpickError(f"--output {output!r} is the input file; write the outputs to another file")
        from rtpick.files import check_writable

        check_writable(out_path, "outputs")  # a folder, a path under a file, a name too long: one line
    loaded = load_model(model, weights=weights)
    _require_outputs(loaded.spec)
    feeds, description = make_feeds(
        loaded.spec, input_path=input_path, shapes=dict(parse_shape(s) for s in shape), batch=batch, seed=seed,
        input_ranges=dict(parse_range(r) for r in input_range),
    )
    feed_shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    with get_runtime(name).build(loaded, precision, feed_shapes, **options) as session:
        start = time.perf_counter()
        outputs = _run_once(session, feeds)
        elapsed = time.perf_counter() - start
        build_s = session.info.build_time_s
        notes = list(session.info.notes)
    console.print(f"[bold]{escape(loaded.spec.name)}[/] on {name}:{precision}  build {build_s:.2f} s, "
                  f"one run {elapsed * 1e3:.2f} ms (first call, not a benchmark)")
    console.print(f"feeds: {escape(description)}; shapes "
                  + escape(", ".join(f"{k}={shape_text(v)}" for k, v in feed_shapes.items())))
    for note in notes:
        console.print(f"note: {escape(note)}")
    table = Table(title="outputs")
    for column in ("output", "dtype", "shape", "min", "max", "mean", "NaN", "Inf"):
        table.add_column(column)
    arrays = {key: np.asarray(value) for key, value in outputs.items()}
    for key, value in arrays.items():
        table.add_row(escape(key), str(value.dtype), "x".join(map(str, value.shape)) or "scalar", *_summary(value))
    console.print(table)
    if output is not None:
        _write(output, npz_bytes(arrays), "outputs")
        console.print(f"written: {escape(output)}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive in memory (any output name works as a key, even ``file``), for an atomic write."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def _summary(value: np.ndarray) -> list[str]:
    if value.dtype.kind not in "fiub" or value.size == 0:
        return ["-", "-", "-", "-", "-"]
    as_float = value.astype(np.float64)
    finite = as_float[np.isfinite(as_float)]
    nan = int(np.isnan(as_float).sum())
    inf = int(np.isinf(as_float).sum())
    if finite.size == 0:
        return ["-", "-", "-", str(nan), str(inf)]
    return [f"{finite.min():.4g}", f"{finite.max():.4g}", f"{finite.mean():.4g}", str(nan), str(inf)]
