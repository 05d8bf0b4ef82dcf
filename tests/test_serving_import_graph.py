"""The project's import graph has no circle (issue #14).

Every ``import`` and ``from ... import`` in every module of the project's packages —
at module level or inside a function, but not under ``if TYPE_CHECKING:`` — is an edge
from the importing module to the imported one (``from pkg import name`` points at
``pkg.name`` when that is a module, else at ``pkg``). A circle in that graph is a
module that, directly or through others, imports itself. Run it alone with
``python -m pytest -q tests/test_serving_import_graph.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "candidate_gen", "keyword_index", "reranker", "federated", "serving",
            "evaluation", "bench")


def project_modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool,
             modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()

    def target(name: str) -> None:
        # the longest project module that ``name`` names or lies inside
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports."""
    modules = project_modules()
    return {name: _imports(ast.parse(path.read_text(), str(path)), name,
                           path.name == "__init__.py", modules)
            for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def test_the_graph_finder_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_edges_include_function_level_and_relative_imports(tmp_path: Path) -> None:
    modules = dict.fromkeys(["pkg", "pkg._a", "pkg._b", "other", "typed"], tmp_path)
    source = ("from typing import TYPE_CHECKING\nfrom . import _b\n"
              "if TYPE_CHECKING:\n    import typed\n"
              "def f():\n    import other.sub\n")
    assert _imports(ast.parse(source), "pkg._a", False, modules) == {"pkg._b", "other"}


def test_the_old_serving_circle_is_found() -> None:
    """The circle of issue #14: ``_api`` imported the factory that imports ``_api``."""
    modules = dict.fromkeys(["serving", "serving._app", "serving._api"], ROOT)
    graph = {"serving._app": _imports(ast.parse("def create_app():\n"
                                                "    from serving._api import api\n"),
                                      "serving._app", False, modules),
             "serving._api": _imports(ast.parse("from serving._app import state\n"),
                                      "serving._api", False, modules)}
    assert find_cycles(graph) == [["serving._api", "serving._app"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    graph = import_graph()
    cycles = [c for c in find_cycles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not cycles, f"import circles through {package}: {cycles}"
