"""The load generator's connections: one keep-alive HTTP/1.1 socket, one gRPC ModelInfer slot, and the loopback
check every target makes. Apart from `rtpick.serve.loadgen` so that its socket targets and the shared-memory
targets of `rtpick.serve.loadgen_shm` share them without importing each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from rtpick.errors import RtpickError

LOOPBACK_NAMES = ("localhost",)


def check_loopback(host: str) -> None:
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise RtpickError(f"the load generator talks to loopback only (127.0.0.1, ::1, localhost), not {host!r}")


def loopback_endpoint(url: str, scheme: str, default_port: int) -> tuple[str, int]:
    """(host, port) of a server URL or host:port (`scheme` assumed when none is given), refused unless it is
    loopback: the load generator never sends traffic off this machine."""
    parsed = urlparse(url if "://" in url else f"{scheme}://{url}")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    check_loopback(host)
    return host, port


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; `post()` sends a prebuilt request and reads the status and body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:].strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = None


def http_request_bytes(host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GrpcConnection:
    def __init__(self, stub: Any, request: Any) -> None:
        self.stub, self.request = stub, request

    async def send(self, raw: Any) -> tuple[int, bytes]:
        import grpc

        try:
            await self.stub.ModelInfer(self.request)
            return 200, b""
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            status = {grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.INVALID_ARGUMENT: 400,
                      grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429}.get(code, 500)
            return status, (exc.details() or "").encode()

    async def close(self) -> None:
        return None
