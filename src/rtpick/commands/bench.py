"""`rtpick bench`, `rtpick report` and `rtpick diff`: thin wrappers over rtpick.bench and rtpick.report."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from rtpick.commands.app import app, handles_errors, make_console
from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.perf.request import flag_help, spelling
from rtpick.perf.scenarios.registry import DEFAULT_SCENARIO

console = make_console()


def _ints(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise RtpickError(f"{flag} {text!r} must be whole numbers separated by commas, e.g. 1,8,32") from exc


def _opt(name: str, default: Any = None) -> Any:
    """A typer option spelled as the request's or scenario's field `name` is (one spelling everywhere)."""
    return typer.Option(default, *spelling(name), help=flag_help(name))


@app.command()
@handles_errors
def bench(
    model: str = typer.Argument(None, help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    runtimes: str = typer.Option(None, "--runtimes", "-r", help="runtime:precision[,...] (default ort-cpu:fp32)"),
    scenario: str = _opt("scenario", DEFAULT_SCENARIO),
    batch: str = _opt("batches"),
    quick: bool = _opt("quick", False),
    seed: int = _opt("seed", 0),
    duration: float = _opt("duration_s"),
    rate: float = _opt("rate_qps"),
    find_max: bool = _opt("find_max", False),
    p99_ms: float = _opt("p99_ms"),
    max_queue_delay_ms: float = _opt("max_queue_delay_ms"),
    max_queue_size: int = _opt("max_queue"),
    timeout_ms: float = _opt("timeout_ms"),
    streams: int = _opt("streams"),
    fps: float = _opt("fps"),
    deadline_ms: float = _opt("deadline_ms"),
    find_max_streams: bool = _opt("find_max_streams", False),
    json_out: str = typer.Option(None, "--json", help="Write results here (kept as NAME.partial until the run "
                                 "is complete)."),
    shape: list[str] = _opt("shapes", []),
    input_range: list[str] = _opt("ranges", []),
    option: list[str] = _opt("options", []),
    io: str = _opt("io", "host"),
    no_isolate: bool = _opt("isolate", False),
    timeout: float = _opt("timeout_s"),
    samples: bool = _opt("keep_samples", False),
    blocks: int = _opt("blocks"),
    block_pause: float = _opt("block_pause_s", 0.0),
    repeats: int = _opt("repeats", 1),
    input_file: str = _opt("input_path"),
    labels: str = _opt("labels"),
    no_accuracy: bool = _opt("accuracy", False),
    config: str = typer.Option(None, "--config", help="A deploy file (rtpick recommend --save): use it as it is."),
) -> None:
    """Measure MODEL on each configuration in an MLPerf-style scenario.

    Exit status: 0 when every configuration was measured, 1 when any failed, crashed or could not be written,
    2 for a usage error.
    """
    from rtpick.data import parse_range, parse_shape
    from rtpick.options import parse_option_args
    from rtpick.perf.request import BenchRequest, command_line
    from rtpick.perf.run import run_bench
    from rtpick.report import failures, table
    from rtpick.runtimes.registry import parse_configs

    options: dict[str, Any] = parse_option_args(option)
    batches, shapes = _ints(batch, "--batch"), dict(parse_shape(s) for s in shape)
    if config is not None:
        from rtpick.deploy import for_command

        model, runtimes, options, batches, shapes = for_command(config, model, runtimes, options, batches, shapes)
    if model is None:
        raise RtpickError("give a MODEL (or --config deploy.json)")
    configs = parse_configs(runtimes or "ort-cpu:fp32")
    request = BenchRequest.create(
        scenario, batches=batches, quick=quick, seed=seed, duration_s=duration, rate_qps=rate,
        find_max=find_max, p99_ms=p99_ms, streams=streams, fps=fps, deadline_ms=deadline_ms,
        find_max_streams=find_max_streams, max_queue_delay_ms=max_queue_delay_ms,
        max_queue=max_queue_size, timeout_ms=timeout_ms,
        shapes=shapes, ranges=dict(parse_range(r) for r in input_range),
        options=options, io=io, isolate=not no_isolate, timeout_s=timeout, keep_samples=samples,
        blocks=blocks, block_pause_s=block_pause, input_path=input_file, labels=labels, accuracy=not no_accuracy,
        repeats=repeats,
    )
    command = command_line(model, configs, request, json_out)

    def started(what: str) -> None:
        if console.is_terminal:
            return  # the progress bar shows it
        console.print(f"[dim]measuring {what} ({escape(scenario)})...[/]")

    def finished(record: Record) -> None:
        if not record.ok:
            console.print(f"  {escape(record.label)}: [red]{escape(record.status)}[/]: {escape(record.error or '')}")
            return
        h = record.headline()
        figures = ", ".join(f"{key} {value:.4g} ms" for key, value in (("p50", h.p50), ("p99", h.p99))
                            if value is not None)
        if h.throughput is not None:
            figures += f", {h.throughput:,.1f} samples/s"
        if h.result:
            figures += f", {h.result}"
        if record.accuracy is not None:
            figures += f", top-1 {record.accuracy:.2%} on {(record.accuracy_detail or {}).get('n')} labelled rows"
        elif (record.accuracy_detail or {}).get("error"):
            figures += f", accuracy not measured: {(record.accuracy_detail or {})['error']}"
        console.print(f"  {escape(record.label)}: {escape(figures.lstrip(', '))}  [dim]({escape(record.method)})[/]")
        for warning in record.warnings or []:
            console.print(f"  [yellow]warning[/]: {escape(warning)}")

    from rtpick.perf.progress import for_console

    with for_console(console) as progress:
        results = run_bench(model, configs, request, json_path=json_out, command=command,
                            on_record=finished, on_start=started, progress=progress)
    console.print(table(results))
    for line in failures(results):
        console.print(f"[red]failed[/] {escape(line)}")
    for name, sweep in results.sweeps.items():
        console.print(f"{name}: throughput stops growing at batch {sweep['saturation_batch']}"
                      + (f" (sweep stopped: {sweep['stopped']})" if sweep.get("stopped") else ""))
    for error in results.write_errors:
        console.print(f"[red]write failed[/]: {escape(error)}")
    if json_out and not results.write_errors:
        console.print(f"results written to {json_out}")
    if results.failed() or results.write_errors or not results.configurations:
        raise typer.Exit(1)


@app.command()
@handles_errors
def report(
    results_file: str = typer.Argument(..., help="A results file written by rtpick bench --json."),
    out: str = typer.Option(None, "--out", help="Output prefix (default: next to the results file)."),
) -> None:
    """Write Markdown and a self-contained HTML page (with plots) from a results file."""
    from rtpick.plots import NO_PLOTS, have_matplotlib
    from rtpick.report import table, write_reports
    from rtpick.results import Results

    console.print(table(Results.read(results_file)))
    if not have_matplotlib():
        console.print(f"[yellow]tables only[/]: {escape(NO_PLOTS)}")
    for path in write_reports(results_file, out):
        console.print(f"wrote {escape(str(path))}")


@app.command()
@handles_errors
def diff(
    old: str = typer.Argument(..., help="The earlier results file."),
    new: str = typer.Argument(..., help="The later results file."),
) -> None:
    """Compare two results files; flag latency changes larger than the measured noise (95% CIs).

    Exit status: 0 when nothing changed beyond the noise, 1 when a change is flagged (so CI can gate on it),
    2 when the files cannot be compared (malformed, different models, nothing in common).
    """
    from rich.table import Table

    from rtpick.report import check_same_model, ci_words
    from rtpick.report import diff as compare_results
    from rtpick.results import Results

    before, after = Results.read(old), Results.read(new)
    check_same_model(before, after)
    changes = compare_results(before, after)
    if not changes:
        raise RtpickError("the two files share no successful configuration to compare")
    kinds = sorted({ci_words(before), ci_words(after)})
    t = Table(title=escape(f"rtpick diff {old} -> {new}"),
              caption=f"p50/p99: latency in ms on the host clock; max_qps: queries/s; max_streams: cameras; "
                      f"noise = each file's own intervals ({' vs '.join(kinds)})")
    for col in ("configuration", "metric", "old [95% CI]", "new [95% CI]", "change", "verdict"):
        t.add_column(col)

    def figure(value: float, ci: list[float] | None) -> str:
        return f"{value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

    for c in changes:
        verdict = f"[red]{escape(c.note)}[/]" if c.significant else escape(c.note)
        t.add_row(escape(c.key), c.metric, figure(c.old, c.old_ci), figure(c.new, c.new_ci),
                  f"{c.ratio - 1:+.1%}", verdict)
    console.print(t)
    flagged = [c for c in changes if c.significant]
    console.print(f"{len(flagged)} of {len(changes)} figures changed by more than the measured noise")
    if flagged:
        raise typer.Exit(1)
