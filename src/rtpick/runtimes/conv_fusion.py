"""Fold batch norm into convolutions, then run conv+bias+ReLU and conv+bias+residual+ReLU as single cuDNN calls.

Why: eager PyTorch, and Inductor too (it calls cuDNN for a convolution and runs its own kernel for what follows),
write every convolution's output to memory and read it back to add the bias and the residual and apply the ReLU.
TensorRT does that work in the convolution's epilogue instead. cuDNN offers the same fusion, and ATen wraps it
as ``cudnn_convolution_relu`` and ``cudnn_convolution_add_relu``; this pass rewrites a module traced by
``torch.fx`` to call them. On the CPU the rewritten module computes the same thing unfused, which is what lets
the rewrite itself be tested anywhere.

Only what is certainly equivalent is rewritten: a 2-D convolution (zero padding, numeric padding) whose only
user is a ReLU, or an addition whose only user is a ReLU, with a residual of exactly the convolution's output
shape (checked on example inputs, not assumed).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from rtpick.errors import BuildError


@dataclass(frozen=True)
class FusionReport:
    """What the pass changed, for the session's notes."""

    batch_norms_folded: int
    conv_relu: int
    conv_add_relu: int

    def describe(self) -> str:
        return (f"fuse_conv: {self.batch_norms_folded} batch norms folded into convolutions; "
                f"{self.conv_relu} conv+bias+ReLU and {self.conv_add_relu} conv+bias+residual+ReLU run as "
                "single cuDNN calls")


def conv_relu(x: Any, weight: Any, bias: Any, stride: list[int], padding: list[int], dilation: list[int],
              groups: int) -> Any:
    """relu(conv2d(x) + bias): one cuDNN call on CUDA, the unfused reference elsewhere."""
    import torch

    if x.is_cuda:
        return torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)
    return torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups).relu()


def conv_add_relu(x: Any, weight: Any, bias: Any, residual: Any, stride: list[int], padding: list[int],
                  dilation: list[int], groups: int) -> Any:
    """relu(conv2d(x) + bias + residual): one cuDNN call on CUDA, the unfused reference elsewhere."""
    import torch

    if x.is_cuda:
        return torch.cudnn_convolution_add_relu(x, weight, residual, 1.0, bias, stride, padding, dilation, groups)
    return (torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups) + residual).relu()


def fuse_conv(module: Any, example_inputs: list[Any]) -> tuple[Any, FusionReport]:
    """A copy of `module` with batch norms folded and conv+bias(+residual)+ReLU chains fused; the original is kept.

    `example_inputs` (on the module's device, in its dtype) let the pass check the residual shapes it relies on.
    """
    import torch
    from torch.fx.experimental.optimization import fuse as fold_batch_norms
    from torch.fx.passes.shape_prop import ShapeProp

    if module.training:
        raise BuildError("fuse_conv folds batch norm statistics, which needs a module in eval mode")
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; each means "not this pass"
        first = str(exc).strip().splitlines()
        raise BuildError(f"fuse_conv needs a module torch.fx can trace, and this one is not: "
                         f"{type(exc).__name__}: {first[0] if first else ''}") from exc
    before = _count_batch_norms(traced)
    graph_module = fold_batch_norms(traced, no_trace=True)  # deep-copies: the caller's module keeps its batch norms
    folded = before - _count_batch_norms(graph_module)
    with torch.inference_mode():
        ShapeProp(graph_module).propagate(*example_inputs)
    modules = dict(graph_module.named_modules())
    graph = graph_module.graph
    fused_relu = fused_add = 0
    for node in list(graph.nodes):
        if not _is_relu(node, modules):
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
            continue
        conv = _fusable_conv(source, modules)
        if conv is not None:
            with graph.inserting_before(node):
                fused = graph.call_function(conv_relu, (source.args[0], *_conv_args(graph, source, conv)))
            _replace(node, fused, source)
            fused_relu += 1
            continue
        residual = _residual_add(source, modules)
        if residual is not None:
            conv_node, other = residual
            with graph.inserting_before(node):
                weight, bias, *rest = _conv_args(graph, conv_node, modules[conv_node.target])
                fused = graph.call_function(conv_add_relu, (conv_node.args[0], weight, bias, other, *rest))
            _replace(node, fused, source)
            graph.erase_node(conv_node)
            fused_add += 1
    graph.eliminate_dead_code()
    graph.lint()
    graph_module.recompile()
    return graph_module, FusionReport(folded, fused_relu, fused_add)


def _count_batch_norms(graph_module: Any) -> int:
    import torch

    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    return sum(isinstance(m, kinds) for m in graph_module.modules())


def _is_relu(node: Any, modules: dict[str, Any]) -> bool:
    import torch

    # In-place ReLUs count too: the pass only fuses a ReLU that is the sole user of what it reads, so nothing
    # else could have seen the value before it changed.
    if node.op == "call_function":
        return node.target in (torch.relu, torch.relu_, torch.nn.functional.relu)
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    return node.op == "call_module" and type(modules.get(node.target)) is torch.nn.ReLU


def _fusable_conv(node: Any, modules: dict[str, Any]) -> Any:
    """The Conv2d module behind `node` if cuDNN's fused call computes exactly what it does, else None."""
    import torch

    if node.op != "call_module":
        return None
    conv = modules.get(node.target)
    if type(conv) is not torch.nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return conv


def _residual_add(node: Any, modules: dict[str, Any]) -> tuple[Any, Any] | None:
    """(conv node, residual node) when `node` adds a fusable convolution's output to a same-shaped tensor."""
    import torch

    is_add = (node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)
              and not node.kwargs) or (node.op == "call_method" and node.target in ("add", "add_") and not node.kwargs)
    if not is_add or len(node.args) != 2:
        return None
    for mine, other in (node.args, node.args[::-1]):
        if not isinstance(mine, torch.fx.Node) or not isinstance(other, torch.fx.Node):
            continue
        if len(mine.users) != 1 or _fusable_conv(mine, modules) is None:
            continue
        ours, theirs = mine.meta.get("tensor_meta"), other.meta.get("tensor_meta")
        if ours is None or theirs is None or ours.shape != theirs.shape or ours.dtype != theirs.dtype:
            continue
        return mine, other
    return None


def _conv_args(graph: Any, node: Any, conv: Any) -> list[Any]:
    """weight, bias, stride, padding, dilation, groups of a Conv2d module, as arguments of a fused call."""
    weight = graph.get_attr(f"{node.target}.weight")
    bias = graph.get_attr(f"{node.target}.bias") if conv.bias is not None else None
    return [weight, bias, list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups]


def _replace(relu: Any, fused: Any, source: Any) -> None:
    fused.meta.update(relu.meta)  # the shapes that later residual checks read
    relu.replace_all_uses_with(fused)
    graph = relu.graph
    graph.erase_node(relu)
    if not source.users:
        graph.erase_node(source)
