"""`StreamProcessor`: a built session on N sources, through the per-batch scheduler, with callbacks.

The Python face of `rtpick streams`. Synthetic sources (all `synthetic:N@FPS`) run on computed arrivals like
the multistream benchmark, so thousands of cameras cost no thread each; real sources (files, URLs, webcams)
decode in a thread each into `FrameSlots`. Either way one dispatcher forms batches across cameras, so the
capacity `rtpick bench --scenario multistream` reports is the one this delivers.

    processor = rtpick.StreamProcessor("deploy.json", ["cam.mp4", "rtsp://host/stream"],
                                       preprocess="resize=224,scale=1/255,layout=nchw",
                                       on_result=lambda batch: ..., on_source_event=lambda cam, kind, detail: ...)
    metrics = processor.run(duration_s=60)    # or processor.stop() from another thread / a signal handler

`on_result(batch)` gets a `StreamBatch` per batch (cameras, frame indices, capture times, latencies, outputs as
host arrays); it runs on the dispatcher thread, so keep it short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.scheduler import ComputePredictor, Scheduler, Taken, measure_batches
from rtpick.streams.preprocess import Preprocess
from rtpick.streams.sources import DecodeThread, SourceSpec, open_container, parse_source, stream_fps

MEMORY_SHARE = 0.5  # slots and staging may take at most this share of the memory available at start
SYNTHETIC_GRACE_S = 2.0  # past duration + deadline, a synthetic run whose batches stalled is stopped anyway


@dataclass
class StreamBatch:
    """One finished batch, row-aligned arrays: which camera and frame each row was, and its outputs."""

    cameras: np.ndarray
    frames: np.ndarray
    capture: np.ndarray  # seconds (perf_counter) of each frame's (scheduled) capture
    latency_s: np.ndarray
    on_time: np.ndarray
    outputs: dict[str, np.ndarray]


def _host(value: Any, rows: int) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value[:rows]
    return value[:rows].detach().float().cpu().numpy()


def _session_for(config: Any, runtime: str | None) -> tuple[Any, dict[str, Any]]:
    """A built session and the deploy file's own streams settings (empty for MODEL -r rt:prec)."""
    from rtpick.api import load
    from rtpick.deploy import DeployConfig, is_deploy_file

    if not isinstance(config, str):
        return config, {}  # an already built Session
    if is_deploy_file(config):
        if runtime:
            raise RtpickError(f"{config} fixes the configuration; drop -r or edit the deploy file")
        from rtpick.files import read_json

        deploy = DeployConfig.read(config)
        extra = read_json(config, "deploy file").get("preprocess") or None
        return deploy.build(), {"preprocess": extra, "batch": deploy.batch}
    rt, _, precision = (runtime or "ort-cpu:fp32").partition(":")
    return load(config, rt, precision or "fp32"), {}


