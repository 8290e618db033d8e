"""The layout rules the code must keep, checked from its source (no imports run):

- no import circle between the modules of src/rtpick (module-level and function-level imports both count; an
  import under ``if TYPE_CHECKING:`` does not, since it never runs);
- no runtime name ("ort-cpu", "torch-cuda", ...) compared (``==``, ``!=``, ``in``, ``match``/``case``) outside
  src/rtpick/runtimes/: code elsewhere asks the runtime contract (device, precisions, options, flags) instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import SRC

PACKAGE = SRC / "rtpick"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The rtpick modules `name` imports, wherever in the file the import statement is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import mod` imports the module pkg.mod when there is one, else a name of pkg
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        for target in targets:
            # `import a.b.c` also runs a and a.b; only the deepest module is an edge that matters for circles
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("rtpick"):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    # A package's __init__ runs before any of its modules: `rtpick` -> `rtpick.api` is real, but every module
    # "importing" its parent package is not a circle we can remove, so edges to a parent package are dropped.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module, with one circle through it (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_circle(graph, set(c)) for c in components]


def _one_circle(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest circle through the first member of a component, for an error message a person can follow."""
    start = min(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return sorted(members)  # pragma: no cover - a component always has a circle through each member


def test_no_import_circles() -> None:
    circles = find_cycles(import_graph())
    assert not circles, "import circles in src/rtpick:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count(tmp_path: Path) -> None:
    source = "def f():\n    from rtpick import b\n\nif TYPE_CHECKING:\n    from rtpick import c\n"
    path = tmp_path / "a.py"
    path.write_text(source)
    modules = {"rtpick.a": path, "rtpick.b": path, "rtpick.c": path}
    assert imports_of("rtpick.a", path, modules) == {"rtpick.b"}


# ---------------------------------------------------------------------------------------------- runtime names


def runtime_names() -> set[str]:
    from rtpick.runtimes.registry import RUNTIMES

    return set(RUNTIMES)


def _strings_in(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def runtime_name_comparisons(path: Path, names: set[str]) -> list[str]:
    """`file:line: text` for each comparison or match case that spells a runtime name."""
    tree = ast.parse(path.read_text(), str(path))
    shown = path.relative_to(SRC) if SRC in path.parents else path.name
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        spelled: set[str] = set()
        if isinstance(node, ast.Compare):
            spelled = _strings_in(node) & names
        elif isinstance(node, ast.match_case):
            spelled = _strings_in(node.pattern) & names
        if not spelled:
            continue
        line = node.pattern.lineno if isinstance(node, ast.match_case) else node.lineno
        found.extend((line, f"{shown}:{line}: compares {name!r}") for name in sorted(spelled))
    return [text for _, text in sorted(found)]


def test_no_runtime_name_compared_outside_runtimes() -> None:
    names = runtime_names()
    assert {"ort-cpu", "torch-cpu"} <= names
    runtimes_dir = PACKAGE / "runtimes"
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if runtimes_dir in path.parents:
            continue
        found.extend(runtime_name_comparisons(path, names))
    assert not found, "runtime names compared outside runtimes/ (ask the runtime contract):\n" + "\n".join(found)


def test_name_check_sees_comparisons_and_match(tmp_path: Path) -> None:
    path = tmp_path / "planted.py"
    path.write_text(
        "def f(x):\n    if x.name == 'ort-cpu':\n        return 1\n"
        "    match x:\n        case 'torch-cuda':\n            return 2\n"
        "    return x in ('ort-cuda', 'other')\n"
        "LABEL = 'ort-cpu'\n"
    )
    found = runtime_name_comparisons(path, {"ort-cpu", "torch-cuda", "ort-cuda"})
    assert [line.split(": ", 1)[1] for line in found] == [
        "compares 'ort-cpu'", "compares 'torch-cuda'", "compares 'ort-cuda'"
    ]
