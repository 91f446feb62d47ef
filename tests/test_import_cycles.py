"""No import cycles among interest's modules, and every module imports in one fresh interpreter.

What counts as an import: every statement that runs when a module is
imported — at module level, also inside module-level ``if``/``try``/``with``
blocks and class bodies — except those under ``if TYPE_CHECKING:``. Imports
inside functions do not count: that is how the house defers heavy libraries
(torch, lightgbm, pandas for the CLI) and the public facade (``import
interest`` to call ``interest.load``) until they are used, and such an
import never runs while its module is half-initialised. ``from pkg import
name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
(whose ``__init__`` must then have run); the parent packages every import
initialises are not edges, or every package that re-exports its modules
would count.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "interest"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]):
    """The import statements of ``body`` that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _import_time_statements(node.body)


def _all_statements(body: list[ast.stmt]):
    """Every import statement of ``body``, inside functions too, except those under ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _all_statements(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, None) or []:
                    yield from _all_statements(child.body if isinstance(child, ast.ExceptHandler) else [child])


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the interest modules it imports when it is imported (with ``lazy``, anywhere in it)."""
    statements = _all_statements if lazy else _import_time_statements
    graph = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in statements(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
                targets = submodules + ([base] if len(submodules) < len(node.names) else [])
            edges.update(t for t in targets if t in MODULES and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

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
    return found


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert len(graph) > 50 and "interest.models.model" in graph
    # module level, through a package's submodule, and a relative import all count
    assert "interest.models.common" in graph["interest.models.model"]
    assert "interest.bundle.safe_io" in graph["interest.bundle.io"]
    # TYPE_CHECKING and function-level imports do not
    assert "interest.models.model" not in graph["interest.bundle.io"]
    assert not graph["interest.numeric"]


def test_cycles_finds_a_cycle_and_only_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_interests_modules():
    graph = import_graph()
    found = cycles(graph)
    described = "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c))) + ")"
        for c in found
    )
    assert not found, f"import cycles: {described}"


# Modules that import each other, lazy imports included: none, and no pair may join.
KNOWN_MUTUAL: set[tuple[str, str]] = set()


def test_no_two_modules_import_each_other_even_lazily():
    graph = import_graph(lazy=True)
    assert "interest.progress" in graph["interest.pipeline.local"]  # a function-level import counts here
    assert "interest.models.model" not in graph["interest.bundle.io"]  # TYPE_CHECKING does not
    mutual = {(a, b) for a in graph for b in graph[a] if a < b and a in graph[b]}
    # e.g. interest <-> interest.hub (export_hub called interest.load), models.model <-> models.bundle
    assert mutual <= KNOWN_MUTUAL, f"modules importing each other: {sorted(mutual - KNOWN_MUTUAL)}"


IMPORT_ALL = """
import importlib, json, sys
skipped, failed = {}, {}
for name in json.loads(sys.stdin.read()):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "interest":
            failed[name] = repr(exc)
        else:  # an optional extra that is not installed here
            skipped[name] = exc.name
    except Exception as exc:
        failed[name] = repr(exc)
print(json.dumps({"skipped": skipped, "failed": failed}))
"""


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in MODULES if not n.endswith("__main__"))  # `python -m interest` runs the CLI
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL], input=json.dumps(names), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert not result["failed"], result["failed"]
    assert len(result["skipped"]) < len(names) // 4, result["skipped"]
