"""Code layout: no import cycle among the ``core`` modules (function-level imports count too)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ui")


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every module under PACKAGES."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known: dict) -> set[str]:
    """The known modules ``name`` imports anywhere in its file (module level, functions, ``if`` blocks).

    ``from pkg import sub`` counts as importing the submodule ``pkg.sub`` only; a name that is not a module
    counts as importing ``pkg`` itself. Relative imports are resolved against ``name``'s package.
    """
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = {f"{module}.{alias.name}" for alias in node.names} & known.keys()
            targets.update(subs)
            if len(subs) < len(node.names):
                targets.add(module)
    found = set()
    for target in targets:
        while target and target not in known:  # ``import core.model.loading`` -> that module; ``torch.nn`` -> none
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted by first name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import circle through ``component``'s first module: ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return component


def core_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {name: imports(name, path, is_package, known) for name, (path, is_package) in known.items()}
    return {name: {d for d in deps if d.startswith("core.") or d == "core"}
            for name, deps in graph.items() if name.startswith("core.") or name == "core"}


def test_the_import_graph_is_read_with_function_level_and_relative_imports():
    known = modules()
    assert {"core.index.build", "core.model.loading", "ui.cache"} <= known.keys()
    loading = imports("core.model.loading", *known["core.model.loading"], known)
    assert {"core.model.heads", "core.model.finish", "core.hashing"} <= loading
    assert "core.model.device" in loading  # imported inside load_model
    assert "core.model" not in loading  # ``from . import hub`` names the submodule, not the package
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert a_path({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_core_modules():
    graph = core_graph()
    found = cycles(graph)
    assert not found, "import cycles in core (move what both sides need into a module both can import):\n" + "\n".join(
        f"  {' -> '.join(a_path(graph, c))}  (all of: {', '.join(c)})" for c in found)
