"""Settings read once from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where rtpick keeps exported ONNX files, compiler caches and engines.

    ``RTPICK_CACHE_DIR`` overrides it; otherwise ``$XDG_CACHE_HOME/rtpick`` or ``~/.cache/rtpick``.
    """
    explicit = os.environ.get("RTPICK_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "rtpick"
    from rtpick.errors import RtpickError
    from rtpick.files import check_writable

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RtpickError(f"cannot use the cache folder {str(path)!r}: {exc.strerror or exc}; "
                          "set RTPICK_CACHE_DIR to a folder you can write") from exc
    try:
        check_writable(path / "probe", "cache")
    except RtpickError as exc:
        raise RtpickError(f"{exc}; set RTPICK_CACHE_DIR to a folder you can write") from None
    return path
