"""`import rtpick` must not import torch or onnxruntime, nor initialise CUDA: heavy libraries load when a
runtime is built."""

import subprocess
import sys

from conftest import SRC

HEAVY = ("torch", "onnxruntime", "tensorrt", "matplotlib", "pynvml", "onnx")


def test_import_rtpick_is_light() -> None:
    code = (
        "import sys, rtpick, rtpick.api, rtpick.runtimes.registry, rtpick.runtimes.base, rtpick.model\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, check=True)
    assert result.stdout.strip() == "", f"import rtpick pulled in: {result.stdout.strip()}"


def test_runtime_modules_import_without_their_libraries() -> None:
    """Listing runtimes imports each runtime module; those modules must defer their heavy imports too."""
    code = (
        "import sys, importlib\n"
        "from rtpick.runtimes.registry import RUNTIMES\n"
        "for target in RUNTIMES.values(): importlib.import_module(target.split(':')[0])\n"
        "print(','.join(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, check=True)
    assert result.stdout.strip() == ""
