"""Inductor's CPU instruction-set verdict: recorded after a compile, reused by the next process only when every
advertised instruction set passed on this torch, compiler and CPU."""

from __future__ import annotations

import platform

import pytest

torch = pytest.importorskip("torch")
cpu_vec_isa = pytest.importorskip("torch._inductor.cpu_vec_isa")
inductor_config = pytest.importorskip("torch._inductor.config")

from rtpick.runtimes import inductor_isa  # noqa: E402

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not inductor_isa._compiler()
                                or not inductor_isa._cpu_flags(),
                                reason="the verdict is kept only on x86 with a C++ compiler and /proc/cpuinfo")


class _Isa:
    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty rtpick cache, no user setting, and Inductor's switch restored after the test."""
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_VEC_ISA_OK", raising=False)
    before = inductor_config.cpp.vec_isa_ok
    inductor_config.cpp.vec_isa_ok = None  # Inductor's config proxy is not monkeypatch-able: set and restore
    yield monkeypatch
    inductor_config.cpp.vec_isa_ok = before


def _inductor_found(monkeypatch, offered: list[str], passed: list[str]) -> None:
    isas = {name: _Isa(name) for name in offered}
    monkeypatch.setattr(cpu_vec_isa, "supported_vec_isa_list", list(isas.values()))
    monkeypatch.setattr(cpu_vec_isa, "x86_isa_checker", lambda: [flag for n in offered for flag in n.split()])
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [isas[n] for n in passed])


def test_a_verdict_where_every_isa_passed_is_reused_by_the_next_process(fresh):
    assert inductor_isa.reuse_verdict(torch) is False  # nothing recorded yet: Inductor checks
    assert inductor_config.cpp.vec_isa_ok is None
    _inductor_found(fresh, ["avx512", "avx2"], ["avx512", "avx2"])
    inductor_isa.record_verdict(torch)
    assert inductor_isa.reuse_verdict(torch) is True
    assert inductor_config.cpp.vec_isa_ok is True


def test_a_failed_isa_is_never_assumed(fresh):
    _inductor_found(fresh, ["amx_tile", "avx512"], ["avx512"])
    inductor_isa.record_verdict(torch)
    path = inductor_isa.record_path(torch)
    assert path is not None and path.is_file()  # recorded, as failed
    assert inductor_isa.reuse_verdict(torch) is False
    assert inductor_config.cpp.vec_isa_ok is None


def test_the_users_setting_wins(fresh):
    _inductor_found(fresh, ["avx2"], ["avx2"])
    inductor_isa.record_verdict(torch)
    fresh.setenv("TORCHINDUCTOR_VEC_ISA_OK", "0")
    assert inductor_isa.reuse_verdict(torch) is False
    assert inductor_config.cpp.vec_isa_ok is None


def test_another_torch_or_cpu_is_another_record(fresh):
    path = inductor_isa.record_path(torch)

    class OtherTorch:
        __version__ = "0.0.1"

    assert path is not None and inductor_isa.record_path(OtherTorch) != path
    fresh.setattr(inductor_isa, "_cpu_flags", lambda: "fpu sse2")
    assert inductor_isa.record_path(torch) != path


def test_an_unreadable_record_means_inductor_checks(fresh):
    path = inductor_isa.record_path(torch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert inductor_isa.reuse_verdict(torch) is False
    assert inductor_config.cpp.vec_isa_ok is None
