"""autometa's import graph: dependencies point one way, slots stay independent, heavy libraries stay in
their backends, and no two modules import each other (directly or through others) at import time.

The order is DESIGN.md's: data -> tasks -> nets -> hypergrad -> slots -> learners -> experiment ->
search -> compare -> testing -> cli; ``errors`` and ``_params`` sit below everything.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "autometa"
LAYERS = ["errors", "_params", "data", "tasks", "nets", "hypergrad", "slots", "learners", "experiment", "search",
          "compare", "testing", "cli"]
HEAVY = ("optuna", "ray", "nni")
BACKEND_MODULES = ("search/_optuna.py", "search/_ray.py", "search/_nni.py")  # Ray's searcher wraps Optuna


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool):
    """``(imported module, line)`` for every import in ``path`` (at module level only, if asked)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:  # "from autometa.slots import loss" imports a submodule
                yield f"{module}.{alias.name}", node.lineno


def files():
    return sorted(ROOT.rglob("*.py"))


def unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "autometa" and len(parts) > 1 else None


def test_dependencies_point_one_way():
    problems = []
    for path in files():
        src = unit(module_name(path))
        if src is None:
            continue
        for module, line in imports(path, top_level_only=False):
            dst = unit(module)
            if dst is None or dst == src or dst not in LAYERS or src not in LAYERS:
                continue
            if LAYERS.index(dst) > LAYERS.index(src):
                problems.append(f"{path.relative_to(ROOT.parent)}:{line} ({src}) imports {module} ({dst}), "
                                f"a higher layer")
    assert not problems, "\n".join(problems)


def test_a_slot_never_imports_another_slot():
    problems = []
    for path in (ROOT / "slots").rglob("*.py"):
        parts = path.relative_to(ROOT / "slots").parts
        if len(parts) < 2:
            continue  # the slots package root and its base module
        for module, line in imports(path, top_level_only=False):
            names = module.split(".")
            if names[:2] == ["autometa", "slots"] and len(names) > 2 and not names[2].startswith("_") \
                    and names[2] != parts[0]:
                problems.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_heavy_libraries_only_inside_the_backend_modules():
    """optuna, ray and nni only in the backend modules, which ``autometa.search`` loads on first use
    (tests/search check that ``import autometa`` imports none of them)."""
    problems = []
    for path in files():
        rel = path.relative_to(ROOT).as_posix()
        for module, line in imports(path, top_level_only=False):
            if module.split(".")[0] in HEAVY and rel not in BACKEND_MODULES:
                problems.append(f"{rel}:{line} imports {module.split('.')[0]} outside the backend modules")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_modules():
    """Also through imports inside functions: two modules that need each other are one design, split badly."""
    known = {module_name(p): p for p in files()}
    edges = {}
    for module, path in known.items():
        targets = set()
        for imported, _ in imports(path, top_level_only=False):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != module and not module.startswith(imported + "."):
                targets.add(imported)  # a submodule importing its own package's __init__ is no cycle here
        edges[module] = targets

    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # a package __init__ importing its submodules, which import siblings through the package, is the
    # usual Python layout; only cycles that pass through two different non-__init__ modules count
    real = [c for c in cycles if len({p for p in c.split(" -> ") if p in known and known[p].name != "__init__.py"}) > 1]
    assert not real, "\n".join(real)
