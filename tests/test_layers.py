"""The package is its layer diagram (docs/architecture.md): every import points down, none goes round.

Imports are counted the strict way (as /work/shared/tools/import_knots.py counts them): every
``import`` of interest's own modules, at module level, inside functions and under
``TYPE_CHECKING`` alike, is an edge between two files; a deferred import defers a dependency, it
does not remove it. ``from P import n`` is an edge to ``P.n`` when that is a module and always one to
``P`` (whose ``__init__`` runs); a module importing its own package's ``__init__`` (an ancestor's)
does not count. The exception is the facade ``interest/__init__.py``: every module is inside it,
so importing it counts when an import names it (``import interest``, ``from interest import load``).

The rooms and their layers, by folder (or top-level module):

    core 0 < imaging, learn 1 < pipeline, bundle 2 < models 3 < scoring, onnx 4 < the facade
    (interest/__init__: `load`, `__version__`) < stages 6 < apps 7 < cli 8 < __main__

A room imports its own modules and rooms of lower layers only, and where the target tree
(LAYERS.md) names them, only those: imaging and learn import only core (never each other),
pipeline core and imaging, bundle core and learn, models core, learn and bundle. Within stages
the rooms follow the research order, collect < embed < characterize < labels < train < evaluate
< analyze: a stage imports earlier stages only. synthetic/ stands to one side: it imports only
core, and anything above core may import it. Inside a room imports may go any way but never
round: no cycle among interest's files at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "interest"

LAYERS = {"core": 0, "imaging": 1, "learn": 1, "pipeline": 2, "bundle": 2, "models": 3, "scoring": 4, "onnx": 4,
          "facade": 5, "stages": 6, "apps": 7, "cli": 8, "main": 9}
# the rooms each lower room may import besides itself (LAYERS.md); rooms from layer 4 up import any lower layer
ALLOWED = {"core": set(), "imaging": {"core"}, "learn": {"core"}, "pipeline": {"core", "imaging"},
           "bundle": {"core", "learn"}, "models": {"core", "learn", "bundle"}}
STAGES = ("collect", "embed", "characterize", "labels", "train", "evaluate", "analyze")
SIDE = "synthetic"


def room(path: Path, package: Path) -> str | None:
    """The room of a file of ``package``: its top folder, or its top-level module's name; None if it has none."""
    parts = path.relative_to(package).parts
    if parts == ("__init__.py",):
        return "facade"
    if parts == ("__main__.py",):
        return "main"
    name = parts[0].removesuffix(".py")
    return name if name in LAYERS or name == SIDE else None


def stage(path: Path, package: Path) -> int | None:
    """Position of a file of stages/ in the research order (train_x counts as train); None for stages/__init__."""
    parts = path.relative_to(package).parts
    if len(parts) < 2 or parts[1] == "__init__.py":
        return None
    name = parts[1].removesuffix(".py")
    for candidate in (name, name.split("_")[0]):
        if candidate in STAGES:
            return STAGES.index(candidate)
    return -1


def import_graph(package: Path) -> dict[Path, set[Path]]:
    """File -> the files of ``package`` it imports anywhere in it (functions and TYPE_CHECKING included)."""
    root, name = package.parent, package.name
    files = {p: ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
             for p in sorted(package.rglob("*.py"))}
    by_module = {m: p for p, m in files.items()}
    facade = package / "__init__.py"

    def resolve(module: str) -> Path | None:
        while module:
            if module in by_module:
                return by_module[module]
            module = module.rpartition(".")[0]
        return None

    graph: dict[Path, set[Path]] = {}
    for path, module in files.items():
        base = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[Path] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    parts = base.split(".")
                    source = ".".join(parts[: len(parts) - node.level + 1] + ([source] if source else []))
                targets = [f"{source}.{a.name}" for a in node.names]
                # the package itself: always (its __init__ runs), except that `from interest import onnx`
                # names a submodule, not the facade
                if source != name or any(f"{source}.{a.name}" not in by_module for a in node.names):
                    targets.append(source)
            else:
                continue
            for target in targets:
                if target != name and not target.startswith(name + "."):
                    continue
                found = resolve(target)
                if found is None or found == path:
                    continue
                own_ancestor = found.name == "__init__.py" and path.is_relative_to(found.parent)
                if own_ancestor and found != facade:
                    continue
                edges.add(found)
        graph[path] = edges
    return graph


def upward_edges(package: Path, graph: dict[Path, set[Path]] | None = None) -> list[str]:
    """Every import that breaks the layer rule, as 'a.py -> b.py (layer X imports layer Y)'."""
    graph = import_graph(package) if graph is None else graph
    bad = []

    def show(p: Path) -> str:
        return str(p.relative_to(package.parent))

    def describe(r: str) -> str:
        return f"{SIDE} (side)" if r == SIDE else f"layer {LAYERS[r]} {r}"

    for a, targets in sorted(graph.items()):
        ra = room(a, package)
        if ra is None:
            bad.append(f"{show(a)}: in no room of the layer diagram (move it into the target tree)")
            continue
        for b in sorted(targets):
            rb = room(b, package)
            if rb is None:
                continue  # reported as a file of its own
            if ra == SIDE:
                ok = rb in (SIDE, "core")
            elif rb == SIDE:
                ok = ra != "core"
            elif ra == rb == "stages":
                sa, sb = stage(a, package), stage(b, package)
                ok = sb is None or sa is None or (sa >= 0 and sb >= 0 and sb <= sa)
                if not ok:
                    bad.append(f"{show(a)} -> {show(b)} (stage {STAGES[sa] if sa >= 0 else '?'} imports later "
                               f"stage {STAGES[sb] if sb >= 0 else '?'}; order: {' < '.join(STAGES)})")
                continue
            elif ra == rb:
                ok = True
            elif ra in ALLOWED:
                ok = rb in ALLOWED[ra]
            else:
                ok = LAYERS[rb] < LAYERS[ra]
            if not ok:
                bad.append(f"{show(a)} -> {show(b)} ({describe(ra)} imports {describe(rb)})")
    return bad


