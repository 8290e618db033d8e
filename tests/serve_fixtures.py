"""Servers for the serve tests: in-process (uvicorn + gRPC on a thread's own loop) on free loopback ports."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rtpick.serve.server import ServeOptions, build_served, serve_async


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SlowSession:
    """A real session that sleeps `delay_s` per batch (a slow model for overload tests)."""

    def __init__(self, session: Any, delay_s: float) -> None:
        self._session, self.delay_s = session, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, feeds: Any) -> Any:
        time.sleep(self.delay_s)
        return self._session.run(feeds)


class FailingSession(SlowSession):
    """A real session that raises on any batch holding a row whose first value is 666 (a runtime failure)."""

    def __init__(self, session: Any) -> None:
        super().__init__(session, 0.0)

    def run(self, feeds: Any) -> Any:
        first = next(iter(feeds.values()))
        if (first.reshape(first.shape[0], -1)[:, 0] == 666).any():
            raise RuntimeError("the runtime failed on this batch")
        return self._session.run(feeds)


def demo_options(**overrides: Any) -> ServeOptions:
    """The settings the endpoint tests serve the demo model with: free ports, small bounds, no deadline."""
    settings: dict[str, Any] = dict(port=free_port(), grpc_port=free_port(), max_batch=8, max_queue_delay_ms=2.0,
                                    max_queue_size=64, timeout_ms=0, max_request_bytes=1 << 20, exit_timeout_s=5)
    return ServeOptions(**{**settings, **overrides})


@contextmanager
def running_demo(**overrides: Any) -> Iterator[tuple[Any, ServeOptions]]:
    """The demo model served with `demo_options(**overrides)`: yields (its `ServedModel`, the options)."""
    options = demo_options(**overrides)
    with running_server(options) as served:
        yield served, options


@contextmanager
def running_server(options: ServeOptions, target: str = "rtpick:digits", runtime: str = "ort-cpu:fp32",
                   slow_s: float = 0.0, start_timeout_s: float = 60.0, wrap: Any = None) -> Iterator[Any]:
    """Start a server on a thread, yield its `ServedModel`, and always stop it (drain, then join)."""
    served = build_served(target, runtime, options)
    if slow_s:
        served.session = SlowSession(served.session, slow_s)
    if wrap is not None:
        served.session = wrap(served.session)
    up = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(serve_async(served, options, started=up.set))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failure.append(exc)
            up.set()

    thread = threading.Thread(target=main, name="test-server", daemon=True)
    thread.start()
    try:
        if not up.wait(start_timeout_s) or failure:
            raise RuntimeError(f"the test server did not start: {failure}")
        yield served
    finally:
        served.draining = True
        thread.join(options.exit_timeout_s + 10)
        served.stop()
