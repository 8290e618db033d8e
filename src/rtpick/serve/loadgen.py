"""A load generator for `rtpick serve` (or any Open Inference Protocol server): closed loop or Poisson open loop.

Why its own: perf_analyzer stops at the first error response, so it cannot measure shedding, and a client that
sends the next request only when the last one returned hides queueing (coordinated omission). Here an open-loop
run draws every arrival time up front (Poisson at `rate`), sends each at its scheduled time on any free
connection, and measures latency from the *scheduled* time, so a stalled server shows up as latency. Every run
is bounded in requests and seconds, and only loopback addresses are accepted.

HTTP goes over raw keep-alive sockets (asyncio streams, one request in flight per connection, the body sent in
one write); gRPC over grpc.aio with Triton's stubs and raw tensor contents.

    python -m rtpick.serve.loadgen http://127.0.0.1:8000 --model rtpick_digits --rate 500 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from rtpick.errors import RtpickError
from rtpick.serve.loadgen_wire import (  # noqa: F401 - part of this module's interface
    LOOPBACK_NAMES,
    GrpcConnection,
    HttpConnection,
    check_loopback,
    http_request_bytes,
    loopback_endpoint,
)


def poisson_schedule(rate: float, duration_s: float, max_requests: int, seed: int = 0) -> np.ndarray:
    """Arrival offsets (seconds from the start) of a Poisson process at `rate`/s, bounded in time and count."""
    if not rate > 0 or not duration_s > 0 or max_requests < 1:
        raise RtpickError("rate, duration and the request bound must be positive")
    rng = np.random.default_rng(seed)
    expected = int(rate * duration_s * 1.2) + 16
    gaps = rng.exponential(1.0 / rate, min(expected, max_requests))
    times = np.cumsum(gaps)
    return times[times < duration_s][:max_requests]


def percentile_ms(latencies_s: Any, q: float) -> float | None:
    values = np.asarray(latencies_s, dtype=float)
    return float(np.percentile(values, q) * 1e3) if values.size else None


@dataclass
class Outcome:
    """What one run saw: statuses by code, latencies of the 200s (from scheduled or send time), wall time."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)  # open loop: 200s' latency from the actual send
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    wall_s: float = 0.0
    missed_schedule: int = 0  # sends that started later than 1 ms after their scheduled time (no free connection)
    not_sent: int = 0  # open loop: scheduled requests never sent (the client fell over 1 s behind its schedule)

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self, rows_per_request: int = 1) -> dict[str, Any]:
        ok = self.statuses.get(200, 0)
        return {
            "sent": self.sent, "ok": ok, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "wall_s": self.wall_s, "requests_per_s": ok / self.wall_s if self.wall_s else 0.0,
            "rows_per_s": ok * rows_per_request / self.wall_s if self.wall_s else 0.0,
            "p50_ms": percentile_ms(self.latencies_s, 50), "p90_ms": percentile_ms(self.latencies_s, 90),
            "p99_ms": percentile_ms(self.latencies_s, 99), "max_ms": percentile_ms(self.latencies_s, 100),
            "from_send_p50_ms": percentile_ms(self.service_s, 50),
            "from_send_p99_ms": percentile_ms(self.service_s, 99),
            "missed_schedule": self.missed_schedule, "not_sent": self.not_sent, "errors": self.errors[:5],
        }


# ------------------------------------------------------------------------------------------------- transports


def http_infer_body(model_inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                    binary: bool = True) -> tuple[bytes, dict[str, str]]:
    """One infer body (binary tensors, or JSON data) and its extra headers, built once and resent."""
    inputs, chunks = [], []
    for name, array in model_inputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        inputs.append(entry)
    document: dict[str, Any] = {"inputs": inputs}
    if binary:
        document["parameters"] = {"binary_data_output": True}
    header = json.dumps(document, separators=(",", ":")).encode()
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


class HttpTarget:
    """Infer over HTTP with one prebuilt request."""

    def __init__(self, url: str, model: str, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                 binary: bool = True) -> None:
        self.host, self.port = loopback_endpoint(url, "http", 8000)
        body, headers = http_infer_body(inputs, datatypes, binary)
        self.raw = http_request_bytes(self.host, self.port, f"/v2/models/{model}/infer", body, headers)

    def connection(self) -> Any:
        return HttpConnection(self.host, self.port)


class _PrebuiltInfer:
    """A stub whose ModelInfer sends bytes serialized once: protobuf would re-encode the same 19 MB request on
    every call (20 ms of this client's CPU per 32-image request on a 2-core machine), so the load generator, not
    the server, would set the pace. The HTTP target resends its prebuilt bytes the same way."""

    def __init__(self, channel: Any) -> None:
        from tritonclient.grpc import service_pb2

        self.ModelInfer = channel.unary_unary(  # noqa: N815 - the stub's method name
            "/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
            response_deserializer=service_pb2.ModelInferResponse.FromString)


