"""`rtpick demo`: the main job on the bundled model, in under a minute on a 2-core CPU machine."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from rtpick.commands.app import app, handles_errors, make_console

console = make_console()


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


@app.command()
@handles_errors
def demo(
    duration: float = typer.Option(0.5, "--duration", help="Seconds of timing for each of the two measurements."),
) -> None:
    """Compare and time every available runtime and precision on the bundled digits classifier."""
    import numpy as np

    from rtpick.demo import REFERENCE, run_demo
    from rtpick.runtimes.registry import RUNTIMES, availability
    from rtpick.sources import assets_dir, load_model

    if duration <= 0:
        raise typer.BadParameter("--duration must be positive")
    model = load_model("rtpick:digits")
    with np.load(assets_dir() / "digits_eval.npz") as data:
        images, labels = data["image"], data["label"]
    console.print(f"[bold]rtpick demo[/]: {model.spec.name}, a small CNN trained on scikit-learn's digits "
                  f"(32x32 grey images, 10 classes); {len(images)} held-out labelled images.")
    with console.status("measuring") as status:
        result = run_demo(model, images, labels, assets_dir() / "digits_calibration.npz", duration_s=duration,
                          progress=lambda config: status.update(f"measuring {config}"))
    table = Table(title=f"{model.spec.name}: same model, different runtime")
    columns = ["configuration", "p50 ms b1", "p99 ms b1", "img/s b64", "accuracy", "agrees",
               "max |err|", "build s", "+host MiB", "GPU"]
    for column in columns:
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for row in result.rows:
        gpu = "yes" if row.device == "cuda" else "no"
        if row.error:
            table.add_row(row.config, f"[red]failed: {escape(row.error)}[/]", *[""] * 7, gpu)
            continue
        verdict = "" if row.within_tolerance else " [red](over tolerance)[/]"
        table.add_row(
            row.config, _fmt(row.p50_ms, ".3f"), _fmt(row.p99_ms, ".3f"),
            _fmt(row.throughput, ",.0f"), _fmt(None if row.accuracy is None else 100 * row.accuracy, ".2f") + "%",
            _fmt(None if row.agreement is None else 100 * row.agreement, ".1f") + "%" + verdict,
            _fmt(row.max_abs_error, ".1e"), _fmt(row.build_s, ".2f"), _fmt(row.host_mem_mb, ".0f"), gpu,
        )
    console.print(table)
    console.print(f"latency: {result.latency_method}.")
    console.print(f"throughput: {result.throughput_method}.")
    console.print(f"accuracy: top-1 on the {result.eval_images} held-out images in batches of 64; "
                  f"agrees: rows whose top-1 equals {REFERENCE[0]}:{REFERENCE[1]}'s; max |err|: on the logits. "
                  "+host MiB: peak resident memory above the level before the build.")
    for row in result.rows:
        for note in row.notes:
            console.print(f"note ({row.config}): {escape(note)}")
    missing = [f"{name} ({availability(name).reason})" for name in RUNTIMES if not availability(name).ok]
    if missing:
        console.print("not run here: " + escape("; ".join(missing)))
    configs = ",".join(row.config for row in result.rows if not row.error)
    console.print("reproduce: [bold]rtpick compare rtpick:digits -r " + configs + "[/] and "
                  "[bold]rtpick bench rtpick:digits -r " + configs + " --scenario single-stream --batch 1[/]")
    console.print(f"demo took {result.wall_s:.0f} s.")
