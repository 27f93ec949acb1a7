"""The package's structure: each folder of cnnc/ is one role and imports only the folders below
it (:data:`LAYERS`), no import cycles, no private name imported across modules, ``import cnnc``
leaves the environment alone, and the README's list of header keys is the settings table's.

Imports are read from the source with :mod:`ast` (nothing is imported). Every import that
can run counts: at module level, inside ``if``/``try``/``with`` blocks and class bodies, and
inside functions (a lazy import still ties the two modules together), but not under
``if TYPE_CHECKING:``, which never runs. ``from pkg import name`` points at ``pkg.name`` when that is a module,
else at ``pkg``; the implicit import of a module's parent packages is not an edge.
"""
from __future__ import annotations

import ast
import json
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


#: The roles of cnnc/, lowest first. A module may import modules of its own role and of any role
#: below it, never above: `nothing imports cli`, `kernels import nothing above them`. Lazy
#: imports (inside functions) count; only ``if TYPE_CHECKING:`` imports do not.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cnnc.errors", "cnnc.version", "cnnc.text"),
    ("cnnc.atomic",),
    ("cnnc.kernels",),
    ("cnnc.layers",),  # a layer's op loads its kernels lazily (see MODULE_LEVEL_FORBIDDEN)
    ("cnnc.lang",),
    ("cnnc.runtime",),
    ("cnnc.compiler",),
    ("cnnc.training",),
    ("cnnc.tools", "cnnc.viz", "cnnc.live"),  # side by side: none imports another
    ("cnnc",),  # the package's public API (__init__)
    ("cnnc.cli",),
    ("cnnc.__main__",),
)
#: what the language and the layer definitions never import at module level, so that
#: ``cnnc check`` loads neither NumPy nor Numba nor a kernel
MODULE_LEVEL_FORBIDDEN = {"cnnc.lang": ("cnnc.kernels", "cnnc.runtime", "numpy", "numba"),
                          "cnnc.layers": ("cnnc.kernels", "cnnc.runtime", "numpy", "numba")}


def role(module: str) -> str:
    """The role (a :data:`LAYERS` entry) a module belongs to: its longest listed prefix."""
    names = [name for group in LAYERS for name in group
             if module == name or module.startswith(name + ".")]
    if not names:
        raise AssertionError(f"{module} belongs to no role of LAYERS: add its folder there")
    return max(names, key=len)


def level(name: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if name in group)


def upward_imports(graph: nx.DiGraph) -> list[str]:
    """Every import of a module of the same level or above, other than its own role's."""
    bad = []
    for a, b, data in graph.edges(data=True):
        ra, rb = role(a), role(b)
        if ra != rb and level(rb) >= level(ra):
            bad.append(f"{a} (line {data['line']}) imports {b}: {rb} is not below {ra}")
    return sorted(bad)


def module_level_imports(tree: ast.Module):
    """The imports a module runs when it is imported: outside functions and classes' methods."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))


def absolute_targets(node: ast.Import | ast.ImportFrom, current: str, is_package: bool) -> list[str]:
    """The dotted names an import statement names (``from . import x``: the package + x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{alias.name}" for alias in node.names] + [target]


def forbidden_module_level_imports(files=None) -> list[str]:
    bad = []
    for path in files or sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        banned = next((v for k, v in MODULE_LEVEL_FORBIDDEN.items()
                       if name == k or name.startswith(k + ".")), None)
        if banned is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in module_level_imports(tree):
            for target in absolute_targets(node, name, path.name == "__init__.py"):
                hit = next((b for b in banned if target == b or target.startswith(b + ".")), None)
                if hit:
                    bad.append(f"{name} (line {node.lineno}) imports {hit} at module level")
    return sorted(set(bad))


def private_imports(files=None) -> list[str]:
    """``from cnnc.x import _name`` across modules: a private name used outside its module."""
    bad = []
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in files or sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            *_, target = absolute_targets(node, name, path.name == "__init__.py")
            if node.level == 0 and not target.startswith("cnnc"):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{target}.{alias.name}" not in modules:
                    bad.append(f"{name} (line {node.lineno}) imports {alias.name} from {target}")
    return sorted(bad)


def test_every_module_has_a_role_and_imports_only_below_it():
    graph = import_graph()
    for module in graph.nodes:
        role(module)
    bad = upward_imports(graph)
    assert not bad, "imports that go up (see LAYERS in tests/test_structure.py):\n  " + "\n  ".join(bad)


def test_the_layering_check_sees_a_violation():
    """The checks above fail on what they are meant to catch (a graph with an upward edge, a
    module-level NumPy import in lang/, a private name imported)."""
    graph = nx.DiGraph()
    graph.add_edge("cnnc.kernels.pool", "cnnc.runtime.executor", line=3)
    graph.add_edge("cnnc.lang.graph", "cnnc.layers.base", line=4)  # allowed: layers are below
    graph.add_edge("cnnc.training.train", "cnnc.cli.common", line=5)
    graph.add_edge("cnnc.tools.gradcheck", "cnnc.viz.core", line=6)  # same level: not allowed
    bad = upward_imports(graph)
    assert len(bad) == 3 and "cnnc.kernels.pool (line 3)" in bad[0]
    assert any("cnnc.cli" in b for b in bad) and any("cnnc.viz" in b for b in bad)


def test_lang_and_layers_import_no_numpy_numba_or_kernels_at_module_level(tmp_path):
    bad = forbidden_module_level_imports()
    assert not bad, "\n  ".join(["module-level imports the static half must not make:", *bad])


def test_no_private_name_is_imported_across_modules():
    bad = private_imports()
    assert not bad, "\n  ".join(["private names imported from other modules:", *bad])


def test_import_cnnc_leaves_the_environment_alone():
    """``import cnnc`` and checking a model change no environment variable and load neither
    NumPy nor Numba; loading the kernels is what sets their variables."""
    import subprocess
    import sys

    code = ("import os, sys, json; before = dict(os.environ); import cnnc; "
            "cnnc.compile('conv3-relu-pool-fc', input='1x8x8', classes=10).summary_text(); "
            "print(json.dumps([dict(os.environ) == before, 'numpy' in sys.modules, "
            "'numba' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k not in ("NUMBA_OPT", "OPENBLAS_CORETYPE")})
    assert json.loads(out.stdout) == [True, False, False]


def test_the_graph_sees_imports():
    """The parser finds what is known to be there (so an empty graph cannot pass)."""
    graph = import_graph()
    assert graph.has_edge("cnnc.cli.main", "cnnc.cli.common")  # `from .common import ...`
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
