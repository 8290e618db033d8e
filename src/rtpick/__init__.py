"""rtpick: run one model on every inference runtime a machine has, prove they agree, measure, pick one.

The public API is small and imports nothing heavy (torch, onnxruntime, tensorrt load when a runtime is built):

    session = rtpick.load("model.onnx", runtime="ort-cpu", precision="fp32")
    outputs = session.run({"x": array})
    report = rtpick.compare("model.onnx", ["ort-cpu:fp32", "ort-cpu:int8"])
"""

from __future__ import annotations

from rtpick.api import bench, compare, load, recommend, runtimes
from rtpick.errors import BuildError, MissingRuntime, RtpickError

__version__ = "0.1.0"
__all__ = [
    "BuildError", "MissingRuntime", "RtpickError", "StreamProcessor", "bench", "compare", "load", "recommend",
    "runtimes", "__version__",
]


def __getattr__(name: str) -> object:
    """`rtpick.StreamProcessor` on first use, so `import rtpick` stays light (no PyAV, no scheduler)."""
    if name == "StreamProcessor":
        from rtpick.streams.processor import StreamProcessor

        return StreamProcessor
    raise AttributeError(f"module 'rtpick' has no attribute {name!r}")
