"""The system shared-memory extension of the Open Inference Protocol (as Triton has it), for clients on this host.

Why: a 32-image FP32 request is 19 MB; sent through a socket it is copied by the client's encoder, the kernel
twice, gRPC or HTTP framing and the protobuf parser before the server's scheduler copies it once more into its
batch. With a region in /dev/shm the client writes the tensor there once, the request names the region, and the
scheduler reads the rows straight from the mapping into its staging buffer; outputs are written straight from
the batch into the client's region.

Safety, since a region is memory a request names: only a client on this host (a loopback peer) may register;
a key is one file name under /dev/shm (no slash, no ``..``, no control characters), opened read/write with
O_NOFOLLOW (a planted symlink is refused) and must be a regular file of the server's own user at least
``offset + byte_size`` long; every tensor's byte range is checked to lie inside its region before
a view is taken, and the file's size is checked again on each use (a client that shrinks its file gets a 400,
not a SIGBUS). At most `max_regions` regions are registered at a time. Unregistering drops the mapping; a
request still reading it keeps it alive until that request is done (the mmap closes when its last view goes).
"""

from __future__ import annotations

import contextlib
import ipaddress
import mmap
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtpick.serve import tensors
from rtpick.serve.errors import ProtocolError

SHM_DIR = "/dev/shm"
MAX_REGIONS = 64
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_KEY = re.compile(r"^/?[A-Za-z0-9_.\-]{1,200}$")
PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def check_local_peer(host: str | None) -> None:
    """Only a client on this host can have put a region in its /dev/shm: anyone else is refused (403), so a
    server opened to the network with --host never lets a remote client read or write this host's memory."""
    text = (host or "").strip("[]")
    try:
        local = ipaddress.ip_address(text).is_loopback
    except ValueError:
        local = text in ("localhost", "") and host is not None
    if not local:
        raise ProtocolError(403, f"shared-memory registration is for clients on this host only, not {host!r}")


def grpc_peer_host(peer: str) -> str | None:
    """The address in a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``)."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return "localhost"
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


def _whole(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(400, f"{what} must be a non-negative whole number, not {value!r:.40}")
    return value


def key_path(key: str, directory: str = SHM_DIR) -> str:
    """The file a key names: one plain file name directly under /dev/shm (``/name`` or ``name``)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key.lstrip("/") in (".", ".."):
        raise ProtocolError(400, f"shared-memory key {str(key)[:60]!r} must be one name of letters, digits, "
                                 "'_', '.', '-' (optionally after one '/'), as shm_open takes it")
    return os.path.join(directory, key.lstrip("/"))


@dataclass
class Region:
    """One registered region: `byte_size` bytes from `offset` of the shared-memory object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    mapping: mmap.mmap
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def window(self, offset: int, size: int, what: str) -> memoryview:
        """`size` bytes from `offset` inside this region, checked against the region and the file's size now."""
        if offset + size > self.byte_size:
            raise ProtocolError(400, f"{what}: {size} bytes from offset {offset} run past the {self.byte_size}-byte "
                                     f"shared-memory region {self.name!r}")
        with self.lock:  # not closed under us: a view taken here keeps the mapping open until it goes
            if self.closed:
                raise ProtocolError(400, f"{what}: shared-memory region {self.name!r} was unregistered")
            try:
                now = os.fstat(self.fd).st_size
            except OSError:
                now = -1
            if now < self.offset + self.byte_size:
                raise ProtocolError(400, f"shared-memory region {self.name!r}: its object {self.key!r} has shrunk "
                                         f"to {now} bytes; register it again")
            start = self.offset + offset
            return memoryview(self.mapping)[start:start + size]

    def close(self) -> None:
        with self.lock:
            self.closed = True
            os.close(self.fd)
            with contextlib.suppress(BufferError):  # a request still reads it: unmapped when its last view goes
                self.mapping.close()


