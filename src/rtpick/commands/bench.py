"""`rtpick bench`, `rtpick report` and `rtpick diff`: thin wrappers over rtpick.bench and rtpick.report."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import typer
from rich.console import Console

from rtpick.commands.app import app, handles_errors
from rtpick.errors import RtpickError
from rtpick.options import OPTION_HELP

console = Console()


def _ints(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise RtpickError(f"{flag} {text!r} must be whole numbers separated by commas, e.g. 1,8,32") from exc


@app.command()
@handles_errors
def bench(
    model: str = typer.Argument(None, help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    runtimes: str = typer.Option(None, "--runtimes", "-r", help="runtime:precision[,...] (default ort-cpu:fp32)"),
    scenario: str = typer.Option("single-stream", "--scenario", "-s",
                                 help="single-stream | offline | server | multistream"),
    batch: str = typer.Option(None, "--batch", "-b", help="Batch sizes, e.g. 1,8,32 (server: max batch)."),
    quick: bool = typer.Option(False, "--quick", help="A few seconds per configuration."),
    duration: float = typer.Option(None, "--duration", help="Seconds of measurement per configuration/trial."),
    rate: float = typer.Option(None, "--rate", help="server: target queries per second (Poisson)."),
    find_max: bool = typer.Option(False, "--find-max", help="server: search the highest rate meeting --p99-ms."),
    p99_ms: float = typer.Option(None, "--p99-ms", help="server --find-max: the p99 bound in milliseconds."),
    max_queue_delay_ms: float = typer.Option(None, "--max-queue-delay-ms", help="Dynamic batcher queue delay."),
    streams: int = typer.Option(None, "--streams", help="multistream: number of cameras."),
    fps: float = typer.Option(None, "--fps", help="multistream: frames per second per camera."),
    deadline_ms: float = typer.Option(None, "--deadline-ms", help="multistream: frame deadline (default 1/fps)."),
    find_max_streams: bool = typer.Option(False, "--find-max-streams",
                                          help="multistream: the most cameras keeping 99% of frames on time."),
    json_out: str = typer.Option(None, "--json", help="Write results here (after every configuration)."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim: name:1x3x224x224 (repeatable)."),
    input_range: list[str] = typer.Option([], "--input-range", help="Synthetic input range name:lo:hi."),
    option: list[str] = typer.Option([], "--option", "-o", help=OPTION_HELP),
    io: str = typer.Option("host", "--io", help="host: inputs start in host memory; device: on the GPU."),
    no_isolate: bool = typer.Option(False, "--no-isolate", help="Run configurations in this process."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds before a configuration is killed."),
    samples: bool = typer.Option(False, "--samples", help="Store raw latency samples in the results."),
    blocks: int = typer.Option(None, "--blocks", help="Blocks per measurement for the CIs (default 10, quick 5)."),
    block_pause: float = typer.Option(0.0, "--block-pause", help="Idle seconds between blocks."),
    repeats: int = typer.Option(1, "--repeats", help="single-stream/offline: measure each configuration in N "
                                "separate processes; CIs from the spread between them (N times the time)."),
    input_file: str = typer.Option(None, "--input", help="Labelled set inputs (.npz/.npy), with --labels."),
    labels: str = typer.Option(None, "--labels", help="True classes (.npy/.npz) for top-1 accuracy."),
    no_accuracy: bool = typer.Option(False, "--no-accuracy", help="Skip scoring the labelled set."),
    config: str = typer.Option(None, "--config", help="A deploy file (rtpick recommend --save): use it as it is."),
) -> None:
    """Measure MODEL on each configuration in an MLPerf-style scenario."""
    from rtpick.data import parse_range, parse_shape
    from rtpick.options import parse_option_args
    from rtpick.perf.run import BenchRequest, run_bench
    from rtpick.report import failures, headline, label, table
    from rtpick.runtimes.registry import parse_configs

    options: dict[str, Any] = parse_option_args(option)
    batches, shapes = _ints(batch, "--batch"), dict(parse_shape(s) for s in shape)
    if config is not None:
        from rtpick.deploy import for_command

        model, runtimes, options, batches, shapes = for_command(config, model, runtimes, options, batches, shapes)
    if model is None:
        raise RtpickError("give a MODEL (or --config deploy.json)")
    configs = parse_configs(runtimes or "ort-cpu:fp32")
    request = BenchRequest(
        scenario=scenario, batches=batches, quick=quick, duration_s=duration, rate_qps=rate,
        find_max=find_max, p99_ms=p99_ms, streams=streams, fps=fps, deadline_ms=deadline_ms,
        find_max_streams=find_max_streams, max_queue_delay_ms=max_queue_delay_ms,
        shapes=shapes, ranges=dict(parse_range(r) for r in input_range),
        options=options, io=io, isolate=not no_isolate, timeout_s=timeout, keep_samples=samples,
        blocks=blocks, block_pause_s=block_pause, input_path=input_file, labels=labels, accuracy=not no_accuracy,
        repeats=repeats,
    )
    command = "rtpick " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else \
        "rtpick bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def started(what: str) -> None:
        if console.is_terminal:
            return  # the progress bar shows it
        console.print(f"[dim]measuring {what} ({scenario})...[/]")

    def finished(record: dict) -> None:
        if record["status"] != "ok":
            console.print(f"  {label(record)}: [red]{record['status']}[/]: {record.get('error', '')}")
            return
        h = headline(record)
        method = record["metrics"].get("method", "")
        figures = ", ".join(
            f"{key} {h[key]:.4g} ms" for key in ("p50", "p99") if isinstance(h.get(key), float)
        )
        if isinstance(h.get("throughput"), float):
            figures += f", {h['throughput']:,.1f} samples/s"
        if h.get("max_qps") is not None:
            figures += f", max {h['max_qps']:,.1f} q/s under the p99 bound"
        if h.get("max_streams") is not None:
            figures += f", max {h['max_streams']} cameras"
        if h.get("on_time") is not None:
            figures += f", {h['on_time']:.1%} frames on time"
        if record.get("accuracy") is not None:
            figures += f", top-1 {record['accuracy']:.2%} on {record['accuracy_detail']['n']} labelled rows"
        elif (record.get("accuracy_detail") or {}).get("error"):
            figures += f", accuracy not measured: {record['accuracy_detail']['error']}"
        console.print(f"  {label(record)}: {figures}  [dim]({method})[/]")
        for warning in record.get("warnings", []):
            console.print(f"  [yellow]warning[/]: {warning}")

    from rtpick.perf.progress import for_console

    with for_console(console) as progress:
        results = run_bench(model, configs, request, json_path=json_out, command=command,
                            on_record=finished, on_start=started, progress=progress)
    console.print(table(results))
    for line in failures(results):
        console.print(f"[red]failed[/] {line}")
    for config, sweep in results.sweeps.items():
        console.print(f"{config}: throughput stops growing at batch {sweep['saturation_batch']}"
                      + (f" (sweep stopped: {sweep['stopped']})" if sweep.get("stopped") else ""))
    if json_out:
        console.print(f"results written to {json_out}")
    if not results.ok():
        raise typer.Exit(1)


@app.command()
@handles_errors
def report(
    results_file: str = typer.Argument(..., help="A results file written by rtpick bench --json."),
    out: str = typer.Option(None, "--out", help="Output prefix (default: next to the results file)."),
) -> None:
    """Write Markdown and a self-contained HTML page (with plots) from a results file."""
    from rtpick.report import table, write_reports
    from rtpick.results import Results

    console.print(table(Results.read(results_file)))
    for path in write_reports(results_file, out):
        console.print(f"wrote {path}")


@app.command()
@handles_errors
def diff(
    old: str = typer.Argument(..., help="The earlier results file."),
    new: str = typer.Argument(..., help="The later results file."),
) -> None:
    """Compare two results files; flag latency changes larger than the measured noise (95% CIs)."""
    from rich.table import Table

    from rtpick.report import ci_words
    from rtpick.report import diff as compare_results
    from rtpick.results import Results

    before, after = Results.read(old), Results.read(new)
    changes = compare_results(before, after)
    if not changes:
        raise RtpickError("the two files share no successful configuration to compare")
    kinds = sorted({ci_words(before), ci_words(after)})
    t = Table(title=f"rtpick diff {old} -> {new}",
              caption=f"latency in ms on the host clock; noise = each file's own intervals ({' vs '.join(kinds)})")
    for col in ("configuration", "metric", "old ms [95% CI]", "new ms [95% CI]", "change", "verdict"):
        t.add_column(col)

    def figure(value: float, ci: list[float] | None) -> str:
        return f"{value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")

    for c in changes:
        verdict = f"[red]{c.note}[/]" if c.significant else c.note
        t.add_row(c.key, c.metric, figure(c.old, c.old_ci), figure(c.new, c.new_ci), f"{c.ratio - 1:+.1%}", verdict)
    console.print(t)
    flagged = [c for c in changes if c.significant]
    console.print(f"{len(flagged)} of {len(changes)} figures changed by more than the measured noise")
