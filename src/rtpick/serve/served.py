"""One model behind the server: its session, the shared scheduler, the request queue, deadlines and counters.

Why apart from the HTTP and gRPC front ends: both turn a request into the same `InferRequest` (the codec in
`rtpick.serve.protocol`) and await the same `infer()`, so batching, overload refusal, deadlines and every counter
behave identically whichever protocol a client speaks. Requests from all clients are merged into batches by the
scheduler of `rtpick.perf.scheduler` (the engine under `rtpick streams`), on its own thread; the event loop only
submits and awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.perf.batch_rows import UnbatchedSession, rows_problem
from rtpick.perf.request_queue import QueueFull, RequestQueue, RequestResult, WouldMissDeadline
from rtpick.perf.scheduler import Scheduler, Taken
from rtpick.serve.classification import top_classes
from rtpick.serve.errors import ProtocolError
from rtpick.serve.protocol import InferRequest, InShm, ModelSignature
from rtpick.serve.shared_memory import MAX_REGIONS, SharedMemoryRegistry, write_tensor

REASONS = ("queue_full", "predicted_late", "deadline", "draining", "too_large", "invalid", "backend")


def to_host(value: Any) -> np.ndarray:
    """A batch output as a host numpy array (one copy per batch for device tensors)."""
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


PARALLEL_COPY_BYTES = 8 << 20  # a batch's inputs from this size on are copied into staging by several threads
COPY_PIECE_BYTES = 2 << 20  # each thread's piece: whole rows of about this many bytes


class ServerQueue(RequestQueue):
    """The request queue, with each batch's rows copied straight from the requests' arrays (received bytes or
    shared memory) into the staging rows, by a few threads when the batch is large (numpy releases the GIL for a
    plain copy, and one thread's memcpy cannot keep a GPU busy at hundreds of MB per batch), and each batch's
    outputs copied to the host once before they are sliced per request."""

    def __init__(self, max_queue: int, max_batch: int, copy_threads: int | None = None) -> None:
        super().__init__(max_queue, max_batch)
        self.copy_threads = copy_threads if copy_threads is not None else min(8, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    def stage(self, taken: Taken, size: int, staging: Any) -> Mapping[str, Any]:
        if staging is None:
            raise RtpickError("the request queue stages into preallocated buffers: give the scheduler a staging")
        hosts: dict[str, np.ndarray] = {}
        pieces: list[tuple[np.ndarray, np.ndarray]] = []
        offset, total = 0, 0
        for request in taken.keys:
            for name, value in request.feeds.items():
                if name not in hosts:
                    hosts[name] = staging.host(name)  # on CUDA: waits until this set's last copy has read it
                row_bytes = max(value[:1].nbytes, 1)
                step = max(1, COPY_PIECE_BYTES // row_bytes)
                for start in range(0, request.rows, step):
                    stop = min(request.rows, start + step)
                    pieces.append((hosts[name][offset + start:offset + stop], value[start:stop]))
                total += value.nbytes
            offset += request.rows
        if total >= PARALLEL_COPY_BYTES and self.copy_threads > 1 and len(pieces) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.copy_threads, thread_name_prefix="rtpick-stage")
            for future in [self._pool.submit(_copy_rows, target, source) for target, source in pieces]:
                future.result()
        else:
            for target, source in pieces:
                _copy_rows(target, source)
        return staging.stage(size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def complete(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        super().complete(taken, done, {name: to_host(value) for name, value in outputs.items()})


def _copy_rows(target: np.ndarray, source: np.ndarray) -> None:
    np.copyto(target, source, casting="unsafe")  # as an assignment would: FP32 rows into an FP16 staging


@dataclass(frozen=True)
class ServeSettings:
    """The serving policy: each figure from the deploy file unless a flag overrides it."""

    max_batch: int
    max_queue_delay_s: float
    max_queue: int
    timeout_s: float  # a request's deadline after arrival (inf: none); a request's `timeout` can only lower it
    batch_sizes: tuple[int, ...] | None = None  # None: every size up to max_batch; else padded up to these
    reject_status: int = 503


class Counters:
    """Triton's inference statistics for one model, updated on the scheduler thread and the event loop."""

    def __init__(self, max_batch: int) -> None:
        self.lock = threading.Lock()
        self.success = 0
        self.failure = dict.fromkeys(REASONS, 0)
        self.inferences = 0  # rows
        self.executions = 0  # batches
        self.request_ns = 0
        self.queue_ns = 0
        self.compute_ns = 0
        self.fail_ns = 0
        self.last_inference_ms = 0
        self.batch_count = np.zeros(max_batch + 1, dtype=np.int64)
        self.batch_ns = np.zeros(max_batch + 1, dtype=np.int64)

    def fail(self, reason: str, seconds: float = 0.0) -> None:
        with self.lock:
            self.failure[reason] += 1
            self.fail_ns += int(seconds * 1e9)


class ServedModel:
    """A session served through the scheduler. `start()` warms it (every batch size) then starts the loop."""

    def __init__(self, session: Any, config: Mapping[str, Any], settings: ServeSettings,
                 observe: Any = None, warm_ranges: Mapping[str, tuple[float, float]] | None = None,
                 index_limits: Mapping[str, int] | None = None) -> None:
        self.config = dict(config)
        self.signature = ModelSignature.from_config(self.config)
        if self.signature.max_batch_size <= 0:
            if settings.max_batch != 1:
                raise RtpickError("this model has no batch axis, so requests cannot be merged; serve it with "
                                  "--max-batch 1")
            session = UnbatchedSession(session)
        self.session = session
        self.settings = settings
        self.name = self.signature.name
        self.version = self.signature.version
        self.counters = Counters(settings.max_batch)
        self.observe = observe  # metrics hook: observe(latency_s, ok) / batch(rows)
        self.warm_ranges = dict(warm_ranges or {})  # --input-range: values the warm-up's synthetic inputs take
        self.index_limits = dict(index_limits or {})  # the model's inputs that index a table: warm values below it
        self.rows = {}
        for tensor in self.signature.inputs:
            if any(d < 0 for d in tensor.dims):
                raise RtpickError(f"input {tensor.name!r} has an open dim {list(tensor.dims)}; the server batches "
                                  "rows of one shape: give it with --shape (rtpick serve MODEL -r ..., or "
                                  "rtpick recommend --save)")
            self.rows[tensor.name] = tensor.dims
        self.ready = False
        self.draining = False
        self.inflight = 0  # requests in the scheduler's queue or batch
        self.admitted = 0  # requests between admit() and release() (parsing, queued, running, answering)
        self.queue: ServerQueue | None = None
        self.scheduler: Scheduler | None = None
        # the system shared-memory regions clients registered (None: the extension is off)
        self.shared_memory: SharedMemoryRegistry | None = SharedMemoryRegistry(MAX_REGIONS)

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Warm every batch size the scheduler may run, seed its predictor, start its thread; then ready."""
        from rtpick.data import synthetic_feeds
        from rtpick.model import TensorSpec
        from rtpick.perf.staging import staging_for

        s = self.settings
        staging = staging_for(self.session, self.rows, s.max_batch)
        # rtpick's usual synthetic inputs (floats in [0, 1), integers in [0, 100) or below the table they index)
        specs = [TensorSpec(name, staging.host(name).dtype.name, (s.max_batch, *dims), self.index_limits.get(name))
                 for name, dims in self.rows.items()]
        staging.fill(synthetic_feeds(specs, {t.name: t.shape for t in specs}, ranges=self.warm_ranges))
        self.queue = ServerQueue(s.max_queue, s.max_batch)
        self.scheduler = Scheduler(self.session, self.queue, max_batch=s.max_batch,
                                   max_queue_delay_s=s.max_queue_delay_s, staging=staging,
                                   batch_sizes=s.batch_sizes, on_batch=self._on_batch)
        self.queue.wake = self.scheduler.wake
        try:
            for size in s.batch_sizes or range(1, s.max_batch + 1):
                problem = rows_problem(self.session.run(staging.stage(size)), size)
                if problem is not None:  # refused at start, not answered with other requests' rows
                    raise RtpickError(f"{self.name} cannot be served: {problem}")
            self.session.synchronize()
            self.scheduler.measure(sorted({1, s.max_batch}), staging.stage)
        except RtpickError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime's own error, told in one line
            text = str(exc).strip().splitlines()
            raise RtpickError(
                f"{self.name} failed its warm-up on synthetic inputs ({type(exc).__name__}: "
                f"{text[0][:300] if text else ''}); where an input needs particular values (a sample rate, token "
                "ids below the vocabulary size), give them with --input-range NAME:LO:HI") from exc
        scheduler, buckets = self.scheduler, self.scheduler.buckets
        # admission: refuse at once what the scheduler predicts cannot finish by its deadline (padded sizes)
        self.queue.window_s = s.max_queue_delay_s
        self.queue.cost = lambda rows: scheduler.predict(int(buckets[min(max(rows, 1), s.max_batch)]))
        self.scheduler.start()
        self.ready = True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop after the batch in flight; anything still queued is answered 503."""
        self.ready = False
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler.join(timeout_s)
        if self.queue is not None:
            self.queue.drain("late")
            self.queue.close()
        if self.shared_memory is not None:
            self.shared_memory.unregister()

    def pending(self) -> int:
        return self.queue.pending() if self.queue is not None else 0

    # ---------------------------------------------------------------------------------------------- infer

    def admit(self) -> None:
        """Called before a request's body is read or parsed: refuse at once (cheaply) while draining, or while
        the server already holds as many requests as its queue plus one running batch, counting those still
        being parsed. Under CPU overload the parsing, not the model, is the bottleneck, so bounding only the
        scheduler's queue would let requests wait without bound in front of it. Pair with `release()`."""
        s = self.settings
        if self.draining or not self.ready:
            raise self.refuse("draining", 503, "the server is draining or not ready; retry on another replica")
        if self.admitted >= s.max_queue + s.max_batch:
            raise self.refuse("queue_full", s.reject_status,
                              f"the server holds {self.admitted} requests already; retry later")
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    def refuse(self, reason: str, status: int, message: str) -> ProtocolError:
        self.counters.fail(reason)
        return ProtocolError(status, message)

    async def infer(self, request: InferRequest) -> dict[str, Any]:
        """Queue `request`, await its batch; its requested outputs (host arrays, copies; `InShm` for those
        written into shared memory). Raises `ProtocolError`."""
        s = self.settings
        if self.draining or not self.ready or self.queue is None:
            raise self.refuse("draining", 503, "the server is draining or not ready; retry on another replica")
        arrival = time.perf_counter()
        timeout = s.timeout_s
        if request.timeout_us is not None and request.timeout_us > 0:
            timeout = min(timeout, request.timeout_us / 1e6)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RequestResult] = loop.create_future()

        def done(result: RequestResult) -> None:
            if result.outputs is not None:  # views into the batch's arrays: copy before the next batch
                try:
                    result.outputs = self._deliver(request, result.outputs)
                except ProtocolError as exc:  # a shared-memory output that no longer fits its region
                    result.status, result.error, result.outputs = "refused", exc, None
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result)

        feeds = request.inputs if self.signature.max_batch_size > 0 else \
            {k: v[None] for k, v in request.inputs.items()}
        try:
            self.queue.submit(feeds, arrival + timeout if math.isfinite(timeout) else math.inf, done, arrival)
        except WouldMissDeadline as exc:
            raise self.refuse("predicted_late", s.reject_status,
                              f"the request would not finish within its deadline: {exc}") from None
        except QueueFull:
            raise self.refuse("queue_full", s.reject_status,
                              f"the queue holds {s.max_queue} requests already; retry later") from None
        except RtpickError as exc:  # rows outside 1..max_batch (the codec checks it first; kept as a 400)
            raise self.refuse("invalid", 400, str(exc)) from None
        self.inflight += 1
        try:
            result = await future
        finally:
            self.inflight -= 1
        return self._answer(request, result)

    def _deliver(self, request: InferRequest, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """On the scheduler thread, from this request's views of the batch's outputs: each output the request
        wants, copied once, into its shared-memory range or into an array of its own."""
        datatypes = {t.name: t.datatype for t in self.signature.outputs}
        unbatched = self.signature.max_batch_size <= 0
        delivered: dict[str, Any] = {}
        for wanted in request.outputs:
            value = outputs[wanted.name]
            if unbatched:
                value = value[0]
            if wanted.classes:
                value = top_classes(to_host(value), wanted.classes, batched=not unbatched)
            if wanted.shm is not None:
                size = write_tensor(wanted.shm, value, datatypes[wanted.name], wanted.name)
                delivered[wanted.name] = InShm(tuple(value.shape), size)
            else:
                delivered[wanted.name] = np.array(value)
        return delivered

    def _answer(self, request: InferRequest, result: RequestResult) -> dict[str, Any]:
        c = self.counters
        if result.status == "refused" and isinstance(result.error, ProtocolError):
            c.fail("invalid", result.latency_s)
            raise result.error
        if result.status == "late":
            c.fail("deadline", result.latency_s)
            if self.observe is not None:
                self.observe.request(result.latency_s, False)
            raise ProtocolError(503, "the request could not finish within its deadline and was dropped before "
                                     "it ran; retry later or with a larger timeout")
        if result.status != "ok" or result.outputs is None:
            c.fail("backend", result.latency_s)
            raise ProtocolError(500, f"the model failed on this batch: {type(result.error).__name__}: "
                                     f"{str(result.error)[:300]}")
        with c.lock:
            c.success += 1
            c.request_ns += int(result.latency_s * 1e9)
            c.queue_ns += int(result.queued_s * 1e9)
            c.compute_ns += int((result.latency_s - result.queued_s) * 1e9)
            c.last_inference_ms = int(time.time() * 1e3)
        if self.observe is not None:
            self.observe.request(result.latency_s, True)
        return result.outputs

    def _on_batch(self, taken: Taken, done: float, outputs: Mapping[str, Any]) -> None:
        c = self.counters
        started = min((r.started for r in taken.keys), default=done)
        with c.lock:
            c.executions += 1
            c.inferences += taken.rows
            c.batch_count[taken.rows] += 1
            c.batch_ns[taken.rows] += int((done - started) * 1e9)
        if self.observe is not None:
            self.observe.batch(taken.rows)

    # ------------------------------------------------------------------------------------------ repository

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's model repository index: this server's one model and its state."""
        state = "READY" if self.ready and not self.draining else "UNAVAILABLE"
        reason = "" if state == "READY" else ("draining" if self.draining else "warming up")
        return [{"name": self.name, "version": self.version, "state": state, **({"reason": reason} if reason else {})}]

    def refuse_model_control(self, action: str) -> ProtocolError:
        """Load and unload: rtpick serve serves the model it started with (Triton's model control mode none)."""
        return ProtocolError(400, f"cannot {action} models: rtpick serve serves the one model it started with "
                                  f"({self.name!r}); start another server for another model")

    # ------------------------------------------------------------------------------------------ statistics

    def statistics(self) -> dict[str, Any]:
        """Triton's statistics JSON (``GET /v2/models/<m>/stats``)."""
        c = self.counters
        with c.lock:
            failed = sum(c.failure.values())
            batches = [{"batch_size": int(b), "compute_infer": {"count": int(c.batch_count[b]),
                                                                "ns": int(c.batch_ns[b])}}
                       for b in np.flatnonzero(c.batch_count)]
            stats = {
                "name": self.name, "version": self.version, "last_inference": c.last_inference_ms,
                "inference_count": c.inferences, "execution_count": c.executions,
                "inference_stats": {
                    "success": {"count": c.success, "ns": c.request_ns},
                    "fail": {"count": failed, "ns": c.fail_ns},
                    "queue": {"count": c.success, "ns": c.queue_ns},
                    "compute_input": {"count": c.success, "ns": 0},
                    "compute_infer": {"count": c.success, "ns": c.compute_ns},
                    "compute_output": {"count": c.success, "ns": 0},
                },
                "batch_stats": batches,
            }
        return {"model_stats": [stats]}


def _settle(future: asyncio.Future[RequestResult], result: RequestResult) -> None:
    if not future.done():
        future.set_result(result)
