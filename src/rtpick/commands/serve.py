"""`rtpick serve`: a deployed configuration behind the Open Inference Protocol (HTTP/REST and gRPC)."""

from __future__ import annotations

import sys

import typer

from rtpick.commands.app import app, handles_errors
from rtpick.errors import RtpickError


@app.command()
@handles_errors
def serve(
    config: str = typer.Argument(..., help="A deploy.json (rtpick recommend --save) or a model (with -r)."),
    runtime: str = typer.Option(None, "-r", "--runtime", help="runtime:precision for a model (default "
                                                               "ort-cpu:fp32)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless given)."),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port (0: no gRPC)."),
    max_batch: int = typer.Option(None, "--max-batch", help="Largest batch (default: the deploy file's)."),
    max_queue_delay_ms: float = typer.Option(None, "--max-queue-delay-ms", help="Batch window (default: the "
                                                                                "deploy file's, else 0)."),
    max_queue_size: int = typer.Option(None, "--max-queue-size", help="Requests allowed to wait; more are "
                                                                      "refused at once (default: the deploy "
                                                                      "file's policy)."),
    timeout_ms: float = typer.Option(None, "--timeout-ms", help="Per-request deadline (default: the deploy "
                                                                "file's p99 budget; 0: none)."),
    batch_sizes: str = typer.Option(None, "--batch-sizes", help="Sizes the session runs, e.g. 1,2,4,8 (batches "
                                                                "padded up to one; default every size)."),
    max_request_bytes: int = typer.Option(64 * 1024 * 1024, "--max-request-bytes", help="Larger bodies get 413."),
    reject_status: int = typer.Option(503, "--reject-status", help="Status for a full queue: 503 or 429 (with "
                                                                   "Retry-After)."),
    exit_timeout: float = typer.Option(30.0, "--exit-timeout", help="Seconds a SIGTERM drain may take."),
    name: str = typer.Option(None, "--name", help="Model name in URLs (default: from the model)."),
    option: list[str] = typer.Option(None, "--option", help="Runtime option key=value for MODEL -r (repeatable)."),
    shape: list[str] = typer.Option([], "--shape", help="Fix a symbolic dim of MODEL -r: name:1x3x48x320 "
                                                        "(repeatable; a leading batch dim becomes --max-batch)."),
    input_range: list[str] = typer.Option([], "--input-range", help="Values the warm-up's synthetic input takes: "
                                                                    "name:lo:hi (repeatable; e.g. sr:16000:16001)."),
    shared_memory_regions: int = typer.Option(64, "--shared-memory-regions", help="System shared-memory regions "
                                                                                  "clients on this host may "
                                                                                  "register at once (0: the "
                                                                                  "extension is off)."),
) -> None:
    """Serve a configuration over HTTP and gRPC (KServe v2 / Triton protocol), batching across clients."""
    from rtpick.data import parse_range, parse_shape
    from rtpick.options import parse_option_args
    from rtpick.serve.server import ServeOptions
    from rtpick.serve.server import serve as run_server

    sizes = None
    if batch_sizes:
        try:
            sizes = tuple(int(s) for s in batch_sizes.split(","))
        except ValueError:
            raise RtpickError(f"--batch-sizes {batch_sizes!r} is not a comma-separated list of whole numbers") \
                from None
    if not 0 < port < 65536 or not 0 <= grpc_port < 65536:
        raise RtpickError("--port and --grpc-port must be 1..65535 (--grpc-port 0: no gRPC)")
    if exit_timeout <= 0 or max_request_bytes < 1:
        raise RtpickError("--exit-timeout and --max-request-bytes must be positive")
    if not 0 <= shared_memory_regions <= 4096:
        raise RtpickError(f"--shared-memory-regions must be 0 (off) to 4096, not {shared_memory_regions}")
    options = ServeOptions(host, port, grpc_port or None, max_batch, max_queue_delay_ms, max_queue_size,
                           timeout_ms, sizes, max_request_bytes, reject_status, exit_timeout, name,
                           parse_option_args(option or []), shared_memory_regions,
                           dict(parse_shape(s) for s in shape) or None,
                           dict(parse_range(r) for r in input_range) or None)
    outcome = run_server(config, runtime, options)
    print(f"rtpick serve: drained in {outcome['drained_s']:.2f} s, {outcome['unfinished']} request(s) unfinished",
          file=sys.stderr)
