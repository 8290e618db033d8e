"""The one error type of the inference protocol: an HTTP status and a message, answered as JSON."""

from __future__ import annotations

import json


class ProtocolError(Exception):
    """A request the protocol refuses: `status` is the HTTP status (400, 404, 413, ...), `message` the reason.

    `body()` is the response body every error gets, ``{"error": "..."}``; `grpc_code()` the matching gRPC
    status name, so the HTTP and gRPC front ends say the same thing.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> bytes:
        return error_body(self.message)

    def grpc_code(self) -> str:
        return {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
                429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(self.status, "INTERNAL")


def error_body(message: str) -> bytes:
    """``{"error": message}`` as UTF-8 JSON."""
    return json.dumps({"error": message}).encode("utf-8")