class GrpcTarget:
    """Infer over gRPC (raw_input_contents) on one channel shared by every connection slot; the request is
    serialized once and its bytes resent."""

    def __init__(self, address: str, model: str, inputs: Mapping[str, np.ndarray],
                 datatypes: Mapping[str, str]) -> None:
        from tritonclient.grpc import service_pb2

        self.host, self.port = loopback_endpoint(address, "grpc", 8001)
        request = service_pb2.ModelInferRequest(model_name=model)
        for name, array in inputs.items():
            request.inputs.add(name=name, datatype=datatypes[name], shape=list(array.shape))
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
        self.request = request.SerializeToString()
        self.raw = None
        self._stub: Any = None

    def connection(self) -> Any:
        import grpc

        if self._stub is None:
            channel = grpc.aio.insecure_channel(f"{self.host}:{self.port}", options=[
                ("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)])
            self._stub = _PrebuiltInfer(channel)
        return GrpcConnection(self._stub, self.request)


# ----------------------------------------------------------------------------------------------------- runs


async def _closed(target: Any, concurrency: int, max_requests: int, duration_s: float) -> Outcome:
    outcome = Outcome()
    connections = [target.connection() for _ in range(concurrency)]
    start = time.perf_counter()
    end = start + duration_s
    counter = iter(range(max_requests))

    async def worker(conn: Any) -> None:
        while time.perf_counter() < end and next(counter, None) is not None:
            sent = time.perf_counter()
            outcome.sent += 1
            try:
                status, body = await conn.send(target.raw)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                outcome.count(0)
                outcome.errors.append(f"{type(exc).__name__}: {exc}")
                await conn.close()
                continue
            outcome.count(status)
            if status == 200:
                outcome.latencies_s.append(time.perf_counter() - sent)

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        outcome.wall_s = time.perf_counter() - start
        for conn in connections:
            await conn.close()
    return outcome


async def _open(target: Any, schedule: np.ndarray, connections_max: int, grace_s: float) -> Outcome:
    outcome = Outcome()
    free: asyncio.Queue[Any] = asyncio.Queue()
    made = [target.connection() for _ in range(connections_max)]
    for conn in made:
        free.put_nowait(conn)
    start = time.perf_counter() + 0.05
    pending: set[asyncio.Task[None]] = set()

    async def one(conn: Any, scheduled: float) -> None:
        sent = time.perf_counter()
        try:
            status, _ = await conn.send(target.raw)
            outcome.count(status)
            if status == 200:
                now = time.perf_counter()
                outcome.latencies_s.append(now - scheduled)
                outcome.service_s.append(now - sent)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome.count(0)
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
            await conn.close()
        finally:
            free.put_nowait(conn)

    stop_sending = start + (float(schedule[-1]) if schedule.size else 0.0) + 1.0  # a client that fell behind stops
    try:
        for offset in schedule:
            if time.perf_counter() > stop_sending:
                outcome.not_sent = int(schedule.size - outcome.sent)
                break
            scheduled = start + float(offset)
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await free.get()
            if time.perf_counter() - scheduled > 1e-3:
                outcome.missed_schedule += 1
            outcome.sent += 1
            task = asyncio.create_task(one(conn, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
    finally:
        for task in pending:
            task.cancel()
        outcome.wall_s = time.perf_counter() - start
        for conn in made:
            await conn.close()
    return outcome


def run_closed(target: Any, concurrency: int, *, max_requests: int = 10_000, duration_s: float = 10.0) -> Outcome:
    """`concurrency` clients, each sending its next request when the last returned; bounded in count and time."""
    if concurrency < 1:
        raise RtpickError(f"concurrency must be at least 1, not {concurrency}")
    return asyncio.run(_closed(target, concurrency, max_requests, duration_s))


def run_open(target: Any, rate: float, *, duration_s: float = 5.0, max_requests: int = 100_000,
             connections: int = 64, seed: int = 0, grace_s: float = 10.0) -> Outcome:
    """Poisson arrivals at `rate`/s for `duration_s`; latency from each request's scheduled time."""
    schedule = poisson_schedule(rate, duration_s, max_requests, seed)
    return asyncio.run(_open(target, schedule, connections, grace_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rtpick.serve.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="http://127.0.0.1:8000 or grpc://127.0.0.1:8001")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", action="append", required=True,
                        help="NAME:DATATYPE:d0xd1x... (random data, leading dim = rows per request)")
    parser.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    parser.add_argument("--concurrency", type=int, default=1, help="closed loop clients (without --rate)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="send JSON tensors instead of binary")
    parser.add_argument("--shared-memory", choices=["none", "system"], default="none",
                        help="system: inputs and outputs in /dev/shm regions registered with the server "
                             "(same host only), one pair per connection")
    args = parser.parse_args(argv)
    from rtpick.serve.tensors import numpy_dtype

    rng = np.random.default_rng(0)
    inputs, datatypes = {}, {}
    try:
        for text in args.input:
            name, datatype, dims = text.split(":")
            shape = tuple(int(d) for d in dims.split("x"))
            inputs[name] = rng.standard_normal(shape).astype(numpy_dtype(datatype))
            datatypes[name] = datatype
        connections = 64 if args.rate else args.concurrency
        if args.shared_memory == "system":
            from rtpick.serve.loadgen_shm import shm_target

            check_loopback(urlparse(args.url).hostname or "")
            target: Any = shm_target(args.url, args.model, inputs, datatypes, connections)
        elif args.url.startswith("grpc://"):
            target = GrpcTarget(args.url, args.model, inputs, datatypes)
        else:
            target = HttpTarget(args.url, args.model, inputs, datatypes, binary=not args.json)
        rows = next(iter(inputs.values())).shape[0]
        try:
            if args.rate:
                outcome = run_open(target, args.rate, duration_s=args.duration, max_requests=args.max_requests,
                                   connections=connections)
            else:
                outcome = run_closed(target, args.concurrency, max_requests=args.max_requests,
                                     duration_s=args.duration)
        finally:
            if hasattr(target, "close"):
                target.close()
    except (RtpickError, ValueError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(outcome.summary(rows), indent=1))
    return 0 if not math.isnan(outcome.wall_s) else 1


if __name__ == "__main__":
    sys.exit(main())
