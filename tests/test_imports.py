"""The package's import graph has no circle, counting the imports inside functions too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "helpers"


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``models.spec``, ``grid``, ...), subpackages included."""
    paths = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
    names = {name.removesuffix(".__init__") for name in paths}
    graph = {}
    for name, path in paths.items():
        module = name.removesuffix(".__init__")
        package = module if name.endswith("__init__") else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("helpers."):
                target = node.module.removeprefix("helpers.")
            else:
                continue
            for alias in node.names:  # "from . import x" and "from .pkg import module" import modules
                if f"{target}.{alias.name}".strip(".") in names:
                    edges.add(f"{target}.{alias.name}".strip("."))
            if target in names:
                edges.add(target)
        graph[module] = edges - {module}
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_circle():
    graph = _graph()
    assert {"grid", "estimate", "random_full", "components", "cluster", "models.sd3", "backends.torchao"} <= set(graph)
    assert "models.spec" in graph["models.auraflow"] and "backends" in graph["registry"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
