"""Inductor's CPU instruction-set checks: one that passed is answered from rtpick's record in a later process;
one that failed always runs again; the user's own switch and another torch's internals are left alone."""

from __future__ import annotations

import platform

import pytest

torch = pytest.importorskip("torch")
cpu_vec_isa = pytest.importorskip("torch._inductor.cpu_vec_isa")

from rtpick.runtimes import inductor_isa  # noqa: E402

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not inductor_isa._compiler()
                                or not inductor_isa._cpu_flags(),
                                reason="the record is kept only on x86 with a C++ compiler and /proc/cpuinfo")


class _Isa:
    def __init__(self, flags: str) -> None:
        self.flags = flags

    def build_arch_flags(self) -> str:
        return self.flags


class _Inductor:
    """Stands in for Inductor's own check (a compile and a subprocess): counts calls, answers `result`."""

    def __init__(self, result: bool) -> None:
        self.result = result
        self.calls = 0

    def install(self, monkeypatch) -> None:
        inductor = self

        def check_build(self, code):  # noqa: ARG001 - the signature Inductor's check has
            inductor.calls += 1
            return inductor.result

        monkeypatch.setattr(cpu_vec_isa.VecISA, "check_build", check_build)  # restored after the test


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_VEC_ISA_OK", raising=False)
    # the parallel first pass would ask Inductor's real ISA objects, which cache their verdict for the process:
    # tested on its own below, with stand-ins
    monkeypatch.setattr(inductor_isa, "_check_all_at_once", lambda module: None)
    return monkeypatch


def _new_process(monkeypatch, result: bool) -> _Inductor:
    """Inductor's check as a fresh process finds it, then rtpick's record put in front of it."""
    inductor = _Inductor(result)
    inductor.install(monkeypatch)
    assert inductor_isa.remember_checks(torch) is True
    return inductor


def test_a_passed_check_is_answered_from_the_record_in_the_next_process(fresh):
    first = _new_process(fresh, True)
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mavx512f"), "int main() {}") is True
    assert first.calls == 1
    later = _new_process(fresh, True)
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mavx512f"), "int main() {}") is True
    assert later.calls == 0  # no compile, no subprocess
    # another check (other code or other compiler flags) is its own question
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mamx-tile"), "int main() {}") is True
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mavx512f"), "int main() { return 0; }") is True
    assert later.calls == 2


def test_a_failed_check_always_runs_again(fresh):
    first = _new_process(fresh, False)
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mamx-tile"), "amx") is False
    later = _new_process(fresh, False)
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mamx-tile"), "amx") is False
    assert (first.calls, later.calls) == (1, 1)


def test_installed_once_per_process(fresh):
    inductor = _new_process(fresh, True)
    wrapped = cpu_vec_isa.VecISA.check_build
    assert inductor_isa.remember_checks(torch) is True
    assert cpu_vec_isa.VecISA.check_build is wrapped  # not wrapped twice
    assert inductor.calls == 0


def test_the_users_switch_and_other_torches_are_left_alone(fresh):
    inductor = _Inductor(True)
    inductor.install(fresh)
    mine = cpu_vec_isa.VecISA.check_build
    fresh.setenv("TORCHINDUCTOR_VEC_ISA_OK", "1")
    assert inductor_isa.remember_checks(torch) is False
    fresh.delenv("TORCHINDUCTOR_VEC_ISA_OK")

    def other_signature(self, code, extra):  # noqa: ARG001 - a torch whose check takes more
        return True

    fresh.setattr(cpu_vec_isa.VecISA, "check_build", other_signature)
    assert inductor_isa.remember_checks(torch) is False
    assert cpu_vec_isa.VecISA.check_build is other_signature
    assert mine is not other_signature


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
    inductor = _new_process(fresh, True)
    assert cpu_vec_isa.VecISA.check_build(_Isa("-mavx2"), "x") is True
    assert inductor.calls == 1


class _MeetingIsa:
    """An instruction set whose check waits at `barrier` for the others: it passes only if they run at once."""

    def __init__(self, name: str, asked: list[str], barrier) -> None:
        self.name, self.asked, self.barrier = name, asked, barrier

    def __str__(self) -> str:
        return self.name

    def __bool__(self) -> bool:
        self.barrier.wait()  # raises BrokenBarrierError after its timeout if the checks ran one after another
        self.asked.append(self.name)
        return True


def test_the_advertised_instruction_sets_are_checked_at_once_and_the_others_not_at_all():
    import threading
    from types import SimpleNamespace

    asked: list[str] = []
    barrier = threading.Barrier(3, timeout=30)
    module = SimpleNamespace(x86_isa_checker=lambda: ["avx2", "avx512", "avx512_vnni"],
                             supported_vec_isa_list=[_MeetingIsa(name, asked, barrier) for name in
                                                     ("amx_tile", "avx512 avx512_vnni", "avx512", "avx2")])
    inductor_isa._check_all_at_once(module)
    assert sorted(asked) == ["avx2", "avx512", "avx512 avx512_vnni"]  # together; not AMX: this CPU lacks it


def test_a_moved_inductor_internal_leaves_the_first_pass_out_quietly():
    from types import SimpleNamespace

    inductor_isa._check_all_at_once(SimpleNamespace())  # no x86_isa_checker: nothing raised
