"""Load-generator targets that pass tensors through system shared memory (``--shared-memory system``).

Why apart from `rtpick.serve.loadgen`: the socket targets resend one prebuilt request, while here a target makes
one input and one output region, registers them with the server on the protocol it then infers over, and gives
every connection its own slot in them (a request in flight must not share its memory with another); each
connection writes its input into its slot before each request, as a client producing fresh tensors would (one
copy, in place of the socket's encoding). Two regions per target keep well inside the server's region limit.
`close()` unregisters and unlinks every region; call it when the run is over (the runs here do not own targets).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from rtpick.errors import RtpickError
from rtpick.serve.loadgen_wire import GrpcConnection, HttpConnection, http_request_bytes, loopback_endpoint
from rtpick.serve.tensors import numpy_dtype


def check_room(needed: int, directory: str = "/dev/shm") -> None:
    """Refuse up front when /dev/shm cannot hold the regions (writing past a full tmpfs is a SIGBUS, not an error)."""
    if not os.path.isdir(directory):
        raise RtpickError("--shared-memory system needs POSIX shared memory (/dev/shm), which this host lacks")
    info = os.statvfs(directory)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise RtpickError(f"/dev/shm has {free / 1e6:.0f} MB free but the shared-memory regions need "
                          f"{needed / 1e6:.0f} MB; use fewer connections or a larger /dev/shm (docker --shm-size)")


class _Slot:
    """One connection slot: its inputs back to back from `base_in` of the input region, its outputs likewise."""

    def __init__(self, base_in: int, base_out: int, inputs: Mapping[str, np.ndarray],
                 output_bytes: Mapping[str, int], memory_in: Any) -> None:
        self.offsets: dict[str, tuple[int, int]] = {}
        at = base_in
        for name, array in inputs.items():
            self.offsets[name] = (at, array.nbytes)
            at += array.nbytes
        self.out_offsets: dict[str, tuple[int, int]] = {}
        at = base_out
        for name, size in output_bytes.items():
            self.out_offsets[name] = (at, size)
            at += size
        self.memory_in = memory_in

    def write(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name, array in inputs.items():
            at, _ = self.offsets[name]
            np.copyto(np.ndarray(array.shape, array.dtype, self.memory_in.buf, at), array)


class _ShmTarget:
    """What the HTTP and gRPC shared-memory targets share: two regions (inputs, outputs) of one slot per
    connection, registered with the server; `close()` unregisters and unlinks them."""

    def __init__(self, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                 output_bytes: Mapping[str, int], slots: int) -> None:
        self.inputs, self.datatypes, self.output_bytes = dict(inputs), dict(datatypes), dict(output_bytes)
        in_bytes = max(sum(a.nbytes for a in self.inputs.values()), 1)
        out_bytes = max(sum(self.output_bytes.values()), 1)
        check_room(slots * (in_bytes + out_bytes))
        tag = uuid.uuid4().hex[:12]
        self.name_in, self.name_out = f"rtpick_lg_{tag}_in", f"rtpick_lg_{tag}_out"
        self.sizes = (slots * in_bytes, slots * out_bytes)
        self.memories: list[Any] = []
        self.slots: list[_Slot] = []
        self.taken = 0
        self.raw = None
        self.registered = False
        try:
            for name, size in ((self.name_in, self.sizes[0]), (self.name_out, self.sizes[1])):
                self.memories.append(shared_memory.SharedMemory(name, create=True, size=size))
            self.slots = [_Slot(i * in_bytes, i * out_bytes, self.inputs, self.output_bytes, self.memories[0])
                          for i in range(slots)]
            self.register()
            self.registered = True
        except BaseException:
            self.close()
            raise

    def register(self) -> None:
        raise NotImplementedError

    def unregister(self) -> None:
        raise NotImplementedError

    def take_slot(self) -> _Slot:
        """The next slot, round robin: a run's connections get distinct slots while they are at most `slots`."""
        if not self.slots:
            raise RtpickError("this shared-memory target is closed")
        slot = self.slots[self.taken % len(self.slots)]
        self.taken += 1
        return slot

    def close(self) -> None:
        if self.registered:
            with contextlib.suppress(Exception):  # the server may be gone; the regions are unlinked regardless
                self.unregister()
            self.registered = False
        for slot in self.slots:
            slot.memory_in = None
        self.slots = []
        for memory in self.memories:
            memory.close()
            with contextlib.suppress(FileNotFoundError):
                memory.unlink()
        self.memories = []


def output_bytes_from_metadata(metadata: Mapping[str, Any], rows: int) -> dict[str, int]:
    """Each output's bytes for a request of `rows` rows, from the model metadata (the batch axis is -1)."""
    sizes = {}
    for output in metadata["outputs"]:
        dims = [rows if d == -1 and i == 0 else d for i, d in enumerate(output["shape"])]
        if any(d < 0 for d in dims) or output["datatype"] == "BYTES":
            raise RtpickError(f"output {output['name']!r} has no fixed size ({output['shape']}); shared-memory "
                              "outputs need one")
        sizes[output["name"]] = math.prod(dims) * numpy_dtype(output["datatype"]).itemsize
    return sizes


