"""rtpick.files: atomic writes keep the umask and the old mode, the writability probe never follows a planted link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes, check_writable, file_sha256, files_sha256


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_new_files_follow_the_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_replacing_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write_bytes(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_replacing_a_planted_link_does_not_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    atomic_write_bytes(link, b"new")
    assert victim.read_bytes() == b"precious" and not link.is_symlink()


def test_probe_does_not_truncate_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    for name in (".out.json.rtpick-probe", ".rtpick-probe"):
        (tmp_path / name).symlink_to(victim)
    check_writable(tmp_path / "out.json")
    assert victim.read_bytes() == b"precious"


def test_probe_refuses_folders_paths_under_files_and_long_names(tmp_path: Path) -> None:
    with pytest.raises(RtpickError, match="directory"):
        check_writable(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RtpickError, match="cannot write"):
        check_writable(blocker / "out.json")
    with pytest.raises(RtpickError, match="too long"):
        check_writable(tmp_path / ("x" * 300))


def test_hash_of_one_file_is_its_sha256_and_several_files_differ(tmp_path: Path) -> None:
    import hashlib

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"model")
    b.write_bytes(b"weights")
    assert file_sha256(a) == hashlib.sha256(b"model").hexdigest()
    assert files_sha256([a, b]) != file_sha256(a)
    b.write_bytes(b"weights2")
    assert files_sha256([a, b]) != files_sha256([a, tmp_path / "a"])
