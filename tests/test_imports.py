"""The library's import graph: no module of ``crbp_panoptic`` imports itself through others, and
the C-RBP engine (``crbp_panoptic.crbp``) never reaches Detectron2.

The graph is read from the source (AST), not from a running interpreter, so imports inside
functions count too: an import circle that only closes at call time still makes the modules
depend on each other. Every ``import`` / ``from`` statement anywhere in a module is an edge;
``from X import Y`` goes to ``X.Y`` when that is a module of the package, else to ``X``; an
import of a package goes to its ``__init__``.
"""

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

from tests.tiny import REPO

PACKAGE = "crbp_panoptic"


def package_modules(root: Path = REPO, package: str = PACKAGE) -> Dict[str, Path]:
    """Dotted name -> file of every module of ``package`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> List[str]:
    """The dotted names one import statement asks for (``from X import a, b``: ``X.a``, ``X.b``,
    each resolved against the package by the caller)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def import_graph(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    """Module -> the modules of the package it imports (other imports are left out)."""
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            asked = _imported(node, name, path.name == "__init__.py")
            if isinstance(node, ast.Import):
                edges |= {a for a in asked if a in modules}
                continue
            target, members = asked[0], asked[1:]
            found = [m for m in members if m in modules]
            if len(found) < len(members) and target in modules:
                found.append(target)  # names defined in X itself: X's module
            edges |= set(found)
        edges.discard(name)
        graph[name] = edges
    return graph


def external_imports(path: Path) -> Set[str]:
    """Top-level names of the absolute imports of one module (e.g. ``torch``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("import os\nfrom .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g  # at call time\n")
    (pkg / "sub" / "c.py").write_text("import pkg.sub\nfrom pkg import a\n")
    modules = package_modules(tmp_path, "pkg")
    graph = import_graph(modules)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a"},
        "pkg.sub.c": {"pkg.sub", "pkg.a"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle({**graph, "pkg.sub.b": set()}) is None


def test_the_package_has_no_import_cycle():
    modules = package_modules()
    assert f"{PACKAGE}.data" in modules and f"{PACKAGE}.pathfinder.train" in modules
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_crbp_engine_never_reaches_detectron2():
    modules = package_modules()
    graph = import_graph(modules)
    engine = {m for m in modules if m == f"{PACKAGE}.crbp" or m.startswith(f"{PACKAGE}.crbp.")}
    reached, todo = set(), list(engine)
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo += graph[m]
    assert engine <= reached and len(engine) > 5
    offenders = sorted(m for m in reached if "detectron2" in external_imports(modules[m]))
    assert not offenders, f"crbp_panoptic.crbp reaches Detectron2 through {offenders}"
