"""`rtpick runtimes` and `rtpick inspect`: what this machine can run, and what a model is."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from rtpick.commands.app import app, handles_errors, make_console
from rtpick.errors import RtpickError

console = make_console()


@app.command()
@handles_errors
def runtimes(
    as_json: bool = typer.Option(False, "--json", help="Print the listing as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show each runtime's options."),
) -> None:
    """List every runtime, whether it runs on this machine, and why not."""
    from rtpick.api import runtimes as list_runtimes

    rows = list_runtimes()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="rtpick runtimes on this machine")
    # The runtime name is what a user types next, so it is never cut: its column is as wide as the longest name
    # and never wraps; every other column folds its text onto more lines instead of cutting it.
    table.add_column("runtime", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    for column in ("device", "precisions", "available", "why not / note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        note = row["reason"]
        if not row["verified"]:
            note = (note + "; " if note else "") + "written to the documented API, not yet run by rtpick"
        table.add_row(
            row["name"], row["device"], ", ".join(row["precisions"]),
            "[green]yes[/]" if row["available"] else "[red]no[/]", escape(note),
        )
    console.print(table)
    if verbose:
        _print_options([row["name"] for row in rows])


def _print_options(names: list[str]) -> None:
    """Each runtime's options, one per line with its default and what it does, under the runtime's name: on
    lines of their own they wrap at words on any terminal width instead of being squeezed into a table cell."""
    from rtpick.runtimes.registry import get_runtime

    for name in names:
        options = get_runtime(name).options
        console.print(f"\n[bold]{name}[/] options" + ("" if options else ": none"), highlight=False)
        for key, option in options.items():
            choices = f" (one of {', '.join(map(str, option.choices))})" if option.choices else ""
            console.print(f"  {key}={option.default!r}: {escape(option.help)}{escape(choices)}", highlight=False)


@app.command()
@handles_errors
def inspect(
    model: str = typer.Argument(..., help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim: name:1x3x224x224 (repeatable)."),
    weights: str = typer.Option(None, "--weights", help="Trained weights for a torchvision:<name> model."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show a model's inputs, outputs, parameters, operators, opset and a FLOP estimate."""
    from rtpick.data import parse_shape
    from rtpick.model import resolve_shapes, shape_text
    from rtpick.sources import load_model
    from rtpick.summary import summarize

    loaded = load_model(model, weights=weights)
    shapes = dict(parse_shape(s) for s in shape)
    unknown = sorted(set(shapes) - set(loaded.spec.input_names()))
    if unknown:
        raise RtpickError(f"--shape names {unknown[0]!r}, which is not an input; the inputs are "
                          f"{loaded.spec.input_names()}")
    # a wrong rank, a changed fixed dim, a dim <= 0: one line and exit 2 (the FLOP count would be wrong)
    resolve_shapes([t for t in loaded.spec.inputs if t.name in shapes], shapes, None)
    summary = summarize(loaded, shapes)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    spec = loaded.spec
    console.print(f"[bold]{spec.name}[/]  source: {spec.source}  sha256: {spec.sha256[:16]}")
    for note in summary.notes:
        console.print(f"note: {note}")
    for title, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        console.print(f"{title}:")
        for tensor in tensors:
            limit = f"  (indexes a table of {tensor.index_limit} rows)" if tensor.index_limit else ""
            console.print(f"  {escape(tensor.describe())}{limit}")
    console.print(f"parameters: {summary.parameters:,}")
    console.print("opset: " + ", ".join(f"{d} {v}" for d, v in summary.opsets.items()))
    if summary.flops is not None:
        at = ", ".join(f"{k}={shape_text(v)}" for k, v in summary.flops_shapes.items())
        console.print(f"FLOPs: {summary.flops / 1e9:.4g} GFLOP per inference at {at} ({summary.flops_note})")
    else:
        console.print(f"FLOPs: {summary.flops_note}")
    ops = ", ".join(f"{op} {n}" for op, n in summary.operators.items())
    console.print(f"operators ({sum(summary.operators.values())}): {ops}")
