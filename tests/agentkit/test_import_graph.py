"""No import cycle inside agentkit: every module's imports of other agentkit modules, read
from its source (top level, functions and ``TYPE_CHECKING`` blocks alike), form a graph
without cycles, and every module imports on its own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import agentkit


def agentkit_modules() -> dict[str, Path]:
    """Every module of the agentkit package (packages by their ``__init__.py``)."""
    modules = {"agentkit": Path(agentkit.__file__)}
    for info in pkgutil.walk_packages(agentkit.__path__, prefix="agentkit."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None, info.name
        modules[info.name] = Path(spec.origin)
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The agentkit modules ``name`` imports (``from pkg import sub`` names ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first module repeated at the end), or None."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path.append(root)
        on_path.add(root)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = todo.pop()
            if nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return None


def test_the_walk_covers_all_of_agentkit() -> None:
    modules = agentkit_modules()
    files = {p.resolve() for p in Path(agentkit.__file__).parent.rglob("*.py")}
    assert files == {p.resolve() for p in modules.values()}
    assert {"agentkit.mux.multiplexer", "agentkit.mux.stream", "agentkit.config"} <= set(modules)


def test_no_import_cycle_in_agentkit() -> None:
    modules = agentkit_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    assert graph["agentkit.mux.multiplexer"] >= {"agentkit.mux.stream"}  # the walk sees edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_agentkit_module_imports() -> None:
    for name in agentkit_modules():
        importlib.import_module(name)


def test_the_cycle_finder_finds_cycles() -> None:
    """The check above can fail: the finder reports the cycle the old mux had."""
    graph = {
        "mux.session": {"mux.stream", "mux.protocol"},
        "mux.stream": {"mux.session", "mux.protocol"},
        "mux.protocol": set(),
    }
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"mux.session", "mux.stream"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
