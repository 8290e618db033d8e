"""The HTTP/REST front end of the Open Inference Protocol (KServe v2 / Triton) as a Starlette app.

Why so thin: parsing and encoding live in `rtpick.serve.protocol`, batching and overload in
`rtpick.serve.served`; this module maps routes to them and turns every failure into ``{"error": "..."}`` with
its status (400/404/413/429/503/500), never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rtpick.serve.errors import ProtocolError, error_body
from rtpick.serve.protocol import (
    HEADER_LENGTH,
    check_body_size,
    encode_infer_response,
    parse_infer_request,
    unknown_model,
)

SERVER_NAME = "rtpick"
EXTENSIONS = ["classification", "binary_tensor_data", "statistics", "model_configuration", "schedule_policy",
              "system_shared_memory"]
log = logging.getLogger("rtpick.serve")


def server_metadata(shared_memory: bool = True) -> dict[str, Any]:
    from rtpick import __version__

    extensions = EXTENSIONS if shared_memory else [e for e in EXTENSIONS if e != "system_shared_memory"]
    return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}


def build_app(served: Any, metrics: Any, max_request_bytes: int | None) -> Any:
    """The Starlette app for one `ServedModel` (`served`) and its `Metrics`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    json_type = "application/json"

    def answer(document: Any, status: int = 200) -> Response:
        return Response(json.dumps(document, separators=(",", ":")).encode(), status, media_type=json_type)

    def error(exc: ProtocolError) -> Response:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return Response(exc.body(), exc.status, headers=headers, media_type=json_type)

    def check_model(request: Request) -> None:
        name = request.path_params.get("model")
        version = request.path_params.get("version")
        if name != served.name or (version not in (None, "", served.version)):
            raise unknown_model(name, version)

    async def live(request: Request) -> Response:
        return Response(b"", 200)

    async def ready(request: Request) -> Response:
        return Response(b"", 200 if served.ready and not served.draining else 503)

    async def metadata(request: Request) -> Response:
        return answer(server_metadata(served.shared_memory is not None))

    async def model_metadata(request: Request) -> Response:
        check_model(request)
        return answer(served.signature.metadata())

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return Response(b"", 200 if served.ready and not served.draining else 503)

    async def repository_index(request: Request) -> Response:
        return answer(served.repository_index())

    async def model_control(request: Request) -> Response:
        raise served.refuse_model_control(request.url.path.rsplit("/", 1)[-1])

    async def model_config(request: Request) -> Response:
        check_model(request)
        return answer(served.config)

    async def model_stats(request: Request) -> Response:
        if "model" in request.path_params:
            check_model(request)
        return answer(served.statistics())

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit():
            try:
                check_body_size(int(length), max_request_bytes)
            except ProtocolError:
                served.counters.fail("too_large")
                raise
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if max_request_bytes is not None and size > max_request_bytes:
                served.counters.fail("too_large")
                raise ProtocolError(413, f"request body is over the limit of {max_request_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def infer(request: Request) -> Response:
        check_model(request)
        served.admit()
        try:
            body = await read_body(request)
            try:
                parsed = parse_infer_request(body, served.signature, request.headers.get(HEADER_LENGTH),
                                             max_request_bytes, served.shared_memory)
            except ProtocolError as exc:
                served.counters.fail("too_large" if exc.status == 413 else "invalid")
                raise
            outputs = await served.infer(parsed)
            encoded = encode_infer_response(served.signature, parsed, outputs)
        finally:
            served.release()
        return Response(encoded.body, 200, headers=encoded.headers)

    def registry() -> Any:
        if served.shared_memory is None:
            raise ProtocolError(400, "this server has the system shared-memory extension turned off")
        return served.shared_memory

    async def shm_status(request: Request) -> Response:
        return answer(registry().status(request.path_params.get("region")))

    async def shm_register(request: Request) -> Response:
        from rtpick.serve.shared_memory import check_local_peer

        check_local_peer(request.client.host if request.client else None)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > 65536:
                raise ProtocolError(413, "a register request is a small JSON object; this one is over 64 KiB")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise ProtocolError(400, "the register request must be JSON {\"key\", \"offset\", \"byte_size\"}") \
                from None
        if not isinstance(document, dict):
            raise ProtocolError(400, "the register request must be a JSON object")
        registry().register(request.path_params["region"], document.get("key"), document.get("offset", 0),
                            document.get("byte_size"))
        return Response(b"", 200)

    async def shm_unregister(request: Request) -> Response:
        registry().unregister(request.path_params.get("region"))
        return Response(b"", 200)

    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, 200, headers={"Content-Type": content_type})

    async def on_protocol_error(request: Request, exc: Exception) -> Response:
        return error(exc)  # type: ignore[arg-type]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        text = "no such endpoint" if status == 404 else str(getattr(exc, "detail", "")) or "request refused"
        return Response(error_body(text), status, media_type=json_type)

    async def on_any_error(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return Response(error_body(f"internal error: {type(exc).__name__}"), 500, media_type=json_type)

    def guarded(endpoint: Any) -> Any:
        """Every failure of an endpoint answered here, as JSON: nothing reaches the server's error middleware."""

        async def wrapper(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ProtocolError as exc:
                return error(exc)
            except Exception as exc:  # noqa: BLE001 - a bug or a runtime failure: a 500 with a message, no trace
                return await on_any_error(request, exc)

        return wrapper

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", metadata),
        Route("/metrics", guarded(prometheus)), Route("/v2/models/stats", guarded(model_stats)),
        Route("/v2/systemsharedmemory/status", guarded(shm_status)),
        Route("/v2/systemsharedmemory/region/{region}/status", guarded(shm_status)),
        Route("/v2/systemsharedmemory/region/{region}/register", guarded(shm_register), methods=["POST"]),
        Route("/v2/systemsharedmemory/unregister", guarded(shm_unregister), methods=["POST"]),
        Route("/v2/systemsharedmemory/region/{region}/unregister", guarded(shm_unregister), methods=["POST"]),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{model}/load", guarded(model_control), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", guarded(model_control), methods=["POST"]),
    ]
    for base in (model, versioned):
        routes += [Route(base, guarded(model_metadata)), Route(base + "/ready", guarded(model_ready)),
                   Route(base + "/config", guarded(model_config)), Route(base + "/stats", guarded(model_stats)),
                   Route(base + "/infer", guarded(infer), methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={ProtocolError: on_protocol_error,
                                                        HTTPException: on_http_error, Exception: on_any_error})
