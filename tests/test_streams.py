"""Streams' parts: declared preprocessing, source parsing, latest-frame-wins slots, decode threads, output."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from rtpick.errors import RtpickError
from rtpick.model import TensorSpec
from rtpick.perf.scheduler import FakeClock, Scheduler
from rtpick.perf.staging import HostStaging
from rtpick.streams.frame_slots import FrameSlots
from rtpick.streams.output import frame_records
from rtpick.streams.preprocess import Preprocess, resize_bilinear
from rtpick.streams.processor import StreamBatch
from rtpick.streams.sources import DecodeThread, SourceSpec, parse_source

IMAGE = (TensorSpec("image", "float32", ("batch", 3, 4, 6)),)


def test_preprocess_is_parsed_fitted_and_applied_as_declared() -> None:
    spec = Preprocess.parse("resize=4x6,scale=1/255,mean=0.5/0.5/0.5,std=0.25/0.25/0.25,layout=nchw,color=bgr")
    fitted, name, row, dtype = spec.fit(IMAGE)
    assert (name, row, dtype) == ("image", (3, 4, 6), "float32")
    frame = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    got = fitted.apply(frame)
    want = ((frame[:, :, ::-1].astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    same = Preprocess.parse(fitted.to_dict() | {"resize": "4x6"})
    assert same.fit(IMAGE)[2] == row


def test_a_one_channel_model_gets_luma_unless_told_otherwise() -> None:
    """One channel can only be luma; an undeclared colour on a 3-channel model stays rgb."""
    gray = (TensorSpec("image", "float32", ("batch", 1, 4, 6)),)
    fitted, _, row, _ = Preprocess.parse("scale=1/255").fit(gray)
    assert fitted.color == "gray" and row == (1, 4, 6)
    frame = np.full((4, 6, 3), 200, np.uint8)
    np.testing.assert_allclose(fitted.apply(frame), np.full((1, 4, 6), 200 / 255, np.float32), rtol=1e-5)
    assert Preprocess.parse(None).fit(IMAGE)[0].color == "rgb"
    with pytest.raises(RtpickError, match="color=rgb gives 3"):
        Preprocess.parse("color=rgb").fit(gray)


def test_an_nhwc_model_is_fed_nhwc_unless_told_otherwise() -> None:
    """[N, H, W, 3] (TensorFlow-style, often uint8) says its layout by its shape; [N, 3, H, W] stays nchw."""
    nhwc = (TensorSpec("image", "uint8", ("batch", 4, 6, 3)),)
    fitted, _, row, dtype = Preprocess.parse(None).fit(nhwc)
    assert (fitted.layout, row, dtype) == ("nhwc", (4, 6, 3), "uint8")
    frame = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fitted.apply(frame, "uint8"), frame)
    assert Preprocess.parse(None).fit(IMAGE)[0].layout == "nchw"
    with pytest.raises(RtpickError, match="layout nchw"):
        Preprocess.parse("layout=nchw").fit(nhwc)


@pytest.mark.parametrize("text, match", [
    ("resize=8", "height 8"),                 # the model wants 4 x 6
    ("color=gray", "3 channel"),
    ("layout=nhwc", "channel"),
    ("scale=abc", "not a number"),
    ("mean=1/2", "2 values"),
    ("flip=1", "no key 'flip'"),
    ("resize", "key=value"),
])
def test_a_preprocess_that_does_not_fit_is_one_clear_error(text: str, match: str) -> None:
    with pytest.raises(RtpickError, match=match):
        Preprocess.parse(text).fit(IMAGE)


def test_resize_keeps_a_constant_image_and_its_shape() -> None:
    frame = np.full((10, 20, 3), 77, dtype=np.uint8)
    assert (resize_bilinear(frame, 4, 6) == 77).all() and resize_bilinear(frame, 4, 6).shape == (4, 6, 3)


def test_sources_are_parsed_and_bad_ones_refused(tmp_path: Any) -> None:
    assert parse_source("synthetic:8@30") == SourceSpec("synthetic", "synthetic:8@30", 8, 30.0)
    assert parse_source("rtsp://cam/1").kind == "url" and parse_source("webcam:/dev/video2").kind == "webcam"
    for text, match in (("synthetic:2@0", "fps must be positive"), ("synthetic:0@30", "at least 1"),
                        ("gopher://x", "unknown scheme"), ("foo:bar", "unknown scheme"),
                        (str(tmp_path / "none.mp4"), "no such file"), ("synthetic:x", "synthetic:N@FPS")):
        with pytest.raises(RtpickError, match=match):
            parse_source(text)


def make_slots(cameras: int, depth: int) -> tuple[FrameSlots, HostStaging]:
    staging = HostStaging({"x": "float32"}, {"x": (2,)}, 8)
    slots = FrameSlots(cameras, depth, "x", (2,), "float32", np.full(cameras, 1.0),
                       lambda frame, out: out.__setitem__(Ellipsis, frame), staging)
    return slots, staging


def test_frame_slots_keep_the_newest_frames_and_take_the_oldest_first() -> None:
    slots, staging = make_slots(2, 2)
    for k in range(5):  # camera 0 gets 5 frames into 2 rows: frames 3 and 4 stay
        slots.push(0, k, float(k) * 0.01, np.full(2, k, dtype=np.float32))
    slots.push(1, 0, 0.015, np.full(2, 100, dtype=np.float32))
    assert slots.rows_ready() == 3 and slots.stats.dropped_queue.tolist() == [3, 0]
    taken = slots.take(0.05, 8, lambda rows: 0.06)
    assert taken is not None and taken.rows == 3
    assert taken.keys[0].tolist() == [1, 0, 0] and taken.keys[1].tolist() == [0, 3, 4]  # capture order
    assert staging.buffers["x"][:3, 0].tolist() == [100.0, 3.0, 4.0]
    assert slots.rows_ready() == 0 and slots.take(0.05, 8, lambda rows: 0.06) is None


def test_frame_slots_skip_frames_that_cannot_make_it() -> None:
    slots, _ = make_slots(1, 2)
    slots.push(0, 0, 0.0, np.zeros(2, np.float32))
    slots.push(0, 1, 0.5, np.zeros(2, np.float32))
    taken = slots.take(0.9, 8, lambda rows: 1.2)  # frame 0 due at 1.0: too late; frame 1 due at 1.5
    assert taken is not None and taken.keys[1].tolist() == [1]
    assert slots.stats.dropped_late.tolist() == [1]


def test_frame_slots_under_a_scheduler_account_for_every_frame() -> None:
    slots, staging = make_slots(3, 2)
    clock = FakeClock()

    class Echo:
        inputs = ()

        def run(self, feeds: Any) -> dict[str, Any]:
            clock.advance(0.002)
            return {"y": feeds["x"] * 2}

        def synchronize(self) -> None:
            pass

    seen: list[np.ndarray] = []
    scheduler = Scheduler(Echo(), slots, max_batch=4, max_queue_delay_s=0.0, clock=clock, staging=staging,
                          on_batch=lambda taken, done, out: seen.append(out["y"][:taken.rows, 0].copy()))
    for k in range(10):
        for camera in range(3):
            slots.push(camera, k, clock.now(), np.full(2, camera * 100 + k, np.float32))
        if k % 3 == 2:
            scheduler.run(stop_when_idle=True)
    scheduler.run(stop_when_idle=True)
    slots.close_counts()
    total = slots.stats.total()
    assert total["frames"] == 30 and total["processed"] + total["dropped_queue"] + total["dropped_late"] == 30
    assert sorted(np.concatenate(seen) / 2) == sorted({v for v in (np.concatenate(seen) / 2)})  # no frame twice


class FakeContainer:
    """Quacks like a PyAV container whose decode yields `frames` frames, then raises if `fail`."""

    class _Streams:
        video = [type("S", (), {"thread_type": None, "average_rate": 30, "guessed_rate": 30})()]

    streams = _Streams()

    def __init__(self, frames: int, fail: bool) -> None:
        self.frames, self.fail, self.closed = frames, fail, False

    def decode(self, stream: Any) -> Any:
        for k in range(self.frames):
            frame = type("F", (), {"time": k / 30, "to_ndarray": lambda self, **kw: np.zeros((2, 2, 3), np.uint8)})()
            yield frame
        if self.fail:
            raise OSError("connection reset")

    def close(self) -> None:
        self.closed = True


def test_a_failing_url_is_reported_and_reconnects_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    from rtpick.streams import sources

    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.01)
    opened: list[int] = []

    def reopen(spec: Any, timeout_s: float = 0) -> FakeContainer:
        opened.append(1)
        if len(opened) % 2:
            raise OSError("refused")
        return FakeContainer(3, fail=True)

    monkeypatch.setattr(sources, "open_container", reopen)
    events: list[str] = []
    pushed: list[int] = []
    thread = DecodeThread(0, SourceSpec("url", "rtsp://x"), lambda c, i, t, f: pushed.append(i), size=None,
                          paced=False, on_event=lambda c, kind, d: events.append(kind)).start()
    deadline = time.monotonic() + 10
    while len(opened) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    thread.join(5)
    assert not thread.alive
    assert "failed" in events and "reconnecting" in events and "opened" in events
    assert len(pushed) >= 3


def test_a_file_that_ends_is_marked_ended_once() -> None:
    events: list[str] = []
    done = threading.Event()
    thread = DecodeThread(0, SourceSpec("file", "x.mp4"), lambda c, i, t, f: None, size=(2, 2), paced=False,
                          on_event=lambda c, kind, d: (events.append(kind), done.set() if kind == "ended" else None),
                          container=FakeContainer(4, fail=False)).start()
    thread.join(5)
    assert events == ["opened", "ended"] and thread.decoded == 4 and thread.state == "ended"


def test_frame_records_give_top_k_for_scores_and_a_summary_for_other_outputs() -> None:
    batch = StreamBatch(np.array([0, 1]), np.array([5, 6]), np.array([1.0, 1.5]), np.array([0.01, 0.02]),
                        np.array([True, False]),
                        {"logits": np.array([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]], np.float32),
                         "mask": np.ones((2, 2, 2), np.float32)})
    records = frame_records(batch, ["a", "b"], 1.0, 2)
    assert records[0]["outputs"]["logits"]["top_k"] == [[1, pytest.approx(0.9)], [2, pytest.approx(0.5)]]
    assert records[1]["outputs"]["logits"]["top_k"][0][0] == 0
    assert records[1]["outputs"]["mask"] == {"shape": [2, 2], "mean": 1.0, "min": 1.0, "max": 1.0}
    assert records[1]["source"] == "b" and records[1]["frame"] == 6 and records[1]["on_time"] is False
    assert records[0]["latency_ms"] == 10.0 and records[1]["capture_s"] == 0.5


def test_stream_processor_runs_a_deploy_file_with_its_preprocess_section(tmp_path: Any) -> None:
    import json

    import rtpick
    from rtpick.deploy import DeployConfig
    from rtpick.sources import load_model

    model = load_model("rtpick:digits")
    deploy = DeployConfig("rtpick:digits", model.spec.sha256, model.spec.name, "ort-cpu", "fp32", batch=4)
    data = deploy.to_dict() | {"preprocess": {"resize": "32", "scale": "1/255", "color": "gray"}}
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(data))
    batches: list[Any] = []
    processor = rtpick.StreamProcessor(str(path), ["synthetic:3@20"], on_result=batches.append)
    metrics = processor.run(duration_s=1.0)
    total = metrics["total"]
    assert processor.max_batch == 4 and metrics["preprocess"]["color"] == "gray"
    assert total["frames"] == 60 and total["processed"] == sum(len(b.cameras) for b in batches) > 0
    assert all(b.outputs["logits"].shape == (len(b.cameras), 10) for b in batches)
    with pytest.raises(RtpickError, match="fixes the configuration"):
        rtpick.StreamProcessor(str(path), ["synthetic:1@20"], runtime="ort-cpu:fp32")
