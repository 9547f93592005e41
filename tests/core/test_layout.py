"""The engine's package layout: no import cycles between its modules (function-level
imports included), and the command-line modules never import each other's parent."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every core module ``path`` imports, at any depth of the file."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.add(target)
            else:
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # A package's own __init__ importing its children is not a cycle in practice;
        # keep only edges between modules that exist.
        edges[name] = {t for t in imports_of(path) if t in modules and t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycle_in_core():
    edges = graph()
    assert "core.cli.main" in edges and "core.training.loop" in edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_cycle_detector_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_folders_show_the_architecture():
    for package in ("cli", "data", "labels", "models", "training", "evaluation", "segment"):
        assert (CORE / package / "__init__.py").is_file(), package
    for sub in ("stats", "labels", "training", "segment"):
        assert "core.cli.main" not in imports_of(CORE / "cli" / f"{sub}.py"), sub
