"""The conv fusion pass on the CPU, where the fused calls compute the unfused reference: what it rewrites, that
the rewritten module computes the same outputs, that it leaves the caller's module alone, and what it refuses.
The cuDNN side runs in tests/test_gpu_runtimes.py on a GPU."""

from __future__ import annotations

import pytest
from conftest import needs_torch, residual_cnn, small_cnn

from rtpick.errors import BuildError

pytestmark = needs_torch


def data_dependent_net():  # type: ignore[no-untyped-def]
    """A conv net whose forward branches on its input's values, which torch.fx cannot trace."""
    import torch
    from torch import nn

    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    return DataDependent().eval()


def _fused_calls(graph_module):  # type: ignore[no-untyped-def]
    from rtpick.runtimes.conv_fusion import conv_add_relu, conv_relu

    targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
    return targets.count(conv_relu), targets.count(conv_add_relu)


def test_residual_net_is_folded_and_fused_and_computes_the_same() -> None:
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    net = residual_cnn()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = net(x)
    fused, report = fuse_conv(net, [x])
    # conv+ReLU: the stem and each block's conv1; conv+residual+ReLU: each block's conv2
    assert (report.batch_norms_folded, report.conv_relu, report.conv_add_relu) == (6, 3, 2)
    assert _fused_calls(fused) == (3, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    fresh = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(6))  # not the example shape
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused(fresh), net(fresh), rtol=1e-5, atol=1e-5)
    assert "6 batch norms folded" in report.describe() and "2 conv+bias+residual+ReLU" in report.describe()


def test_callers_module_keeps_its_batch_norms() -> None:
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    net = residual_cnn()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    fuse_conv(net, [torch.rand(1, 3, 16, 16)])
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 6
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_sequential_conv_relu_chains_are_fused() -> None:
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    net = small_cnn().eval()
    x = torch.rand(2, 3, 32, 32)
    fused, report = fuse_conv(net, [x])
    assert (report.batch_norms_folded, report.conv_relu, report.conv_add_relu) == (1, 2, 0)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-5, atol=1e-5)


def test_what_is_not_certainly_equivalent_is_left_alone() -> None:
    """A conv output that is also used elsewhere, a broadcast add, and a padding mode cuDNN's call lacks."""
    import torch
    from torch import nn

    from rtpick.runtimes.conv_fusion import fuse_conv

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Conv2d(3, 4, 3, padding=1)
            self.broadcast = nn.Conv2d(4, 4, 1)
            self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
            self.offset = nn.Parameter(torch.rand(1, 4, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.shared(x)
            b = torch.relu(a) + a  # the conv output has two users
            c = torch.relu(self.broadcast(b) + self.offset.expand(1, 4, 1, 1))  # residual of another shape
            return torch.relu(self.reflect(c))

    net = Net().eval()
    x = torch.rand(2, 3, 8, 8)
    fused, report = fuse_conv(net, [x])
    assert (report.conv_relu, report.conv_add_relu) == (0, 0)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), net(x))


def test_training_mode_and_untraceable_modules_are_refused_with_the_reason() -> None:
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    with pytest.raises(BuildError, match="eval mode"):
        fuse_conv(small_cnn().train(), [torch.rand(1, 3, 32, 32)])

    with pytest.raises(BuildError, match="torch.fx can trace"):
        fuse_conv(data_dependent_net(), [torch.rand(1, 3, 4, 4)])


def test_runtime_helper_folds_in_fp32_and_reports_for_the_session_notes() -> None:
    """The torch runtimes' `fuse_conv` option path, on the CPU device: fp32 example inputs of the session's
    shapes (or batch 1 when none were given), the note that goes into the session's build notes."""
    import torch

    from rtpick.runtimes.torch import _fuse_conv
    from rtpick.sources import load_model

    model = load_model(residual_cnn(), input_specs={"x": ("batch", 3, 16, 16)})
    for shapes in ({"x": (3, 3, 16, 16)}, {}):
        module, note = _fuse_conv(model.torch_module().eval(), model, shapes, torch.device("cpu"))
        assert note.startswith("fuse_conv: 6 batch norms folded")
        x = torch.rand(3, 3, 16, 16)
        with torch.inference_mode():
            torch.testing.assert_close(module(x), model.torch_module().eval()(x), rtol=1e-5, atol=1e-5)


def test_option_is_declared_on_torch_cuda_only() -> None:
    from rtpick.runtimes.registry import get_runtime

    assert get_runtime("torch-cuda").options["fuse_conv"].default is False
    for name in ("torch-cpu", "torch-compile-cpu", "torch-compile-cuda"):
        assert "fuse_conv" not in get_runtime(name).options


def test_a_failed_fusion_names_the_configuration() -> None:
    """What `rtpick compare`/`bench` print for the failed configuration (the others still run)."""
    from rtpick.runtimes.torch import TorchCpu
    from rtpick.sources import load_model

    model = load_model(data_dependent_net(), input_specs={"x": (1, 3, 4, 4)})
    with pytest.raises(BuildError, match=r"^torch-cpu:fp32: fuse_conv needs a module torch.fx can trace"):
        TorchCpu()._build(model, "fp32", {"x": (1, 3, 4, 4)}, {"fuse_conv": True, "channels_last": False})


def test_functional_and_in_place_relus_are_fused_too() -> None:
    import torch
    from torch import nn

    from rtpick.runtimes.conv_fusion import fuse_conv

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.relu(self.a(x), inplace=True)
            x = self.b(x).relu_()
            return nn.functional.relu(self.c(x) + x, True)

    net = Net().eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        expected = net(x)
    fused, report = fuse_conv(net, [x])
    assert (report.conv_relu, report.conv_add_relu) == (2, 1)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
