"""`rtpick streams` through a subprocess on the bundled demo model: synthetic cameras, a PyAV test video, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SRC, run_cli
from streams_video import decode, make_video

PRE = "resize=32,scale=1/255,color=gray"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_synthetic_cameras_every_frame_accounted_for(tmp_path: Path) -> None:
    out, metrics = tmp_path / "frames.jsonl", tmp_path / "metrics.json"
    result = run_cli("streams", "rtpick:digits", "synthetic:8@30", "--preprocess", PRE, "--duration", "2",
                     "-o", str(out), "--metrics", str(metrics))
    assert result.returncode == 0, result.stderr
    m = json.loads(metrics.read_text())
    total = m["total"]
    assert m["cameras"] == 8 and total["frames"] == 8 * 60
    assert total["processed"] + total["dropped_queue"] + total["dropped_late"] == total["frames"]
    lines = read_lines(out)
    assert len(lines) == total["processed"] > 0
    assert {r["camera"] for r in lines} <= set(range(8)) and len(lines[0]["outputs"]["logits"]["top_k"]) == 5
    assert sum(row["processed"] for row in m["per_camera"]) == total["processed"]
    assert sum(m["pipeline"]["batch_histogram"].values()) == m["pipeline"]["batches"]
    assert "on time" in result.stderr


def test_a_video_file_every_frame_accounted_for_and_outputs_equal_session_run(tmp_path: Path) -> None:
    import rtpick
    from rtpick.streams.preprocess import Preprocess

    video = make_video(tmp_path / "clip.mp4", frames=45)
    out, metrics = tmp_path / "frames.jsonl", tmp_path / "metrics.json"
    result = run_cli("streams", "rtpick:digits", str(video), str(video), "--preprocess", PRE,
                     "--as-fast-as-possible", "--top-k", "10", "-o", str(out), "--metrics", str(metrics))
    assert result.returncode == 0, result.stderr
    m = json.loads(metrics.read_text())
    for row in m["per_camera"]:
        assert row["decoded"] == 45 and row["state"] == "ended"
        assert row["processed"] + row["dropped_queue"] + row["dropped_late"] == row["decoded"]
        assert row["dropped_queue"] == 0  # a file read as fast as possible waits for the model, never overwrites
    lines = read_lines(out)
    assert len(lines) == m["total"]["processed"] > 0
    frames = decode(video, 32)
    assert len(frames) == 45
    spec = Preprocess.parse(PRE)
    batch = np.stack([spec.apply(f) for f in frames])
    with rtpick.load("rtpick:digits", "ort-cpu", "fp32") as session:
        want = session.run({"image": batch})["logits"]
    for record in lines:
        top = record["outputs"]["logits"]["top_k"]
        row = want[record["frame"]]
        assert [k for k, _ in top] == list(np.argsort(-row, kind="stable")[:10]) or \
            np.allclose([s for _, s in top], np.sort(row)[::-1][:10], atol=1e-4)
        np.testing.assert_allclose([s for _, s in top], [row[k] for k, _ in top], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, words", [
    (["gopher://nowhere/x"], "unknown scheme"),
    (["synthetic:2@0"], "fps must be positive"),
    (["rtsp://127.0.0.1:9/none", "--preprocess", PRE], "does not answer"),
    (["synthetic:2@30", "--preprocess", "resize=64,color=gray"], "wants 32"),
    (["synthetic:2@30", "--preprocess", "resize=32,color=rgb"], "channel"),
    (["synthetic:400000000@30", "--preprocess", PRE], "available"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], words: str) -> None:
    result = run_cli("streams", "rtpick:digits", *args, "--duration", "1", timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_a_file_that_is_not_a_video_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video at all" * 40)
    result = run_cli("streams", "rtpick:digits", str(junk), "--preprocess", PRE, timeout=120)
    assert result.returncode == 2 and "not a video" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_cleanly_and_flushes(tmp_path: Path) -> None:
    out, metrics = tmp_path / "frames.jsonl", tmp_path / "metrics.json"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "rtpick", "streams", "rtpick:digits", "synthetic:4@30",
                             "--preprocess", PRE, "--duration", "60", "-o", str(out), "--metrics", str(metrics)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(tmp_path.glob(".frames.jsonl.*")):
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    m = json.loads(metrics.read_text())
    assert 0 < m["total"]["processed"] == len(read_lines(out))
    assert not list(tmp_path.glob(".frames.jsonl.*"))  # the temporary file was renamed into place
