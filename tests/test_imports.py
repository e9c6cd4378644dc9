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


def test_library_noise_is_filtered_and_real_warnings_still_show(caplog):
    """What importing torchao logs under a quanto run (helpers/quiet.py) is dropped; anything else is not."""
    import logging

    import helpers  # noqa: F401 - installs the filters

    noise = [
        ("torchao", "Failed to load /venv/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load"),
        ("torchao", "Failed to load /venv/site-packages/torchao/_C_cutlass_90a.abi3.so: Could not load this library"),
        ("torch.utils._pytree", "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
                                "torch.compile as an opaque value type. Calling register_constant() on Enum "
                                "subclasses is deprecated and will be an error in a future release."),
        ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects. This may "
                                                           "affect loading checkpoints serialized with `torchao`"),
    ]  # fmt: skip
    real = [("torchao", "a real torchao warning"), ("torch.utils._pytree", "something else"),
            ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to quantize this layer")]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        for name, message in noise + real:
            logging.getLogger(name).warning(message)
    assert [r.getMessage() for r in caplog.records] == [m for _, m in real]
