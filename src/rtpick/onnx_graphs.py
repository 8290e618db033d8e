"""An ONNX graph with the graphs inside its nodes (If branches, Loop and Scan bodies), walked in one place.

Why one walker: a reader that looks at the main graph only misses what control flow holds. Silero VAD keeps all
its weights and every convolution inside If branches, which the parameter count, the operator count, the int8
refusal, the model's hash and the fusion rewrite must all see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def bodies(node: Any) -> list[Any]:
    """The graphs a node holds: an If's branches, a Loop's or Scan's body."""
    return [graph for attribute in node.attribute
            for graph in ([attribute.g] if attribute.HasField("g") else list(attribute.graphs))]


def graphs(graph: Any) -> Iterator[Any]:
    """`graph`, then every graph inside its nodes, depth first."""
    yield graph
    for node in graph.node:
        for body in bodies(node):
            yield from graphs(body)


def nodes(graph: Any) -> Iterator[Any]:
    """Every node of `graph` and of the graphs inside it."""
    for each in graphs(graph):
        yield from each.node