class StreamProcessor:
    """Run one configuration on `sources` (texts or `SourceSpec`s) until they end, `duration_s`, or `stop()`."""

    def __init__(
        self,
        config: Any,
        sources: Sequence[str | SourceSpec],
        *,
        runtime: str | None = None,
        preprocess: str | Mapping[str, Any] | None = None,
        max_batch: int | None = None,
        max_queue_delay_ms: float | None = None,
        deadline_ms: float | None = None,
        queue_frames: int = 2,
        as_fast_as_possible: bool = False,
        on_result: Callable[[StreamBatch], None] | None = None,
        on_source_event: Callable[[int, str, str], None] | None = None,
        seed: int = 0,
    ) -> None:
        specs = [s if isinstance(s, SourceSpec) else parse_source(s) for s in sources]
        if not specs:
            raise RtpickError("give at least one source (synthetic:N@FPS, a video file or a URL)")
        synthetic = [s for s in specs if s.kind == "synthetic"]
        if synthetic and len(synthetic) != len(specs):
            raise RtpickError("synthetic sources cannot be mixed with files or URLs in one run; run them apart")
        if deadline_ms is not None and not deadline_ms > 0:
            raise RtpickError(f"--deadline-ms must be positive, not {deadline_ms}")
        if queue_frames < 1:
            raise RtpickError(f"--queue-frames must be at least 1, not {queue_frames}")
        self.specs, self.synthetic = specs, bool(synthetic)
        self.on_result, self.on_source_event = on_result, on_source_event
        self.events: list[dict[str, Any]] = []
        self._events_lock = threading.Lock()
        self.session, settings = _session_for(config, runtime)
        spec_text = preprocess if preprocess is not None else settings.get("preprocess")
        self.preprocess, self.input_name, self.row, self.dtype = Preprocess.parse(spec_text).fit(self.session.inputs)
        if len(self.session.inputs) != 1:
            raise RtpickError("streams feed models with one image input")
        self.queue_frames, self.paced, self.seed = queue_frames, not as_fast_as_possible, seed
        self.max_batch = max_batch or settings.get("batch") or 8
        if self.max_batch < 1:
            raise RtpickError(f"--max-batch must be at least 1, not {self.max_batch}")
        fixed = self.session.inputs[0].shape[0]
        self.batch_sizes: list[int] | None = None
        if isinstance(fixed, int):  # a model with a fixed batch runs every batch at that size, padded
            self.max_batch, self.batch_sizes = fixed, [fixed]
        self.containers: list[Any] = []
        self.cameras = sum(s.count if s.kind == "synthetic" else 1 for s in specs)
        self._check_memory()  # before anything per camera is allocated
        fps = self._probe(specs)
        deadline = np.concatenate([np.full(n, deadline_ms / 1e3 if deadline_ms else 1.0 / (f or 30.0))
                                   for n, f in fps])
        self.deadline_s = deadline
        self.window_s = (max_queue_delay_ms / 1e3 if max_queue_delay_ms is not None else float(deadline.min()) / 4)
        self._stop = threading.Event()
        self.scheduler: Scheduler | None = None
        self.metrics: dict[str, Any] | None = None

    # --------------------------------------------------------------------------------------- set-up

    def _probe(self, specs: list[SourceSpec]) -> list[tuple[int, float | None]]:
        """(cameras, frame rate) per source; files and URLs are opened now, so a bad one fails before any run."""
        fps: list[tuple[int, float | None]] = []
        for spec in specs:
            if spec.kind == "synthetic":
                fps.append((spec.count, spec.fps))
                continue
            container = open_container(spec)
            self.containers.append(container)
            fps.append((1, stream_fps(container)))
        return fps

    def _check_memory(self) -> None:
        import psutil

        row_bytes = int(np.prod(self.row)) * np.dtype(self.dtype).itemsize
        need = row_bytes * (self.cameras * self.queue_frames + 4 * self.max_batch)
        available = psutil.virtual_memory().available
        if need > MEMORY_SHARE * available:
            raise RtpickError(
                f"{self.cameras:,} cameras x {self.queue_frames} frames x {row_bytes:,} bytes need "
                f"{need / 2**30:.1f} GiB of slots, more than half of the {available / 2**30:.1f} GiB available; "
                "use fewer cameras or --queue-frames 1")

    def _event(self, camera: int, kind: str, detail: str) -> None:
        with self._events_lock:
            self.events.append({"camera": camera, "event": kind, "detail": detail, "t": time.time()})
        if self.on_source_event is not None:
            self.on_source_event(camera, kind, detail)

    # --------------------------------------------------------------------------------------- running

    def stop(self) -> None:
        """Stop soon (from any thread or a signal handler): sources stop, the batch in flight finishes."""
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.stop()

    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Process until every source ended, `duration_s` passed, or `stop()`; returns the metrics."""
        from rtpick.perf.staging import staging_for

        if duration_s is not None and not duration_s > 0:
            raise RtpickError(f"--duration must be positive, not {duration_s}")
        session, preprocess, dtype = self.session, self.preprocess, self.dtype
        staging = staging_for(session, {self.input_name: self.row}, self.max_batch)
        frame = np.random.default_rng(self.seed).integers(0, 256, (preprocess.height, preprocess.width, 3),
                                                          dtype=np.uint8)
        warm_rows = {self.input_name: np.broadcast_to(preprocess.apply(frame, dtype), (self.max_batch, *self.row))}
        staging.fill(warm_rows)
        for size in self.batch_sizes or range(1, self.max_batch + 1):  # every size it can run, before any frame
            session.run(staging.stage(size))
        session.synchronize()
        predictor = ComputePredictor(self.max_batch)
        measure_batches(session, predictor, sorted(set(self.batch_sizes or {1, self.max_batch})), staging.stage)
        if self.synthetic:
            policy, threads = self._synthetic_policy(duration_s), []
        else:
            policy, threads = self._frame_policy(staging)
        scheduler = Scheduler(session, policy, max_batch=self.max_batch, max_queue_delay_s=self.window_s,
                              staging=staging, predictor=predictor, on_batch=self._batch_done(policy),
                              batch_sizes=self.batch_sizes)
        self.scheduler = scheduler
        if hasattr(policy, "wake"):
            policy.wake = scheduler.wake
        for thread in threads:
            thread.start()
        if self._stop.is_set():
            scheduler.stop()
        scheduler.start()
        # synthetic cameras have a fixed count of frames (duration x fps): the run ends when the scheduler has
        # processed or dropped the last of them, so a stop at the wall clock must not cut frames that are due
        # (it did, under load: 476 of 480); the clock only bounds a run whose batches stall
        grace = SYNTHETIC_GRACE_S + max(self.deadline_s) if self.synthetic else 0.0
        deadline = time.perf_counter() + duration_s + grace if duration_s else None
        self.interrupted = False
        try:
            while scheduler._thread is not None and scheduler._thread.is_alive():
                if deadline is not None and time.perf_counter() >= deadline:
                    self.stop()
                if not self.synthetic and not any(t.alive for t in threads):
                    for camera in range(self.cameras):
                        policy.close_camera(camera)
                try:
                    scheduler.join(0.05)
                except KeyboardInterrupt:  # Ctrl-C: stop cleanly, keep what was processed, report it
                    self.interrupted = True
                    self.stop()
        finally:
            self.stop()
            for thread in threads:
                thread.stop()
            for thread in threads:
                thread.join(5.0)
            scheduler.join(30.0)
        if scheduler.error is not None:
            raise scheduler.error
        policy.close_counts()
        self.metrics = self._metrics(policy, scheduler, threads)
        return self.metrics

    def _synthetic_policy(self, duration_s: float | None) -> Any:
        from rtpick.perf.camera_slots import SyntheticCameras

        fps = self.specs[0].fps or 30.0
        if any(s.fps != fps for s in self.specs):
            raise RtpickError("synthetic sources in one run must share one fps")
        frames_each = int((duration_s or 10.0) * fps)
        return SyntheticCameras(self.cameras, fps, max(1, frames_each), float(self.deadline_s[0]),
                                start=time.perf_counter() + 0.01, queue_frames=self.queue_frames, seed=self.seed)

    def _frame_policy(self, staging: Any) -> tuple[Any, list[DecodeThread]]:
        from rtpick.streams.frame_slots import FrameSlots

        preprocess, dtype = self.preprocess, self.dtype
        slots = FrameSlots(self.cameras, self.queue_frames, self.input_name, self.row, dtype, self.deadline_s,
                           lambda frame, out: preprocess.apply(frame, dtype, out), staging)
        threads = [DecodeThread(camera, spec, slots.push, size=(preprocess.height, preprocess.width),
                                paced=self.paced, on_event=self._event, container=container,
                                wait_for_room=slots.wait_for_room)
                   for camera, (spec, container) in enumerate(zip(self.specs, self.containers))]
        return slots, threads

    def _batch_done(self, policy: Any) -> Callable[[Taken, float, Mapping[str, Any]], None]:
        def done(taken: Taken, finished: float, outputs: Mapping[str, Any]) -> None:
            if self.on_result is None:
                return
            cams, frames = taken.keys
            self.on_result(StreamBatch(cams, frames, taken.arrival, finished - taken.arrival,
                                       finished <= taken.deadline,
                                       {k: _host(v, taken.rows) for k, v in outputs.items()}))
        return done

    def _metrics(self, policy: Any, scheduler: Scheduler, threads: list[DecodeThread]) -> dict[str, Any]:
        per_camera = policy.stats.per_camera()
        for row, spec in zip(per_camera, self._camera_labels()):
            row["source"] = spec
        for thread in threads:
            per_camera[thread.camera]["decoded"] = thread.decoded
            per_camera[thread.camera]["state"] = thread.state
        return {
            "config": self.session.config, "cameras": self.cameras, "interrupted": self.interrupted,
            "max_batch": self.max_batch,
            "queue_frames": self.queue_frames, "batch_window_ms": self.window_s * 1e3,
            "preprocess": self.preprocess.to_dict(), "paced": self.paced,
            "total": policy.stats.total(), "per_camera": per_camera, "pipeline": scheduler.stats.to_dict(),
            "source_events": list(self.events),
            "method": ("per-batch scheduler over latest-frame-wins camera slots; latency from each frame's "
                       "(scheduled) capture to the end of its batch, host clock; on time = done by capture + "
                       "deadline (default 1/fps of the source)"),
        }

    def _camera_labels(self) -> list[str]:
        labels = []
        for spec in self.specs:
            labels.extend([spec.label] * (spec.count if spec.kind == "synthetic" else 1))
        return labels
