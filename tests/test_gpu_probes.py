"""The GPU probes of `runtimes/_gpu.py`: listing runtimes on a machine without a GPU imports no heavy library,
and the facts they read without importing (torch's build, hidden GPUs) are read right."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import SRC

from rtpick.runtimes import _gpu


def test_listing_runtimes_without_a_gpu_imports_neither_torch_nor_tensorrt() -> None:
    if _gpu.nvidia_gpu_count() > 0:
        pytest.skip("this machine has an NVIDIA GPU: torch is imported to ask whether it can use it")
    code = (
        "import sys, rtpick\n"
        "rows = rtpick.runtimes()\n"
        "assert all(row['available'] or row['reason'] for row in rows)\n"
        "print(','.join(m for m in ('torch', 'tensorrt') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, check=True)
    assert result.stdout.strip() == "", f"listing runtimes imported: {result.stdout.strip()}"


def test_cuda_visible_devices_empty_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _gpu.nvidia_gpu_count.cache_clear()
    try:
        assert _gpu.nvidia_gpu_count() == 0
        state = _gpu.gpu_availability()
        assert not state.ok and state.reason == _gpu.NO_GPU
        assert not _gpu.torch_cuda_availability().ok
    finally:
        _gpu.nvidia_gpu_count.cache_clear()


def test_torch_build_is_read_from_its_version_file() -> None:
    for text, expected in (
        ("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n", ("2.13.0+cpu", None)),
        ("__version__ = '2.13.0+cu128'\ncuda: Optional[str] = '12.8'\n", ("2.13.0+cu128", "12.8")),
        ('__version__ = "2.1.0"\ncuda = "11.8"\n', ("2.1.0", "11.8")),
        ("nothing useful\n", None),
    ):
        assert _gpu.parse_torch_version_file(text) == expected, text


def test_the_installed_torch_build_matches_what_torch_says() -> None:
    torch = pytest.importorskip("torch")
    assert _gpu.torch_build() == (torch.__version__, torch.version.cuda)
