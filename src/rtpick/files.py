"""Every file rtpick writes or hashes goes through here: atomic, no-follow writes, modes that respect the umask.

Why one module: writes are where a tool loses a user's data (a half-written results file, a planted symlink
whose target gets truncated, a file left 0600 when the user's umask says 0644). Each rule lives once:

- a reader sees the old file or the new one, never half of either (temporary file in the same folder, fsync,
  ``os.replace``);
- the temporary file is created exclusively (``O_EXCL``; ``mkstemp`` never follows a link), so a link planted
  at a predictable name is never written through;
- the new file gets the mode the old one had, or ``0666 & ~umask`` for a new file, as ``open()`` would give it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError


def current_umask() -> int:
    """The process umask (there is no way to read it without setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode `path` should get: the existing regular file's, or what ``open()`` would create."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return 0o666 & ~current_umask()
    if stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically; raises OSError (callers say it in one line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], payload: Any, what: str,
               default: Callable[[Any], Any] | None = None) -> None:
    """Atomically replace `path` with `payload` as JSON (no NaN): a reader sees the old file or the new one."""
    text = json.dumps(payload, indent=1, allow_nan=False, default=default)
    try:
        atomic_write_bytes(Path(path), (text + "\n").encode())
    except OSError as exc:
        raise RtpickError(f"cannot write the {what} {str(path)!r}: {exc.strerror or exc}") from exc


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON document at `path`; a missing or unreadable file is the user's mistake, said in one line."""
    path = Path(path)
    if not path.is_file():
        raise RtpickError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RtpickError(f"{path} is not readable JSON ({exc})") from exc


def check_writable(path: str | os.PathLike[str], what: str = "results") -> Path:
    """Fail before measuring, not after, when `path` cannot be written; writes nothing a link could redirect.

    The probe is an exclusive temporary file (never an existing name), removed at once.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        if target.is_dir():
            raise RtpickError(f"{str(target)!r} is a directory; give a file name for the {what}")
        for folder in (parent, *parent.parents):
            if folder.exists() and not folder.is_dir():
                raise RtpickError(f"cannot write the {what} to {str(target)!r}: {str(folder)!r} is a file, "
                                  "not a folder")
        parent.mkdir(parents=True, exist_ok=True)
        if len(os.fsencode(target.name)) > 255:
            raise OSError(36, "File name too long")
        fd, probe = tempfile.mkstemp(prefix=".rtpick-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RtpickError(f"cannot write the {what} to {str(target)!r}: {exc.strerror or exc}") from exc
    return target


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of one file's bytes."""
    return files_sha256([Path(path)])


def files_sha256(paths: Iterable[str | os.PathLike[str]]) -> str:
    """SHA-256 over several files in the given order (a model and its external weights), one digest."""
    digest = hashlib.sha256()
    for index, path in enumerate(paths):
        if index:
            digest.update(b"\0" + os.fsencode(Path(path).name) + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
