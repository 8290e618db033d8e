"""Which integer inputs of an ONNX graph index a constant table, and how many rows it has.

Why: synthetic integer feeds (rtpick's [0, 100)) must be valid values for the model. An input that an
embedding's ``Gather`` indexes is only valid below the table's size (BERT's ``token_type_ids`` index 2 rows),
and ONNX Runtime fails the whole run on one index past it. The graph says so without running anything.
"""

from __future__ import annotations

from typing import Any

PASS_THROUGH = ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten")  # values unchanged


def index_limits(graph: Any) -> dict[str, int]:
    """Graph input -> the rows of the smallest constant table it indexes, for inputs used as a Gather's indices
    (directly or through ops that keep the values: Cast, Reshape, ...), as embeddings are. Read from the graph,
    never run."""
    tables = {init.name: list(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tables[node.output[0]] = list(node.attribute[0].t.dims)
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    limits: dict[str, int] = {}
    for graph_input in graph.input:
        seen, frontier = set(), [graph_input.name]
        while frontier:
            tensor = frontier.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for node in users.get(tensor, []):
                if node.op_type in PASS_THROUGH and node.input[0] == tensor:
                    frontier.extend(node.output)
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
                    dims = tables.get(node.input[0])
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                        size = int(dims[axis])
                        limits[graph_input.name] = min(size, limits.get(graph_input.name, size))
    return limits
