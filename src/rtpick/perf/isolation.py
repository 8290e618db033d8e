"""Run each configuration in a child process with a time limit, so one crash, hang or OOM stops only itself.

The child is ``python -m rtpick.perf.worker JOB OUT`` in its own process group; on timeout the whole group is
killed (compile workers included). Whatever happened — a clean failure written by the worker, a signal, a
timeout, a missing result — comes back as a record with `status` and a one-line `error` saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from rtpick.errors import RtpickError
from rtpick.perf.job import Job
from rtpick.perf.record import Record
from rtpick.perf.worker import is_oom


def run_isolated(job: Job, timeout_s: float) -> Record:
    """`run_job(job)` in a child process; a record with the cause when the child fails to produce one."""
    def failed(status: str, error: str) -> Record:
        return Record.failed(job.runtime, job.precision, job.batch, job.scenario, status, error, job.options)

    with tempfile.TemporaryDirectory(prefix="rtpick-job-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job.to_dict()))
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(Path(tmp) / "stderr.txt", "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rtpick.perf.worker", str(job_file), str(out_file)],
                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True,
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
