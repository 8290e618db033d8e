"""Run each configuration in a child process with a time limit, so one crash, hang or OOM stops only itself.

The child is ``python -P -m rtpick.perf.worker JOB OUT`` in its own process group; on timeout the whole group is
killed (compile workers included). Whatever happened — a clean failure written by the worker, a signal, a
timeout, a missing result — comes back as a record with `status` and a one-line `error` saying why.

The child is started isolated from the current directory: ``-P`` (and ``PYTHONSAFEPATH=1`` for any Python it
starts) keeps the cwd off ``sys.path``, ``PYTHONPATH`` keeps only absolute entries, and every path it gets is
absolute, so a ``numpy.py`` planted where the user runs ``rtpick bench`` is never imported. It dies with its
parent (`rtpick.perf.lifeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes
from rtpick.perf.job import Job
from rtpick.perf.lifeline import PARENT_ENV
from rtpick.perf.record import Record
from rtpick.perf.worker import is_oom


def worker_env() -> dict[str, str]:
    """The child's environment: rtpick's own source first, only absolute ``PYTHONPATH`` entries, safe path."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    given = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    # an empty or relative entry means the current directory (or one below it): never on a worker's path
    kept = [entry for entry in given if os.path.isabs(entry) and entry != src]
    env["PYTHONPATH"] = os.pathsep.join([src, *kept])
    env["PYTHONSAFEPATH"] = "1"
    env[PARENT_ENV] = str(os.getpid())
    return env


def worker_command(job_file: Path, out_file: Path, safe_path_flag: bool = sys.version_info >= (3, 11)
                   ) -> list[str]:
    """The worker's command line: an absolute interpreter, the cwd kept off sys.path, absolute file paths."""
    python = os.path.abspath(sys.executable)
    if safe_path_flag:
        return [python, "-P", "-m", "rtpick.perf.worker", str(job_file.resolve()), str(out_file.resolve())]
    # Python 3.10 has no -P: drop the cwd entry that -c puts first, then run the worker module
    # (the entry is '' when present; PYTHONSAFEPATH=1 on 3.11+ already leaves it out, so drop it by value)
    boot = ("import sys, runpy; sys.path[:] = [p for p in sys.path if p != '']; "
            "runpy.run_module('rtpick.perf.worker', run_name='__main__')")
    return [python, "-c", boot, str(job_file.resolve()), str(out_file.resolve())]


def _absolute_model(job: Job) -> Job:
    """The job with a relative model path made absolute (zoo names such as rtpick:digits stay as they are)."""
    if isinstance(job.model, str) and job.model and Path(job.model).exists():
        return dataclasses.replace(job, model=str(Path(job.model).resolve()))
    return job


def run_isolated(job: Job, timeout_s: float) -> Record:
    """`run_job(job)` in a child process; a record with the cause when the child fails to produce one."""
    def failed(status: str, error: str) -> Record:
        return Record.failed(job.runtime, job.precision, job.batch, job.scenario, status, error, job.options)

    with tempfile.TemporaryDirectory(prefix="rtpick-job-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        atomic_write_bytes(job_file, json.dumps(_absolute_model(job).to_dict()).encode())
        with open(Path(tmp) / "stderr.txt", "w+b") as err:
            proc = subprocess.Popen(
                worker_command(job_file, out_file),
                stdout=subprocess.DEVNULL, stderr=err, env=worker_env(), start_new_session=True,
            )
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return failed("timeout", f"no result after {timeout_s:g} s (a hang or a very slow build); killed")
            except BaseException:
                _kill_group(proc)
                raise
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if code == 0 and out_file.exists():
            try:
                return Record.from_dict(json.loads(out_file.read_text()), "the worker's record")
            except (ValueError, RtpickError) as exc:
                return failed("crashed", f"the worker wrote an unreadable record: {exc}")
        return failed(**_cause(code, stderr))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _cause(code: int, stderr: str) -> dict[str, str]:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        if -code == signal.SIGKILL:
            return {"status": "oom", "error": f"killed by {name} (most likely the kernel's out-of-memory killer)"}
        return {"status": "crashed", "error": f"the process died of {name}; last output: {last}"}
    if is_oom(stderr):
        return {"status": "oom", "error": f"out of memory: {last}"}
    return {"status": "crashed", "error": f"the process exited with status {code}; last output: {last}"}
