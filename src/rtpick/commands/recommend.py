"""`rtpick recommend`: a thin wrapper over `rtpick.recommend` that prints the ranking and saves the choice.

Exit status: 0 with a chosen configuration, 1 when no configuration meets the budget (the closest are printed
with how far they miss), 2 for a usage error (contradictory constraints, a results file for another model).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from rtpick.commands.app import app, handles_errors, make_console
from rtpick.options import OPTION_HELP

console = make_console()


def _fmt(value: float | None, spec: str = ".3g", unit: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{unit}"


def _accuracy(row: Any) -> str:
    parts = []
    if row.accuracy is not None:
        parts.append(f"top-1 {row.accuracy:.2%}")
    if row.agreement is not None:
        parts.append(f"agree {row.agreement:.2%}")
    return "\n".join(parts) or "-"


def _memory(row: Any) -> str:
    parts = []
    if row.host_mem_mb is not None:
        parts.append(f"host {row.host_mem_mb:,.0f} MB")
    if row.gpu_mem_mb is not None:
        parts.append(f"GPU {row.gpu_mem_mb:,.0f} MB")
    return "\n".join(parts) or "-"


def _p99(row: Any, how: str) -> str:
    if row.p99_ms is None:
        return "-"
    text = f"{row.p99_ms:.3g} ms\n[dim]{how}, b{row.batch}[/]"
    if row.on_time_fraction is not None:
        text += f"\n{row.on_time_fraction:.1%} on time"
    return text


def _energy(row: Any) -> str:
    """Energy per inference with its unit, and the throttling seen while measuring (flagged in words)."""
    from rtpick.recommendation import joules_text

    text = "-" if row.joules_per_inference is None else f"{joules_text(row.joules_per_inference)}/inf"
    if row.throttled:
        text += f"\n[yellow]THROTTLED: {escape(row.throttled)}[/]"
    return text


HIDDEN = ("unavailable here", "not for this model", "excluded by --cpu-only")  # one summary line each unless -v


def hidden_summary(rec: Any, verbose: bool) -> list[str]:
    """One line per kind of row left out of the table (runtimes that cannot run here), unless `verbose`."""
    if verbose:
        return []
    out = []
    for verdict in HIDDEN:
        rows = [row for row in rec.rows() if row.verdict == verdict]
        if not rows:
            continue
        runtimes = list(dict.fromkeys(row.runtime for row in rows))
        reasons = list(dict.fromkeys(row.reason for row in rows))
        reason = reasons[0] if len(reasons) == 1 else f"{len(reasons)} reasons"
        out.append(f"{len(rows)} configurations {verdict} ({', '.join(runtimes)}): {reason}; -v lists them")
    return out


def render(rec: Any, verbose: bool = True) -> Table:
    """The ranking as a rich table: every figure with its unit; the chosen one first."""
    c = rec.constraints
    caption = ("p99: host clock after synchronize, per query; throughput: samples/s; build: s; memory: peak "
               "during the measurement; accuracy: top-1 on the labelled data / agreement with the fp32 reference")
    if c.expected_inferences:
        caption += f"; cost amortises build time over {c.expected_inferences:,} inferences"
    shown = [row for row in rec.rows() if verbose or row.verdict not in HIDDEN]
    energy = any(row.joules_per_inference is not None or row.throttled for row in shown)
    if energy:
        caption += ("; energy: GPU joules per inference from NVML's energy counter over the measured window "
                    "(THROTTLED: clock-event reasons seen while measuring)")
    if c.max_joules is not None:
        caption += f"; --max-joules {c.max_joules:g} J per inference"
    t = Table(title=f"rtpick recommend: {rec.model.get('name', '')}, budget {c.describe()}", caption=caption)
    columns = ("rank", "configuration", "p99", "throughput", *(["energy"] if energy else []), "accuracy", "build",
               "memory", "verdict / reason")
    for column in columns:
        t.add_column(column, no_wrap=column in ("rank", "configuration"))
    for row in shown:
        verdict = row.verdict
        style = {"chosen": "bold green", "meets": "green", "over budget": "yellow"}.get(verdict, "red")
        if verdict in (*HIDDEN, "not measured"):
            style = "dim"
        t.add_row(
            str(row.rank) if row.rank else "-", escape(row.name), _p99(row, c.scenario),
            _fmt(row.throughput, ",.0f", "/s"), *([_energy(row)] if energy else []), _accuracy(row),
            _fmt(row.build_time_s, ".3g", " s"),
            _memory(row), f"[{style}]{verdict}[/]: {escape(row.reason)}",
        )
    return t


def _options(items: list[str], runtimes: str | None, cpu_only: bool) -> dict[str, dict[str, Any]]:
    """``--option`` per runtime, checked against the runtimes recommend will consider: those of -r, else every
    one that runs here (so an option that would reach none of them is refused, not silently ignored)."""
    from rtpick.options import parse_option_args, resolve_options
    from rtpick.recommendation import plan

    parsed = parse_option_args(items)
    if not parsed:
        return {}
    selected = [part for part in runtimes.split(",") if part.strip()] if runtimes else plan(None, cpu_only)[0]
    return resolve_options(parsed, selected)


@app.command()
@handles_errors
def recommend(
    model: str = typer.Argument(..., help="An .onnx or .pt2 file, torchvision:<name> or rtpick:digits."),
    p99_ms: float = typer.Option(None, "--p99-ms", help="Latency budget: p99 of one query, in milliseconds."),
    streams: int = typer.Option(None, "--streams", help="Cameras to keep up with (with --fps)."),
    fps: float = typer.Option(None, "--fps", help="Frames per second per camera (with --streams)."),
    min_throughput: float = typer.Option(None, "--min-throughput", help="Samples per second needed (offline)."),
    runtimes: str = typer.Option(None, "--runtimes", "-r",
                                 help="runtime:precision[,...] (default: every one available here)."),
    quick: bool = typer.Option(False, "--quick", help="A few seconds of measurement per configuration."),
    repeats: int = typer.Option(1, "--repeats", help="Measure each configuration in N fresh processes; intervals "
                                "then cover the spread between processes (--p99-ms, --min-throughput)."),
    from_results: str = typer.Option(None, "--from", help="Reuse a results file (rtpick bench/recommend --json)."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop",
                                            help="Gate on top-1 accuracy (agreement without labels), in points."),
    labels: str = typer.Option(None, "--labels", help="An .npz with the model's inputs and a 'label' array."),
    expected_inferences: int = typer.Option(None, "--expected-inferences",
                                            help="Inferences the deployment will serve (amortises build time)."),
    max_gpu_mem: float = typer.Option(None, "--max-gpu-mem", help="Peak GPU memory limit, MB."),
    max_host_mem: float = typer.Option(None, "--max-host-mem", help="Peak host memory (RSS) limit, MB."),
    max_joules: float = typer.Option(None, "--max-joules", help="GPU energy limit per inference (per sample), "
                                     "joules, from NVML's energy counter; rows without that figure (CPUs, "
                                     "windows too short for the counter) are excluded."),
    cpu_only: bool = typer.Option(False, "--cpu-only", help="Only CPU runtimes (edge deployment)."),
    batch: int = typer.Option(None, "--batch", "-b", help="Batch size (offline: the largest tried)."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim: name:1x3x224x224 (repeatable)."),
    input_range: list[str] = typer.Option([], "--input-range", help="Synthetic input range name:lo:hi for the "
                                          "check and the measurements (repeatable)."),
    option: list[str] = typer.Option([], "--option", "-o", help=OPTION_HELP),
    save: str = typer.Option(None, "--save", help="Write the chosen configuration here (deploy.json)."),
    json_out: str = typer.Option(None, "--json", help="Write the records used (results schema) here."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds before a configuration is killed."),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="Measure every candidate in full (no early "
                                    "dropping after the first pass) and include the variants whose build takes "
                                    "minutes (autotuning compiles)."),
    no_variants: bool = typer.Option(False, "--no-variants", help="Only each runtime's default options (not the "
                                     "option variants each runtime declares)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every row, unavailable runtimes too."),
) -> None:
    """Recommend the configuration that meets a budget, gated on correctness, with reasons for the rest."""
    from rtpick.data import parse_range, parse_shape
    from rtpick.files import check_writable
    from rtpick.perf.scenarios.offline import DEFAULT_SWEEP
    from rtpick.recommendation import deploy_config
    from rtpick.recommendation import recommend as run_recommend

    if save is not None:
        check_writable(save)
    command = "rtpick " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    shapes = dict(parse_shape(s) for s in shape)
    ranges = dict(parse_range(r) for r in input_range) or None
    options = _options(option, runtimes, cpu_only)
    batches: Any = batch
    if min_throughput is not None and batch is not None:
        batches = [b for b in DEFAULT_SWEEP if b < batch] + [batch]
    from rtpick.perf.progress import phases_for

    with phases_for(console, prefix="recommend") as phases:
        rec = run_recommend(
            model, configs=runtimes, p99_ms=p99_ms, streams=streams, fps=fps, min_throughput=min_throughput,
            max_accuracy_drop=max_accuracy_drop, labels=labels, expected_inferences=expected_inferences,
            max_gpu_mem_mb=max_gpu_mem, max_host_mem_mb=max_host_mem, max_joules=max_joules, cpu_only=cpu_only,
            quick=quick,
            repeats=repeats, from_results=from_results, batch=batches, shapes=shapes,
            ranges=ranges, options=options, json=json_out,
            timeout_s=timeout, command=command, progress=phases, exhaustive=exhaustive, variants=not no_variants,
        )
    chosen = rec.chosen
    # the answer first, then the table that backs it
    if chosen is not None:
        figure = (f"p99 {chosen.p99_ms:.3g} ms" if chosen.p99_ms is not None else "")
        if chosen.throughput is not None:
            figure += f", {chosen.throughput:,.0f} samples/s"
        if chosen.joules_per_inference is not None:
            from rtpick.recommendation import joules_text

            figure += f", {joules_text(chosen.joules_per_inference)} per inference"
        console.print(f"[bold green]recommended: {escape(chosen.name)}[/] at batch {chosen.batch} ({figure}; "
                      f"{escape(chosen.reason)})")
    else:
        console.print(f"[red]no configuration meets {escape(rec.constraints.describe())}.[/]")
        if rec.closest:
            console.print("closest:")
            for row in rec.closest[:3]:
                console.print(f"  {escape(row.name)} b{row.batch}: {escape(row.reason)}")
        else:
            console.print("none passed the correctness check, ran and kept within the limits; see the reasons below")
    if chosen is not None and chosen.throttled:
        console.print(f"[yellow]THROTTLED while measured: {escape(chosen.throttled)}; its figures are those of a "
                      "GPU holding its clocks down[/]")
    console.print(render(rec, verbose))
    for line in hidden_summary(rec, verbose):
        console.print(f"[dim]{escape(line)}[/]")
    for note in rec.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    if json_out:
        console.print(f"records written to {json_out} (reuse them with --from {json_out})")
    if chosen is None:
        if save:
            console.print(f"nothing saved to {save}")
        raise typer.Exit(1)
    if save:
        deploy = deploy_config(rec, model, shapes=shapes, options=options, command=command, ranges=ranges)
        deploy.write(save)
        console.print(f"saved to {save}: load it with rtpick.load({save!r}), or rtpick bench --config {save}")
