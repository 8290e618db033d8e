"""JSON files rtpick writes and reads (results, deploy files): atomic writes, one-line errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.model import atomic_write_bytes


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
