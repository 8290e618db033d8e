"""Inductor's CPU instruction-set checks, paid once per machine instead of once per process.

Before its first CPU compile in a process, Inductor proves each vector instruction set the CPU advertises
(AVX2, AVX-512 and its bf16 and VNNI extensions, AMX...) by compiling a test program with it and loading that
in a fresh Python that imports torch: one subprocess per check (``VecISA.check_build``). Only the compiled test
program is cached, not the verdict, so every process pays again. On the H200 host (16 cores, AMX) that was 45 of
the 55 s of a *warm* torch.compile of ResNet-50 (cProfile: ``check_build`` -> ``subprocess`` wait).

rtpick remembers each check that passed, keyed by torch's version, the C++ compiler, the CPU's flags and the
check itself (its test program and compiler flags), and answers the same check from that record in a later
process. A check that failed is never remembered (it runs again, as Inductor would run it). Where Inductor's
internals are not what this expects (another torch), nothing is changed. ``TORCHINDUCTOR_VEC_ISA_OK``, when
the user sets it, is Inductor's own switch and stays in charge.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from rtpick.settings import cache_dir

_LOCK = threading.Lock()


def _cpu_flags() -> str:
    """The first ``flags`` line of /proc/cpuinfo ("" where there is none: then nothing is remembered)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return line.split(":", 1)[-1].strip()
    return ""


def _compiler() -> str:
    """The C++ compiler Inductor would use, by path and version ("" if none answers)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or ""
    if not cxx:
        return ""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{cxx} {out.splitlines()[0] if out else ''}"


def record_path(torch: Any) -> Path | None:
    """Where this machine's passed checks live, keyed by torch, compiler and CPU flags (None: not x86 Linux)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    flags, compiler = _cpu_flags(), _compiler()
    if not flags or not compiler:
        return None
    key = hashlib.sha256(repr((torch.__version__, compiler, flags)).encode()).hexdigest()[:32]
    return cache_dir() / "inductor-isa" / f"{key}.json"


def check_key(code: str, arch_flags: str) -> str:
    return hashlib.sha256(repr((code, arch_flags)).encode()).hexdigest()[:32]


def _passed(path: Path) -> set[str]:
    from rtpick.errors import RtpickError
    from rtpick.files import read_json

    if not path.is_file():
        return set()
    try:
        record = read_json(path, "Inductor ISA checks")
    except RtpickError:
        return set()
    passed = record.get("passed") if isinstance(record, dict) else None
    return {str(k) for k in passed} if isinstance(passed, list) else set()


def remember_checks(torch: Any) -> bool:
    """Answer Inductor's instruction-set checks that passed before on this machine from the record; True if the
    record is in use (installed once per process)."""
    if "TORCHINDUCTOR_VEC_ISA_OK" in os.environ:
        return False
    try:
        from torch._inductor import cpu_vec_isa

        original = cpu_vec_isa.VecISA.check_build
        if getattr(original, "rtpick_record", None) is not None:
            return True  # installed by an earlier build in this process: no second look at the compiler
        if list(inspect.signature(original).parameters) != ["self", "code"]:
            return False  # another torch's check: leave it alone
    except Exception:  # noqa: BLE001 - Inductor's internals moved: its own checks run as always
        return False
    path = record_path(torch)  # runs the compiler once (its version is part of the key)
    if path is None:
        return False

    def check_build(self: Any, code: str) -> bool:
        try:
            key = check_key(code, str(self.build_arch_flags()))
        except Exception:  # noqa: BLE001 - an ISA object without the expected method: ask Inductor
            return original(self, code)
        with _LOCK:
            if key in _passed(path):
                return True
        ok = original(self, code)
        if ok:
            from rtpick.files import write_json

            with _LOCK, contextlib.suppress(Exception):  # unwritable cache: the next process checks again
                write_json(path, {"passed": sorted(_passed(path) | {key}), "torch": torch.__version__},
                           "Inductor ISA checks")
        return bool(ok)

    check_build.rtpick_record = path  # type: ignore[attr-defined]
    check_build.__wrapped__ = original  # type: ignore[attr-defined]
    cpu_vec_isa.VecISA.check_build = check_build
    _check_all_at_once(cpu_vec_isa)
    return True


def _check_all_at_once(cpu_vec_isa: Any) -> None:
    """Ask each instruction set the CPU advertises for its verdict in parallel threads, where Inductor asks them
    one after another: each check waits on a compiler and a Python subprocess, so on a cold machine they overlap
    (2-core machine: 7.6 s -> 4.1 s). Inductor caches each verdict on the object, so its own pass then finds
    them; answered from the record, they cost nothing. Anything unexpected: Inductor checks as it always does."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        advertised = cpu_vec_isa.x86_isa_checker()
        isas = [isa for isa in cpu_vec_isa.supported_vec_isa_list
                if all(flag in advertised for flag in str(isa).split())]
        if len(isas) > 1:
            with ThreadPoolExecutor(len(isas)) as pool:
                list(pool.map(bool, isas))
    except Exception:  # noqa: BLE001 - Inductor's internals moved: its own sequential checks run as always
        return
