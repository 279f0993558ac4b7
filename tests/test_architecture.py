"""The import graph of ``src/stpredict``: layers import downward only, and no module imports itself back.

Layers, low to high: private shared modules (``stpredict/_*.py``) < ``io`` < ``pp`` < ``models`` < ``tl`` <
``pl``; the command line, the demo and ``datasets`` sit on top. Imports inside functions count too: a lazy
import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parent.parent / "src" / "stpredict"
LAYERS = {"io": 1, "pp": 2, "models": 3, "tl": 4, "pl": 5}
TOP = 6  # cli, _cli_*, demo, datasets, the package itself


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return TOP
    head = parts[1]
    if head in LAYERS:
        return LAYERS[head]
    if head.startswith("_cli") or head in ("cli", "demo", "datasets"):
        return TOP
    return 0 if head.startswith("_") else TOP


def _module_name(path: Path) -> str:
    name = "stpredict." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = nx.DiGraph()
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("stpredict"):
                continue
            # `from .pkg import name` may name a submodule: point at it when it exists
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                graph.add_edge(module, candidate if candidate in modules else target)
    return graph


def test_layers_import_downward_only():
    upward = sorted(f"{a} -> {b}" for a, b in import_graph().edges if _layer(b) < TOP and _layer(a) < _layer(b))
    assert upward == [], upward


def test_no_module_imports_itself_back():
    circles = [c for c in nx.simple_cycles(circle_graph()) if len(c) > 1]
    assert circles == [], circles[:5]


def circle_graph() -> nx.DiGraph:
    """The import graph without packages' ``__init__`` (a package importing its own submodules, which import
    siblings through it, is how packages are made, not a circle)."""
    graph = import_graph()
    graph.remove_nodes_from([m for m in list(graph) if _is_package_init(m)])
    return graph


def _is_package_init(module: str) -> bool:
    path = SRC.joinpath(*module.split(".")[1:])
    return (path / "__init__.py").is_file()


def test_the_checks_can_fail():
    """A circle between two modules of one package is found; a function-level import from above is an arrow up."""
    graph = circle_graph()
    graph.add_edge("stpredict.io._image", "stpredict.io._spatialdata")
    graph.add_edge("stpredict.io._spatialdata", "stpredict.io._image")
    assert [c for c in nx.simple_cycles(graph) if len(c) > 1]
    tree = ast.parse("def f():\n    from ..models import Predictor\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    package = "stpredict.pp"
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    target = ".".join(base + [node.module])
    assert _layer(target) > _layer("stpredict.pp._features")


def test_every_relative_import_stays_inside_the_package():
    """A module moved between layers keeps no ``from ...x`` that would reach above ``stpredict`` (seen only when
    the function holding it runs)."""
    beyond = []
    for path in SRC.rglob("*.py"):
        depth = len(path.relative_to(SRC).parts)  # stpredict/x.py: 1; stpredict/pp/x.py: 2
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > depth:
                beyond.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert beyond == [], beyond
