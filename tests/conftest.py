"""Shared test fixtures: small real models built on the spot, and a private cache directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep exports, quantised models and compile caches out of the user's ~/.cache."""
    os.environ.setdefault("RTPICK_CACHE_DIR", str(tmp_path_factory.mktemp("rtpick-cache")))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m rtpick ARGS` in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rtpick", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-layer MLP in ONNX, dynamic batch: x float32[batch, 8] -> y float32[batch, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    onnx.save(model, str(path))
    return path


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


needs_torch = pytest.mark.skipif(not torch_available(), reason="torch is not installed (pip install 'rtpick[torch]')")


def small_cnn():  # type: ignore[no-untyped-def]
    """A real (random-weight) CNN with BatchNorm, for torch-source tests."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )


def residual_cnn():  # type: ignore[no-untyped-def]
    """A small ResNet-style net (conv+BN+ReLU stem, bottleneck-like blocks with `out += identity`, one with a
    strided downsample branch) whose batch norms hold non-trivial statistics, so that folding them is tested."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels: int, downsample: bool) -> None:
            super().__init__()
            out = channels * 2 if downsample else channels
            self.conv1, self.bn1 = nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, out, 3, stride=2 if downsample else 1, padding=1, bias=False)
            self.bn2, self.relu = nn.BatchNorm2d(out), nn.ReLU(inplace=True)
            self.down = (nn.Sequential(nn.Conv2d(channels, out, 1, stride=2, bias=False), nn.BatchNorm2d(out))
                         if downsample else None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.blocks = nn.Sequential(Block(8, False), Block(8, True))
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn(self.stem(x)))
            return self.fc(self.blocks(x).mean((2, 3)))

    torch.manual_seed(0)
    net = Net()
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return net.eval()


def rate_model(path) -> str:
    """y = x when the scalar `sr` is 16000, else a Reshape that cannot be done: as Silero VAD, which runs only at
    the sample rates it knows (its If branches)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rate = numpy_helper.from_array(np.array(16000, np.int64), "rate")
    bad = numpy_helper.from_array(np.array([3], np.int64), "bad")
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["a"])], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])])
    other = helper.make_graph([helper.make_node("Reshape", ["x", "bad"], ["b"])], "other", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["known"]),
             helper.make_node("If", ["known"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "rated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                               helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [rate, bad])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
