"""`rtpick streams`: run a deployed configuration on N video sources, per-frame results as JSON lines."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import typer

from rtpick.commands.app import app, handles_errors
from rtpick.errors import RtpickError


@app.command()
@handles_errors
def streams(
    config: str = typer.Argument(..., help="A deploy.json (rtpick recommend --save) or a model (with -r)."),
    sources: list[str] = typer.Argument(..., help="synthetic:N@FPS, video files, rtsp://... URLs, "
                                                  "webcam:/dev/videoN."),
    runtime: str = typer.Option(None, "-r", "--runtime", help="runtime:precision for a model (default "
                                                               "ort-cpu:fp32)."),
    preprocess: str = typer.Option(None, "--preprocess", help="resize=H[xW],scale=1/255,mean=a/b/c,std=a/b/c,"
                                                              "layout=nchw|nhwc,color=rgb|bgr|gray"),
    output: str = typer.Option(None, "--output", "-o", help="Per-frame results (JSON lines); default stdout."),
    metrics: str = typer.Option(None, "--metrics", help="Write the run's metrics (JSON) here."),
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds (synthetic "
                                                            "sources: default 10)."),
    max_batch: int = typer.Option(None, "--max-batch", help="Largest batch (default: the deploy file's, "
                                                            "else 8)."),
    max_queue_delay_ms: float = typer.Option(None, "--max-queue-delay-ms", help="Batch window (default: a "
                                                                                "quarter of the deadline)."),
    deadline_ms: float = typer.Option(None, "--deadline-ms", help="Frame deadline from capture (default 1/fps)."),
    queue_frames: int = typer.Option(2, "--queue-frames", help="Frames kept per camera (latest win)."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="Do not pace files at "
                                                                                  "their frame rate."),
    top_k: int = typer.Option(5, "--top-k", help="Top-k classes per frame for 2-D score outputs."),
) -> None:
    """Run a configuration on live or recorded video; every frame accounted for (processed or dropped, why)."""
    from rtpick.streams.output import JsonLines, frame_records
    from rtpick.streams.processor import StreamProcessor

    if top_k < 0:
        raise RtpickError(f"--top-k must be zero or more, not {top_k}")
    if metrics:
        from rtpick.files import check_writable

        check_writable(metrics, "metrics")
    writer: JsonLines | None = None
    labels: list[str] = []
    start = [0.0]

    def on_result(batch: Any) -> None:
        if writer is not None:
            writer.write(frame_records(batch, labels, start[0], top_k))

    def on_event(camera: int, kind: str, detail: str) -> None:
        print(f"rtpick streams: camera {camera} ({labels[camera] if labels else ''}): {kind} {detail}",
              file=sys.stderr)

    processor = StreamProcessor(config, sources, runtime=runtime, preprocess=preprocess, max_batch=max_batch,
                                max_queue_delay_ms=max_queue_delay_ms, deadline_ms=deadline_ms,
                                queue_frames=queue_frames, as_fast_as_possible=as_fast_as_possible,
                                on_result=on_result, on_source_event=on_event)
    labels.extend(processor._camera_labels())
    writer = JsonLines(output)
    previous = signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    start[0] = time.perf_counter()
    result: dict[str, Any] | None = None
    try:
        result = processor.run(duration_s=duration)
    except KeyboardInterrupt:
        processor.stop()
        result = processor.metrics
    finally:
        writer.close()
        signal.signal(signal.SIGTERM, previous)
    if result is None:
        raise RtpickError("interrupted before the first batch; nothing to report")
    if metrics:
        from rtpick.files import write_json

        write_json(metrics, result, "metrics")
    total, pipe = result["total"], result["pipeline"]
    print(f"rtpick streams: {result['config']}, {result['cameras']} camera(s): {total['frames']:,} frames in, "
          f"{total['processed']:,} processed ({total['on_time_fraction']:.1%} on time), dropped "
          f"{total['dropped_queue']:,} (slot full) + {total['dropped_late']:,} (late); p50 "
          f"{_ms(total['p50_ms'])} p99 {_ms(total['p99_ms'])}; mean batch {pipe['mean_batch']:.1f}, busy "
          f"{pipe['busy_fraction']:.0%}; {writer.lines:,} lines to {output or 'stdout'}", file=sys.stderr)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"
