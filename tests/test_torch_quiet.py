"""On a machine without a GPU, a CUDA build of torch's missing-driver warnings are not shown to a CPU user."""

from __future__ import annotations

import warnings

import pytest
from conftest import needs_torch

pytestmark = needs_torch


def test_missing_cuda_warnings_are_silenced_without_a_gpu() -> None:
    from rtpick.runtimes import torch as torch_runtimes
    from rtpick.runtimes._gpu import nvidia_gpu_count

    if nvidia_gpu_count() > 0:
        pytest.skip("this machine has a GPU: the warnings stay")
    torch_runtimes._torch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("CUDA initialization: Found no NVIDIA driver on your system. Please check ...", UserWarning,
                      stacklevel=1)
        warnings.warn("an unrelated warning stays", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["an unrelated warning stays"]
