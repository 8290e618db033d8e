"""Bench workers: started isolated from the current directory, and never outliving `rtpick bench`.

Each test runs a real `rtpick bench` in a subprocess, as a user would, and looks at its real worker processes
through /proc (Linux only). Waits are bounded; nothing is left running when a test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SRC

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker processes from /proc")

# A numpy.py planted in the user's folder. Whoever imports it leaves a note saying who it was, then it hands the
# real numpy over, so that the run goes on and the test sees every process that imported it.
PLANTED = '''
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "imported-by-%d" % os.getpid()), "w") as _note:
    _note.write(" ".join(sys.argv))
del sys.modules["numpy"]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import numpy as _real
sys.modules["numpy"] = _real
'''


def _bench(*args: str, cwd: Path, pythonpath: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.Popen([sys.executable, "-m", "rtpick", "bench", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _workers_of(parent: int) -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and "rtpick.perf.worker" in argv:
            found.append((int(entry.name), argv))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reparented worker may wait for a reaper that never comes in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")


def _job_of(argv: list[str]) -> tuple[Path, dict]:
    job_file = Path(argv[argv.index("rtpick.perf.worker") + 1])
    return job_file.parent, json.loads(job_file.read_text())


def test_a_planted_numpy_in_the_cwd_is_not_imported_by_a_worker(small_onnx, tmp_path) -> None:
    (tmp_path / "numpy.py").write_text(PLANTED)
    # the parent as `python -m` with an empty and a relative PYTHONPATH entry: both mean the cwd
    bench = _bench(str(small_onnx), "--quick", "--duration", "0.2", "--json", str(tmp_path / "r.json"),
                   cwd=tmp_path, pythonpath=os.pathsep.join([str(SRC), "", "."]))
    out, err = bench.communicate(timeout=240)
    assert bench.returncode == 0, err
    record = json.loads((tmp_path / "r.json").read_text())["configurations"][0]
    assert record["status"] == "ok" and record["isolated"] is True
    notes = {p.name: p.read_text() for p in tmp_path.glob("imported-by-*")}
    assert notes, "the parent (python -m, cwd first on sys.path) should have imported it: the test is void"
    assert not [argv for argv in notes.values() if "job.json" in argv], notes


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_or_job_folder_outlives_a_killed_bench(small_onnx, tmp_path, how) -> None:
    out = tmp_path / "r.json"
    bench = _bench(str(small_onnx), "--batch", "1,2", "--duration", "1", "--json", str(out),
                   cwd=tmp_path, pythonpath=str(SRC))
    try:
        # let batch 1 finish, then kill bench while batch 2's worker is measuring
        def second_worker():  # type: ignore[no-untyped-def]
            for pid, argv in _workers_of(bench.pid):
                with_job = _job_of(argv) if Path(argv[argv.index("rtpick.perf.worker") + 1]).exists() else None
                if with_job and with_job[1]["batch"] == 2:
                    return pid, with_job[0]
            assert bench.poll() is None, bench.communicate()
            return None

        worker, job_dir = _wait_for(second_worker, 120, "the batch-2 worker")
        assert job_dir.name.startswith("rtpick-job-") and job_dir.is_dir()
        os.kill(bench.pid, how)
        _, err = bench.communicate(timeout=60)
        _wait_for(lambda: not _running(worker), 15, f"worker {worker} to die")
        _wait_for(lambda: not job_dir.exists(), 15, f"{job_dir} to be removed")
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    if how == signal.SIGTERM:
        assert bench.returncode == 128 + signal.SIGTERM, err
        assert "terminated" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        kept = json.loads(out.read_text())["configurations"]
        assert [(c["batch"], c["status"]) for c in kept] == [(1, "ok")]
    else:
        assert bench.returncode == -signal.SIGKILL


@pytest.mark.parametrize("safe_path_flag", [True, False], ids=["-P", "python-3.10-boot"])
def test_the_worker_command_keeps_the_cwd_off_sys_path(tmp_path, safe_path_flag) -> None:
    """Both forms of the worker's command line (-P on 3.11+, the boot line on 3.10) import nothing from the cwd."""
    from rtpick.perf.isolation import worker_command

    if safe_path_flag and sys.version_info < (3, 11):
        pytest.skip("-P needs Python 3.11")
    (tmp_path / "numpy.py").write_text(PLANTED)
    job, out = tmp_path / "missing-job.json", tmp_path / "out.json"
    parent_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), "", "."])}  # "" and "." mean the cwd
    command = worker_command(job, out, safe_path_flag=safe_path_flag)
    done = subprocess.run(command, cwd=tmp_path, env=worker_env_for(parent_env), capture_output=True, text=True,
                          timeout=120)
    assert "FileNotFoundError" in done.stderr  # it got as far as reading the (missing) job
    assert not list(tmp_path.glob("imported-by-*"))


def worker_env_for(env: dict[str, str]) -> dict[str, str]:
    """`worker_env` as bench would compute it from a parent environment `env`."""
    from unittest import mock

    from rtpick.perf.isolation import worker_env

    with mock.patch.dict(os.environ, env, clear=True):
        return worker_env()