def cycles(graph: dict) -> list[list]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found = []

    def visit(v) -> None:
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


def describe_cycles(package: Path, graph: dict[Path, set[Path]]) -> list[str]:
    out = []
    for component in cycles(graph):
        members = set(component)
        edges = [f"{a.relative_to(package.parent)} -> {b.relative_to(package.parent)}"
                 for a in component for b in sorted(graph[a] & members)]
        out.append("cycle: " + "; ".join(edges))
    return out


# ------------------------------------------------------------------ the checker on small made-up packages

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "interest"
    for rel, text in {"__init__.py": "", **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_function_level_and_type_checking_imports_count(tmp_path):
    package = _package(tmp_path, {
        "core/__init__.py": "",
        "core/hub.py": "def fetch():\n    from interest.bundle.io import read\n",
        "bundle/__init__.py": "",
        "bundle/io.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from interest.models import model\n",
        "models/__init__.py": "",
        "models/model.py": "from interest.core import hub\n",
    })
    graph = import_graph(package)
    # `from P.m import name`: the module m (P's __init__ runs too, but P is m's own package);
    # `from P import m`: m, and P's __init__, which the importer is outside of
    assert graph[package / "core/hub.py"] == {package / "bundle/io.py"}
    assert graph[package / "bundle/io.py"] == {package / "models/model.py", package / "models/__init__.py"}
    assert graph[package / "models/model.py"] == {package / "core/hub.py", package / "core/__init__.py"}
    assert upward_edges(package, graph) == [
        "interest/bundle/io.py -> interest/models/__init__.py (layer 2 bundle imports layer 3 models)",
        "interest/bundle/io.py -> interest/models/model.py (layer 2 bundle imports layer 3 models)",
        "interest/core/hub.py -> interest/bundle/io.py (layer 0 core imports layer 2 bundle)",
    ]
    assert describe_cycles(package, graph) == [
        "cycle: interest/bundle/io.py -> interest/models/model.py; interest/core/hub.py -> interest/bundle/io.py; "
        "interest/models/model.py -> interest/core/hub.py"
    ]


def test_the_rules_between_rooms(tmp_path):
    package = _package(tmp_path, {
        "core/__init__.py": "", "core/errors.py": "",
        "imaging/__init__.py": "", "imaging/images.py": "from interest.learn import base\n",
        "learn/__init__.py": "", "learn/base.py": "from interest.core.errors import InterestError\n",
        "pipeline/__init__.py": "", "pipeline/reader.py": "from ..imaging import images\n",  # relative, allowed
        "stages/__init__.py": "",
        "stages/train.py": "from interest.stages import labels\nfrom interest.stages.evaluate import metrics\n",
        "stages/labels.py": "from interest.synthetic import world\n",
        "stages/evaluate.py": "import interest\n",
        "synthetic/__init__.py": "", "synthetic/world.py": "from interest.pipeline import reader\n",
        "apps/__init__.py": "", "apps/demo.py": "from interest import load, onnx\n",
        "onnx.py": "from interest import scoring\n", "scoring.py": "",
        "features/__init__.py": "",
    })
    assert upward_edges(package) == [
        "interest/features/__init__.py: in no room of the layer diagram (move it into the target tree)",
        "interest/imaging/images.py -> interest/learn/__init__.py (layer 1 imaging imports layer 1 learn)",
        "interest/imaging/images.py -> interest/learn/base.py (layer 1 imaging imports layer 1 learn)",
        "interest/onnx.py -> interest/scoring.py (layer 4 onnx imports layer 4 scoring)",
        "interest/stages/train.py -> interest/stages/evaluate.py (stage train imports later stage evaluate; "
        "order: collect < embed < characterize < labels < train < evaluate < analyze)",
        "interest/synthetic/world.py -> interest/pipeline/__init__.py (synthetic (side) imports layer 2 pipeline)",
        "interest/synthetic/world.py -> interest/pipeline/reader.py (synthetic (side) imports layer 2 pipeline)",
    ]  # the facade from a stage and from an app, a submodule through `from interest import`, all fine


# ------------------------------------------------------------------ the package itself

def test_every_import_points_down():
    bad = upward_edges(PACKAGE)
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


def test_no_import_cycle_even_counting_deferred_imports():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and PACKAGE / "core" / "errors.py" in graph
    found = describe_cycles(PACKAGE, graph)
    assert not found, "import cycles:\n" + "\n".join(found)
