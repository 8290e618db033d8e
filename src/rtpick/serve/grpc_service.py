"""The gRPC front end (Triton's ``inference.GRPCInferenceService``), on the same `ServedModel` as HTTP.

Why grpc.aio on the server's event loop: infer awaits the same future as the HTTP route, so both protocols share
one queue, one scheduler and one set of counters; the servicer class comes from the stubs tritonclient[grpc]
ships, so the wire format is Triton's own. Errors carry the status the HTTP side would give, as a gRPC code.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rtpick.serve.errors import ProtocolError
from rtpick.serve.grpc_wire import split_infer_request
from rtpick.serve.protocol import unknown_model
from rtpick.serve.protocol_grpc import from_grpc_request, to_grpc_response


def make_servicer(served: Any) -> Any:
    """A ``GRPCInferenceServiceServicer`` for one `ServedModel`."""
    import grpc
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

    from rtpick.serve.http import server_metadata

    config_message = json_format.ParseDict(json.loads(json.dumps(served.config)), model_config_pb2.ModelConfig())

    async def abort(context: Any, exc: ProtocolError) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code()), exc.message)

    def check(name: str, version: str) -> None:
        if name != served.name or version not in ("", served.version):
            raise unknown_model(name, version or None)

    def is_ready() -> bool:
        return bool(served.ready and not served.draining)

    async def infer_one(split: Any) -> Any:
        """One ModelInferRequest to its ModelInferResponse; a `ProtocolError` for a request that cannot be."""
        if split.error is not None:
            served.counters.fail("invalid")
            raise ProtocolError(400, split.error)
        request = split.message
        check(request.model_name, request.model_version)
        served.admit()
        try:
            try:
                parsed = from_grpc_request(request, served.signature, served.shared_memory, split.raw)
            except ProtocolError:
                served.counters.fail("invalid")
                raise
            outputs = await served.infer(parsed)
            return to_grpc_response(served.signature, parsed, outputs)
        finally:
            served.release()

    def stream_error(request_id: str, message: str) -> Any:
        return service_pb2.ModelStreamInferResponse(
            error_message=message, infer_response=service_pb2.ModelInferResponse(
                id=request_id, model_name=served.name, model_version=served.version))

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - the protocol's names
            return service_pb2.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            return service_pb2.ServerReadyResponse(ready=is_ready())

        async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            try:
                check(request.name, request.version)
            except ProtocolError as exc:
                await abort(context, exc)
            return service_pb2.ModelReadyResponse(ready=is_ready())

        async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
            return json_format.ParseDict({"models": served.repository_index()}, service_pb2.RepositoryIndexResponse())

        async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
            await abort(context, served.refuse_model_control("load"))

        async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
            await abort(context, served.refuse_model_control("unload"))

        async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            meta = server_metadata(served.shared_memory is not None)
            return service_pb2.ServerMetadataResponse(name=meta["name"], version=meta["version"],
                                                      extensions=meta["extensions"])

        async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            try:
                check(request.name, request.version)
            except ProtocolError as exc:
                await abort(context, exc)
            meta = served.signature.metadata()
            return service_pb2.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
                outputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]])

        async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
            try:
                check(request.name, request.version)
            except ProtocolError as exc:
                await abort(context, exc)
            return service_pb2.ModelConfigResponse(config=config_message)

        async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
            if request.name:
                try:
                    check(request.name, request.version)
                except ProtocolError as exc:
                    await abort(context, exc)
            return json_format.ParseDict(served.statistics(), service_pb2.ModelStatisticsResponse())

        async def ModelInfer(self, split: Any, context: Any) -> Any:  # noqa: N802
            """`split`: the request as `split_infer_request` read it (its raw contents not copied)."""
            try:
                return await infer_one(split)
            except ProtocolError as exc:
                await abort(context, exc)
            except Exception as exc:  # noqa: BLE001 - a message, never a traceback; the server goes on
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"[:300])

        async def ModelStreamInfer(self, splits: Any, context: Any) -> Any:  # noqa: N802
            """Triton's streaming infer for a model that is not decoupled: one response per request, each as soon
            as it is done (so in-flight requests of a stream are batched like any others), matched by its id; a
            failed request is a response with its error_message, and the stream goes on."""
            done: asyncio.Queue = asyncio.Queue()
            # bounded: a stream holds at most this many requests between reading one and sending its answer (a
            # client that sends faster than the model answers, or does not read, waits; memory stays bounded)
            room = asyncio.Semaphore(served.settings.max_queue + served.settings.max_batch)

            async def answer(split: Any) -> None:
                request_id = split.message.id if split.message is not None else ""
                try:
                    response = service_pb2.ModelStreamInferResponse(infer_response=await infer_one(split))
                except ProtocolError as exc:
                    response = stream_error(request_id, exc.message)
                except Exception as exc:  # noqa: BLE001 - as in ModelInfer
                    response = stream_error(request_id, f"internal error: {type(exc).__name__}: {exc}"[:300])
                await done.put(response)

            async def read() -> None:
                async for split in splits:
                    await room.acquire()
                    task = asyncio.ensure_future(answer(split))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)  # only the ones in flight are kept
                await done.put(None)  # the client closed its side: answer what is in flight, then end

            tasks: set[Any] = set()
            reader = asyncio.ensure_future(read())
            closed = False
            try:
                while not closed or tasks or not done.empty():
                    item = await done.get()
                    if item is None:
                        closed = True
                        continue
                    yield item
                    room.release()
            finally:
                reader.cancel()
                for task in list(tasks):
                    task.cancel()

        def registry(self) -> Any:
            if served.shared_memory is None:
                raise ProtocolError(400, "this server has the system shared-memory extension turned off")
            return served.shared_memory

        async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
            try:
                regions = self.registry().status(request.name or None)
            except ProtocolError as exc:
                await abort(context, exc)
            response = service_pb2.SystemSharedMemoryStatusResponse()
            for region in regions:
                response.regions[region["name"]].CopyFrom(
                    service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(**region))
            return response

        async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
            from rtpick.serve.shared_memory import check_local_peer, grpc_peer_host

            try:
                check_local_peer(grpc_peer_host(context.peer()))
                self.registry().register(request.name, request.key, int(request.offset), int(request.byte_size))
            except ProtocolError as exc:
                await abort(context, exc)
            return service_pb2.SystemSharedMemoryRegisterResponse()

        async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
            try:
                self.registry().unregister(request.name or None)
            except ProtocolError as exc:
                await abort(context, exc)
            return service_pb2.SystemSharedMemoryUnregisterResponse()

    return Servicer()


SERVICE = "inference.GRPCInferenceService"


def add_to_server(server: Any, served: Any) -> None:
    """Every method of Triton's service, from its descriptor, with ModelInfer's request read by
    `split_infer_request` (raw tensor bytes left in place) instead of protobuf's parser."""
    import grpc
    from tritonclient.grpc import service_pb2

    servicer = make_servicer(served)
    handlers = {}
    for method in service_pb2.DESCRIPTOR.services_by_name[SERVICE.split(".")[-1]].methods:
        request_type = getattr(service_pb2, method.input_type.name)
        response_type = getattr(service_pb2, method.output_type.name)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[(method.client_streaming,
                                                                       method.server_streaming)]
        reader = split_infer_request if method.name in ("ModelInfer", "ModelStreamInfer") else request_type.FromString
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=reader,
                                     response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
