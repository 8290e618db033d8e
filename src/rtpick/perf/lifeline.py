"""A bench worker's tie to its parent: when `rtpick bench` dies, however it dies, its worker goes too.

Why: a worker runs in its own session (so a timeout can kill its whole process group), which also means nothing
kills it when the parent is killed: before this, ``kill -9`` of ``rtpick bench`` left the worker measuring on
(forever with a long ``--duration``) and its ``/tmp/rtpick-job-*`` folder behind.

Two mechanisms, either enough on its own:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` makes the kernel signal the worker the moment its parent exits;
  the worker's SIGTERM handler removes the job folder and kills its process group (itself, compile helpers).
- Everywhere: a daemon thread polls the parent's pid and does the same when the parent is gone (this also
  covers a parent that died before the prctl call, and a main thread busy inside a long C call).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

PARENT_ENV = "RTPICK_WORKER_PARENT"
JOB_PREFIX = "rtpick-job-"
_PR_SET_PDEATHSIG = 1
POLL_S = 0.2


def tie_to_parent(job_file: str | os.PathLike[str]) -> None:
    """Call first thing in a worker: die (and remove the job folder) when the parent process is gone."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    job_dir = Path(job_file).resolve().parent
    signal.signal(signal.SIGTERM, lambda *_: _abandon(job_dir))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if not _alive(parent):  # it died before the prctl took effect
        _abandon(job_dir)
    threading.Thread(target=_watch, args=(parent, job_dir), name="rtpick-lifeline", daemon=True).start()


def _alive(parent: int) -> bool:
    return os.getppid() == parent


def _watch(parent: int, job_dir: Path) -> None:
    while _alive(parent):
        time.sleep(POLL_S)
    _abandon(job_dir)


def _abandon(job_dir: Path) -> None:
    """The parent is gone: remove the job folder (only one of ours) and kill this worker's process group."""
    if job_dir.name.startswith(JOB_PREFIX):
        shutil.rmtree(job_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        if os.getpgrp() == os.getpid():  # a session of its own: the group is this worker and its helpers
            os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(143)
