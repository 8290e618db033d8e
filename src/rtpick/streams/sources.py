"""Where frames come from: `synthetic:N@FPS`, video files, and `rtsp://` / http / webcam URLs through PyAV.

Every real source decodes in a thread of its own and hands each frame, already preprocessed, to a bounded slot
(`FrameSlots.push`: latest frame wins), so a slow or dead source never blocks the dispatcher or the others. A file
is paced at its own frame rate (frame k is "captured" at start + its presentation time) unless
`as_fast_as_possible`, where its decoder waits for a free row instead (every frame is offered to the model, none
overwritten); it ends once. A URL that fails or ends reconnects with exponential backoff until stopped.
Each state change (opened, ended, failed, reconnecting) goes to `on_event(camera, kind, detail)`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtpick.errors import RtpickError

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
OPEN_TIMEOUT_S = 5.0
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
DEFAULT_URL_FPS = 30.0

EventSink = Callable[[int, str, str], None]


@dataclass(frozen=True)
class SourceSpec:
    """One parsed source argument: kind is 'synthetic', 'file', 'url' or 'webcam'."""

    kind: str
    target: str
    count: int = 1
    fps: float | None = None

    @property
    def label(self) -> str:
        return self.target if self.kind != "synthetic" else f"synthetic:{self.count}@{self.fps:g}"


def parse_source(text: str) -> SourceSpec:
    """``synthetic:N@FPS``, ``webcam:/dev/video0``, ``rtsp://...`` (and other URL schemes), or a file path."""
    if text.startswith("synthetic:"):
        match = re.fullmatch(r"synthetic:(\d+)@([-+0-9.eE]+)", text)
        if not match:
            raise RtpickError(f"source {text!r}: write synthetic:N@FPS, e.g. synthetic:8@30")
        count, fps = int(match.group(1)), float(match.group(2))
        if count < 1:
            raise RtpickError(f"source {text!r}: the number of synthetic cameras must be at least 1")
        if not fps > 0:
            raise RtpickError(f"source {text!r}: fps must be positive, not {fps:g}")
        return SourceSpec("synthetic", text, count, fps)
    if text.startswith("webcam:"):
        return SourceSpec("webcam", text[len("webcam:"):] or "/dev/video0")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        if scheme.group(1).lower() not in URL_SCHEMES:
            raise RtpickError(f"source {text!r}: unknown scheme {scheme.group(1)!r}; use synthetic:N@FPS, a video "
                              f"file, webcam:/dev/videoN or a URL ({', '.join(URL_SCHEMES)})")
        return SourceSpec("url", text)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:[^/\\]", text) and not Path(text).exists():
        raise RtpickError(f"source {text!r}: unknown scheme {text.split(':')[0]!r}; use synthetic:N@FPS, a video "
                          "file, webcam:/dev/videoN or a URL")
    path = Path(text)
    if not path.is_file():
        raise RtpickError(f"source {text!r}: no such file")
    return SourceSpec("file", str(path))


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise RtpickError("video files and URLs need PyAV: pip install 'rtpick[streams]'") from exc
    return av


def open_container(spec: SourceSpec, timeout_s: float = OPEN_TIMEOUT_S) -> Any:
    """Open a file, URL or webcam with PyAV; one line (RtpickError) when it is not a video or does not answer."""
    av = _av()
    options = {"rtsp_transport": "tcp"} if spec.target.startswith("rtsp") else {}
    try:
        if spec.kind == "webcam":
            container = av.open(spec.target, format="v4l2", timeout=timeout_s)
        else:
            container = av.open(spec.target, options=options, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds (FFmpegError, OSError, ValueError)
        what = "does not answer" if spec.kind != "file" else "is not a video PyAV can read"
        raise RtpickError(f"source {spec.target!r} {what} ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not container.streams.video:
        container.close()
        raise RtpickError(f"source {spec.target!r} has no video stream")
    return container


def stream_fps(container: Any) -> float | None:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


class DecodeThread:
    """Decodes one source into `push(camera, index, capture_time, frame_rgb)` until it ends or is stopped."""

    def __init__(self, camera: int, spec: SourceSpec, push: Callable[[int, int, float, np.ndarray], None], *,
                 size: tuple[int, int] | None, paced: bool, on_event: EventSink,
                 clock: Callable[[], float] = time.perf_counter, container: Any = None,
                 wait_for_room: Callable[[int, threading.Event], None] | None = None) -> None:
        self.camera, self.spec, self.push, self.size = camera, spec, push, size
        self.paced, self.on_event, self.clock = paced, on_event, clock
        # an unpaced file waits for a free row instead of overwriting frames (`FrameSlots.wait_for_room`)
        self.wait_for_room = wait_for_room if not paced and spec.kind == "file" else None
        self.decoded = 0
        self.state = "starting"
        self._container = container
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"rtpick-decode-{camera}", daemon=True)

    def start(self) -> DecodeThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                container = self._container or open_container(self.spec)
                self._container = None
                self.state = "open"
                self.on_event(self.camera, "opened", self.spec.target)
                backoff = BACKOFF_START_S
                self._decode(container)
                if self._stop.is_set():
                    break
                self.on_event(self.camera, "ended", f"{self.decoded} frames decoded")
            except Exception as exc:  # noqa: BLE001 - a failing source is reported; the others go on
                self.on_event(self.camera, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
            if self.spec.kind == "file":
                break
            self.state = "reconnecting"
            self.on_event(self.camera, "reconnecting", f"in {backoff:.1f} s")
            if self._stop.wait(backoff):
                break
            backoff = min(BACKOFF_MAX_S, backoff * 2)
        self.state = "stopped" if self._stop.is_set() else "ended"

    def _decode(self, container: Any) -> None:
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            start, first_pts = self.clock(), None
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                if self.wait_for_room is not None:
                    self.wait_for_room(self.camera, self._stop)
                    if self._stop.is_set():
                        return
                capture = self.clock()
                if self.paced and frame.time is not None:
                    first_pts = frame.time if first_pts is None else first_pts
                    capture = start + (frame.time - first_pts)
                    if self._stop.wait(max(0.0, capture - self.clock())):
                        return
                if self.size is not None:
                    rgb = frame.to_ndarray(width=self.size[1], height=self.size[0], format="rgb24")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                self.push(self.camera, self.decoded, capture, rgb)
                self.decoded += 1
        finally:
            container.close()