class SharedMemoryRegistry:
    """The server's registered system shared-memory regions, by name; thread-safe, bounded in count."""

    def __init__(self, max_regions: int = MAX_REGIONS, directory: str = SHM_DIR) -> None:
        self.max_regions = max_regions
        self.directory = directory
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._regions)

    def register(self, name: Any, key: Any, offset: Any, byte_size: Any) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ProtocolError(400, f"shared-memory region name {str(name)[:60]!r} must be 1-200 letters, digits, "
                                     "'_', '.', '-'")
        offset, byte_size = _whole(offset, "'offset'"), _whole(byte_size, "'byte_size'")
        if byte_size == 0:
            raise ProtocolError(400, f"shared-memory region {name!r}: 'byte_size' must be at least 1")
        path = key_path(key, self.directory)
        with self._lock:
            if name in self._regions:
                raise ProtocolError(400, f"shared-memory region {name!r} is registered already; unregister it "
                                         "first")
            if len(self._regions) >= self.max_regions:
                raise ProtocolError(400, f"{self.max_regions} shared-memory regions are registered already "
                                         "(the server's limit); unregister one first")
            self._regions[name] = self._open(name, key, path, offset, byte_size)

    def _open(self, name: str, key: str, path: str, offset: int, byte_size: int) -> Region:
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise ProtocolError(400, f"cannot open shared-memory key {key!r}: {exc.strerror or exc} (create it "
                                     "with shm_open, e.g. tritonclient.utils.shared_memory, before registering; "
                                     "symlinks are refused)") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ProtocolError(400, f"shared-memory key {key!r} is not a regular shared-memory object")
            if info.st_uid != os.geteuid():
                raise ProtocolError(400, f"shared-memory key {key!r} belongs to another user; a client registers "
                                         "objects of the server's own user only")
            if offset + byte_size > info.st_size:
                raise ProtocolError(400, f"shared-memory region {name!r}: offset {offset} + byte_size {byte_size} "
                                         f"runs past the {info.st_size}-byte object {key!r}")
            mapping = mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except ProtocolError:
            os.close(fd)
            raise
        except (OSError, ValueError) as exc:
            os.close(fd)
            raise ProtocolError(400, f"cannot map shared-memory key {key!r}: {exc}") from None
        return Region(name, key, offset, byte_size, fd, mapping)

    def unregister(self, name: str | None = None) -> None:
        """One region by name (unknown names are ignored, as Triton does), or all of them."""
        with self._lock:
            names = list(self._regions) if not name else [name] if name in self._regions else []
            gone = [self._regions.pop(n) for n in names]
        for region in gone:
            region.close()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise ProtocolError(400, f"no shared-memory region {name!r} is registered")
                return [self._regions[name].status()]
            return [r.status() for r in self._regions.values()]

    def get(self, name: Any, what: str) -> Region:
        with self._lock:
            region = self._regions.get(name) if isinstance(name, str) else None
        if region is None:
            raise ProtocolError(400, f"{what}: no shared-memory region {str(name)[:60]!r} is registered")
        return region


@dataclass(frozen=True)
class ShmTarget:
    """Where a tensor lives in shared memory: a region and a byte range inside it."""

    region: Region
    offset: int
    byte_size: int

    def parameters(self) -> dict[str, Any]:
        return {"shared_memory_region": self.region.name, "shared_memory_byte_size": self.byte_size,
                "shared_memory_offset": self.offset}


def target_of(params: dict[str, Any], registry: SharedMemoryRegistry | None, what: str) -> ShmTarget | None:
    """The region a tensor's ``shared_memory_*`` parameters name (None when it names none), checked."""
    name = params.get("shared_memory_region")
    if name is None:
        if "shared_memory_byte_size" in params or "shared_memory_offset" in params:
            raise ProtocolError(400, f"{what}: shared_memory_byte_size/offset given without shared_memory_region")
        return None
    if registry is None:
        raise ProtocolError(400, f"{what}: this server has the shared-memory extension turned off")
    region = registry.get(name, what)
    size = _whole(params.get("shared_memory_byte_size"), f"{what}: 'shared_memory_byte_size'")
    offset = _whole(params.get("shared_memory_offset", 0), f"{what}: 'shared_memory_offset'")
    region.window(offset, size, what)  # in range now; checked again on each read and write
    return ShmTarget(region, offset, size)


def read_tensor(target: ShmTarget, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """The input's array as a view of the region (no copy); BYTES are decoded (a copy)."""
    if datatype == "BYTES":
        return tensors.from_binary(bytes(target.region.window(target.offset, target.byte_size, f"input {name!r}")),
                                   datatype, shape, name)
    dtype = tensors.numpy_dtype(datatype)
    need = tensors.element_count(shape) * dtype.itemsize
    if need != target.byte_size:
        raise ProtocolError(400, f"input {name!r}: shared_memory_byte_size {target.byte_size}, but {datatype} "
                                 f"{shape} needs {need}")
    view = target.region.window(target.offset, need, f"input {name!r}")
    return np.frombuffer(view, dtype=dtype).reshape(shape)


def write_tensor(target: ShmTarget, array: np.ndarray, datatype: str, name: str) -> int:
    """Copy an output into its region (one copy, from the batch's rows); the bytes written."""
    if datatype == "BYTES":
        raw = tensors.to_binary(array, datatype)
        if len(raw) > target.byte_size:
            raise ProtocolError(400, f"output {name!r}: {len(raw)} bytes do not fit the {target.byte_size} bytes "
                                     f"of shared memory given for it")
        target.region.window(target.offset, len(raw), f"output {name!r}")[:] = raw
        return len(raw)
    dtype = tensors.numpy_dtype(datatype)
    need = array.size * dtype.itemsize
    if need > target.byte_size:
        raise ProtocolError(400, f"output {name!r}: {need} bytes ({datatype} {list(array.shape)}) do not fit the "
                                 f"{target.byte_size} bytes of shared memory given for it")
    view = target.region.window(target.offset, need, f"output {name!r}")
    np.copyto(np.frombuffer(view, dtype=dtype).reshape(array.shape), array, casting="same_kind")
    return need
