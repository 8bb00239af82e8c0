"""The modules of autometa.search import each other without a cycle (function-level imports count)."""

import ast
from pathlib import Path

import autometa.search

PACKAGE = Path(autometa.search.__file__).parent


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = f"autometa.search.{path.stem}" if path.stem != "__init__" else "autometa.search"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autometa.search"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("autometa.search")}
        graph[name] = found - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [nxt]
            if state.get(nxt) is None and nxt in graph:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_search_modules_have_no_import_cycle_and_backends_never_import_the_results_module():
    graph = {k: v for k, v in _imports().items() if k != "autometa.search"}  # __init__ re-exports everything
    assert _cycle(graph) is None, _cycle(graph)
    for backend in ("_optuna", "_ray", "_nni"):
        assert "autometa.search._result" not in graph[f"autometa.search.{backend}"]
        assert "autometa.search._api" not in graph[f"autometa.search.{backend}"]


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