class ShmHttpTarget(_ShmTarget):
    """Infer over HTTP with inputs and outputs in shared memory (JSON body of parameters only)."""

    def __init__(self, url: str, model: str, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                 slots: int) -> None:
        import http.client

        self.host, self.port = loopback_endpoint(url, "http", 8000)
        self.model = model
        self._http = http.client
        status, body = self._call("GET", f"/v2/models/{model}", None)
        if status != 200:
            raise RtpickError(f"model metadata answered {status}: {body[:200]!r}")
        rows = int(next(iter(inputs.values())).shape[0])
        super().__init__(inputs, datatypes, output_bytes_from_metadata(json.loads(body), rows), slots)

    def _call(self, method: str, path: str, document: Any) -> tuple[int, bytes]:
        conn = self._http.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=None if document is None else json.dumps(document).encode())
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def register(self) -> None:
        for name, size in ((self.name_in, self.sizes[0]), (self.name_out, self.sizes[1])):
            status, body = self._call("POST", f"/v2/systemsharedmemory/region/{name}/register",
                                      {"key": f"/{name}", "offset": 0, "byte_size": size})
            if status != 200:
                raise RtpickError(f"registering shared memory {name!r} answered {status}: {body[:200]!r}")

    def unregister(self) -> None:
        for name in (self.name_in, self.name_out):
            self._call("POST", f"/v2/systemsharedmemory/region/{name}/unregister", {})

    def connection(self) -> Any:
        slot = self.take_slot()
        document = {"inputs": [{"name": name, "datatype": self.datatypes[name], "shape": list(array.shape),
                                "parameters": {"shared_memory_region": self.name_in,
                                               "shared_memory_offset": slot.offsets[name][0],
                                               "shared_memory_byte_size": slot.offsets[name][1]}}
                               for name, array in self.inputs.items()],
                    "outputs": [{"name": name, "parameters": {"shared_memory_region": self.name_out,
                                                              "shared_memory_offset": at,
                                                              "shared_memory_byte_size": size}}
                                for name, (at, size) in slot.out_offsets.items()]}
        raw = http_request_bytes(self.host, self.port, f"/v2/models/{self.model}/infer",
                                 json.dumps(document, separators=(",", ":")).encode(),
                                 {"Content-Type": "application/json"})
        return _ShmHttpConnection(self.host, self.port, slot, self.inputs, raw)


class _ShmHttpConnection(HttpConnection):
    def __init__(self, host: str, port: int, slot: _Slot, inputs: Mapping[str, np.ndarray], raw: bytes) -> None:
        super().__init__(host, port)
        self.slot, self.inputs, self.request = slot, inputs, raw

    async def send(self, raw: Any) -> tuple[int, bytes]:
        self.slot.write(self.inputs)
        return await super().send(self.request)


class ShmGrpcTarget(_ShmTarget):
    """Infer over gRPC with inputs and outputs in shared memory (no raw contents in either message)."""

    def __init__(self, address: str, model: str, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                 slots: int) -> None:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self.host, self.port = loopback_endpoint(address, "grpc", 8001)
        self.model = model
        self._pb = service_pb2
        self._channel = grpc.insecure_channel(f"{self.host}:{self.port}")
        self._sync = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        meta = self._sync.ModelMetadata(service_pb2.ModelMetadataRequest(name=model), timeout=30)
        described = {"outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
                                 for o in meta.outputs]}
        rows = int(next(iter(inputs.values())).shape[0])
        self._stub: Any = None
        super().__init__(inputs, datatypes, output_bytes_from_metadata(described, rows), slots)

    def register(self) -> None:
        for name, size in ((self.name_in, self.sizes[0]), (self.name_out, self.sizes[1])):
            self._sync.SystemSharedMemoryRegister(self._pb.SystemSharedMemoryRegisterRequest(
                name=name, key=f"/{name}", offset=0, byte_size=size), timeout=30)

    def unregister(self) -> None:
        for name in (self.name_in, self.name_out):
            self._sync.SystemSharedMemoryUnregister(self._pb.SystemSharedMemoryUnregisterRequest(name=name),
                                                    timeout=10)

    def close(self) -> None:
        super().close()
        self._channel.close()

    def connection(self) -> Any:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        slot = self.take_slot()
        request = self._pb.ModelInferRequest(model_name=self.model)
        for name, array in self.inputs.items():
            tensor = request.inputs.add(name=name, datatype=self.datatypes[name], shape=list(array.shape))
            at, size = slot.offsets[name]
            tensor.parameters["shared_memory_region"].string_param = self.name_in
            tensor.parameters["shared_memory_offset"].int64_param = at
            tensor.parameters["shared_memory_byte_size"].int64_param = size
        for name, (at, size) in slot.out_offsets.items():
            output = request.outputs.add(name=name)
            output.parameters["shared_memory_region"].string_param = self.name_out
            output.parameters["shared_memory_offset"].int64_param = at
            output.parameters["shared_memory_byte_size"].int64_param = size
        if self._stub is None:
            channel = grpc.aio.insecure_channel(f"{self.host}:{self.port}")
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return _ShmGrpcConnection(self._stub, request, slot, self.inputs)


class _ShmGrpcConnection:
    def __init__(self, stub: Any, request: Any, slot: _Slot, inputs: Mapping[str, np.ndarray]) -> None:
        self.inner = GrpcConnection(stub, request)
        self.slot, self.inputs = slot, inputs

    async def send(self, raw: Any) -> tuple[int, bytes]:
        self.slot.write(self.inputs)
        return await self.inner.send(raw)

    async def close(self) -> None:
        return None


def shm_target(url: str, model: str, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
               slots: int) -> Any:
    """The shared-memory target for an ``http://`` or ``grpc://`` URL with `slots` connection slots."""
    if url.startswith("grpc://"):
        return ShmGrpcTarget(url, model, inputs, datatypes, slots)
    return ShmHttpTarget(url, model, inputs, datatypes, slots)
