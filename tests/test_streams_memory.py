"""Memory is bounded by cameras x queue depth x frame size: a ~55 s run must not grow its RSS."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SRC
from streams_video import make_video

CHILD = r"""
import json, sys, threading, time
import psutil
import rtpick
from rtpick.perf import camera_slots
from rtpick.streams.output import JsonLines, frame_records

camera_slots.LATENCY_SAMPLES = 5000  # the reservoir is full within seconds: any growth after it is a leak
video, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
writer = JsonLines(out)
samples = []
proc = psutil.Process()
processor = rtpick.StreamProcessor("rtpick:digits", [video] * 4, preprocess="resize=32,scale=1/255,color=gray",
                                   on_result=lambda b: writer.write(frame_records(b, ["v"] * 4, 0.0, 5)))
def sample():
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(1.0)
        samples.append((time.monotonic() - start, proc.memory_info().rss))
threading.Thread(target=sample, daemon=True).start()
metrics = processor.run(duration_s=seconds)
writer.close()
print(json.dumps({"samples": samples, "total": metrics["total"]}))
"""


@pytest.mark.slow
def test_rss_does_not_grow_over_a_minute_of_streams(tmp_path: Path) -> None:
    seconds = 55.0
    video = make_video(tmp_path / "long.mp4", frames=int(30 * (seconds + 10)))
    result = subprocess.run([sys.executable, "-c", CHILD, str(video), str(tmp_path / "out.jsonl"), str(seconds)],
                            capture_output=True, text=True, timeout=180, env={"PYTHONPATH": str(SRC),
                                                                             "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    total = report["total"]
    assert total["processed"] > 0.5 * 4 * 30 * seconds * 0.8, total  # it really streamed all along
    samples = report["samples"]
    after_warmup = [rss for t, rss in samples if 10 <= t <= 15]
    at_end = [rss for t, rss in samples if t >= seconds - 6]
    assert after_warmup and at_end, samples
    growth = statistics.median(at_end) - statistics.median(after_warmup)
    assert growth < max(4 * 2**20, 0.03 * max(after_warmup)), (growth, samples)
