"""The package's structure: no import cycles inside cnnc/, and the README's list of header
keys is the settings table's.

Imports are read from the source with :mod:`ast` (nothing is imported). Every import that
can run counts: at module level, inside ``if``/``try``/``with`` blocks and class bodies, and
inside functions (a lazy import still ties the two modules together), but not under
``if TYPE_CHECKING:``, which never runs. ``from pkg import name`` points at ``pkg.name`` when that is a module,
else at ``pkg``; the implicit import of a module's parent packages is not an edge.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

from conftest import ROOT

PACKAGE = ROOT / "cnnc"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.Module):
    """The Import/ImportFrom nodes that can run (all but those under ``if TYPE_CHECKING:``)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))


def resolve(node: ast.Import | ast.ImportFrom, current: str, is_package: bool,
            modules: set[str]) -> set[str]:
    """The cnnc modules an import statement imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    if node.level:
        base = current.split(".")
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.add(sub if sub in modules else target)
    return found & modules


def import_graph() -> nx.DiGraph:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for path in files:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in runtime_imports(tree):
            for target in resolve(node, name, path.name == "__init__.py", modules):
                if target != name:
                    graph.add_edge(name, target, line=node.lineno)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """One cycle (as a path of modules) for each group of mutually importing modules."""
    found = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:
            edges = nx.find_cycle(graph.subgraph(group), source=min(group))
            found.append([a for a, _ in edges] + [edges[0][0]])
    return sorted(found)


def test_the_graph_sees_imports():
    """The parser finds what is known to be there (so an empty graph cannot pass)."""
    graph = import_graph()
    assert graph.has_edge("cnnc.cli.main", "cnnc.cli.commands")  # `from .commands import ...`
    assert graph.has_edge("cnnc.training.train", "cnnc.training.data")  # `from . import data as D`
    assert graph.has_edge("cnnc.training.data.download", "cnnc.atomic")  # `from ..atomic import ...`
    assert graph.has_edge("cnnc.compiler", "cnnc.runtime.network")  # imported inside a method
    assert not graph.has_edge("cnnc.lang.settings", "cnnc.lang.syntax")  # under `if TYPE_CHECKING`


def test_cycle_detection_reports_a_cycle():
    graph = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    (cycle,) = cycles(graph)
    assert set(cycle) == {"a", "b", "c"} and len(cycle) == 4 and cycle[0] == cycle[-1]
    assert all(graph.has_edge(a, b) for a, b in zip(cycle, cycle[1:]))
    assert cycles(nx.DiGraph([("a", "b")])) == []


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    lines = [" -> ".join(f"{a} (line {graph.edges[a, b]['line']})" for a, b in zip(c, c[1:]))
             + f" -> {c[-1]}" for c in found]
    assert not found, "import cycles in cnnc/:\n  " + "\n  ".join(lines)


def test_readme_lists_the_header_keys_of_the_settings_table():
    from cnnc.lang.settings import SETTING_KEYS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if "also training settings:" in line)
    listed = re.search(r"also training settings: `([^`]*)`", row).group(1).split()
    assert listed == [k for k, spec in SETTING_KEYS.items() if spec.training]
    network = [k for k, spec in SETTING_KEYS.items() if not spec.training]
    assert all(f"`{k} " in row for k in network), (network, row)
