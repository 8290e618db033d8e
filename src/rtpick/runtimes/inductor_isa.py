"""Inductor's CPU instruction-set check, paid once per machine instead of once per process.

Before its first CPU compile in a process, Inductor proves each vector instruction set the CPU advertises
(AVX2, AVX-512, AMX...) by compiling a test program with it and loading that in a fresh Python that imports
torch: one subprocess per instruction set. On the H200 host (16 cores, AMX) that took 45 of the 55 s of a
*warm* torch.compile of ResNet-50 (cProfile: ``cpu_vec_isa.check_build`` -> ``subprocess.check_call``), in
every process, because only the compiled test program is cached, not the verdict.

rtpick records the verdict after a successful compile: when every instruction set the CPU advertises passed,
with this torch, this C++ compiler and these CPU flags, a later process tells Inductor so
(``torch._inductor.config.cpp.vec_isa_ok = True``) instead of proving it again. When any of them failed, or
anything here is not as expected (another torch's internals), nothing is recorded and Inductor checks as it
always does. ``TORCHINDUCTOR_VEC_ISA_OK``, when the user sets it, always wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rtpick.settings import cache_dir


def _cpu_flags() -> str:
    """The first ``flags`` line of /proc/cpuinfo ("" where there is none: then nothing is cached)."""
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
    """Where this machine's verdict lives, keyed by torch, compiler and CPU flags (None: not an x86 Linux)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    flags, compiler = _cpu_flags(), _compiler()
    if not flags or not compiler:
        return None
    key = hashlib.sha256(repr((torch.__version__, compiler, flags)).encode()).hexdigest()[:32]
    return cache_dir() / "inductor-isa" / f"{key}.json"


def reuse_verdict(torch: Any) -> bool:
    """Tell Inductor the instruction sets are proven when this machine's record says so; True if it did."""
    if "TORCHINDUCTOR_VEC_ISA_OK" in os.environ:
        return False
    path = record_path(torch)
    if path is None or not path.is_file():
        return False
    from rtpick.errors import RtpickError
    from rtpick.files import read_json

    try:
        record = read_json(path, "Inductor ISA verdict")
    except RtpickError:
        return False
    if not isinstance(record, dict) or record.get("all_passed") is not True:
        return False
    import torch._inductor.config as inductor_config

    inductor_config.cpp.vec_isa_ok = True
    return True


def record_verdict(torch: Any) -> None:
    """After a CPU compile (the check has run): record whether every advertised instruction set passed."""
    if "TORCHINDUCTOR_VEC_ISA_OK" in os.environ:
        return
    try:
        from torch._inductor import cpu_vec_isa

        advertised = cpu_vec_isa.x86_isa_checker()
        offered = [str(isa) for isa in cpu_vec_isa.supported_vec_isa_list
                   if all(flag in advertised for flag in str(isa).split())]
        passed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]
    except Exception:  # noqa: BLE001 - another torch's internals: keep Inductor's own check
        return
    path = record_path(torch)
    if path is None or not offered:
        return
    from rtpick.files import write_json

    with contextlib.suppress(Exception):  # a cache that cannot be written only costs the next process the check
        write_json(path, {"all_passed": passed == offered, "offered": offered, "passed": passed,
                          "torch": torch.__version__}, "Inductor ISA verdict")
