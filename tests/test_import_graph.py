"""The project's import graph has no circle (issue #14).

The graph is grimp's (the library under import-linter): every ``import`` and ``from ...
import`` of every module of the project's packages — at module level or inside a function,
but not under ``if TYPE_CHECKING:`` — is an edge from the importing module to the imported
one (``from pkg import name`` points at ``pkg.name`` when that is a module, else at
``pkg``). A circle is a module that, directly or through others, imports itself; the
standard library's ``graphlib`` finds one. Run it alone with
``python -m pytest -q tests/test_import_graph.py``.
"""

from __future__ import annotations

import graphlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="grimp is in the dev extras: run `make install`")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "candidate_gen", "keyword_index", "reranker", "federated", "serving",
            "evaluation", "tasks", "bench")


def import_graph(*packages: str) -> dict[str, set[str]]:
    """Module → the modules of ``packages`` it imports (grimp, TYPE_CHECKING excluded)."""
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    return {module: graph.find_modules_directly_imported_by(module)
            for module in graph.modules}


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of ``graph`` (its modules, the first repeated last), or ``[]`` if none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


@pytest.fixture()
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.split(".")[0] in ("circle", "line")]:
        del sys.modules[name]


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / name / f"{module}.py").write_text(source)


def test_a_circle_is_found(on_path: Path) -> None:
    """The shape of the old serving circle: a route imported the factory that imports it."""
    _package(on_path, "circle", {
        "_app": "def create_app():\n    from circle._api import api\n",
        "_api": "from circle._app import create_app\n",
        "_typed": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from circle._app import create_app\n"})
    circle = find_circle(import_graph("circle"))
    assert set(circle) == {"circle._app", "circle._api"} and circle[0] == circle[-1]


def test_a_line_is_not_a_circle(on_path: Path) -> None:
    _package(on_path, "line", {
        "_a": "from line._b import x\n", "_b": "x = 1\n",
        # an import only for type checking is not an edge
        "_c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from line._a import x\n"})
    graph = import_graph("line")
    assert graph["line._a"] == {"line._b"} and graph["line._c"] == set()
    assert find_circle(graph) == []


def test_the_project_has_no_import_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # bench is not installed
    graph = import_graph(*PACKAGES)
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    assert len(graph) > 100
    assert find_circle(graph) == [], f"import circle: {' -> '.join(find_circle(graph))}"


def _public_modules() -> Iterator[str]:
    """Every package face and public submodule (no ``_`` in its name) of the project."""
    for package in PACKAGES:
        if package == "bench":
            continue
        yield package
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if len(parts) > 1 and not any(p.startswith("_") for p in parts):
                yield ".".join(parts)


def test_every_public_face_lists_names_it_defines() -> None:
    """Each public module's ``__all__``: no private name, no repeat, every name defined."""
    import importlib

    faces = 0
    for name in _public_modules():
        module = importlib.import_module(name)
        listed = getattr(module, "__all__", None)
        if listed is None:
            continue
        faces += 1
        assert len(listed) == len(set(listed)), (name, sorted(listed))
        assert not [n for n in listed if n.startswith("_")], name
        assert not [n for n in listed if not hasattr(module, n)], name
    assert faces >= 20

