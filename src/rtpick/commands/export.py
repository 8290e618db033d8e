"""`rtpick export triton|kserve`: hand the configuration a deploy file fixes to Triton and KServe."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from rtpick.commands.app import app, handles_errors

export_app = typer.Typer(no_args_is_help=True,
                         help="Export a deploy file (rtpick recommend --save) for a serving engine.")
app.add_typer(export_app, name="export")


def _command_line() -> str:
    return "rtpick " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@export_app.command("triton")
@handles_errors
def triton(
    deploy_file: str = typer.Argument(..., help="A deploy file written by rtpick recommend --save."),
    output: str = typer.Option(..., "-o", "--output", help="The model repository folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace a folder that exists and is not empty."),
) -> None:
    """Write a Triton model repository: <model>/config.pbtxt, <model>/1/<model file>, README.md."""
    from rtpick.export.repository import export_triton

    result = export_triton(deploy_file, output, force=force, command=_command_line())
    typer.echo(f"wrote Triton model repository {result.path} (model {result.model_name}):")
    for name in result.files:
        typer.echo(f"  {name}")
    typer.echo(f"status: {result.label}")
    for note in result.notes:
        typer.echo(f"note: {note}")


@export_app.command("kserve")
@handles_errors
def kserve(
    deploy_file: str = typer.Argument(..., help="A deploy file written by rtpick recommend --save."),
    output: str = typer.Option(..., "-o", "--output", help="The InferenceService YAML file to write."),
    storage_uri: str = typer.Option(..., "--storage-uri",
                                    help="Where the exported repository is uploaded (s3://, gs://, pvc://...)."),
    target_rps: float = typer.Option(None, "--target-rps",
                                     help="Requests per second to serve; sets min/max replicas from the measured "
                                          "per-replica capacity."),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists."),
) -> None:
    """Write a KServe InferenceService (Triton, protocol v2) for the exported repository."""
    from rtpick.errors import RtpickError
    from rtpick.export.kserve import inference_service
    from rtpick.export.repository import deploy_and_spec
    from rtpick.files import atomic_write_bytes, check_writable

    target = Path(output)
    if target.exists() and not force:
        raise RtpickError(f"{output!r} exists; give a new file name or add --force to replace it")
    check_writable(target, "InferenceService manifest")
    deploy, spec = deploy_and_spec(deploy_file)
    manifest = inference_service(deploy, spec, storage_uri, target_rps)
    try:
        atomic_write_bytes(target, manifest.to_yaml().encode())
    except OSError as exc:
        raise RtpickError(f"cannot write {output!r}: {exc.strerror or exc}") from exc
    typer.echo(f"wrote KServe InferenceService {target} ({manifest.document['metadata']['name']}, "
               f"replicas {manifest.document['spec']['predictor']['minReplicas']}-"
               f"{manifest.document['spec']['predictor']['maxReplicas']})")
    for note in manifest.notes:
        typer.echo(f"note: {note}")
