"""Layers are asked, never named (issue 20): outside ``cnnc/layers/`` no decision compares a
layer type's name.

What a stage needs to know about a layer is an attribute or a method of its type, defined
next to the layer (``fused_into_loss``, ``piecewise_linear``, ``has_filters``,
``torch_param_names``, ``draw_label``...), so a new layer type says it once, where it is
written. The scan below parses every module of the package except ``cnnc/layers/`` and
reports each string constant that is a registered layer name (names and aliases, from the
registry: ``cnnc layers`` lists the same) and is used

* in a comparison: ``t.name == "conv"``, ``kind in ("maxpool", "avgpool")``, ``!=``, ``not in``;
* as a ``case`` pattern of a ``match``;
* in a lookup table: a dict, set, list or tuple literal with at least two layer names that
  make up more than half of its keys or elements (``{"conv": ..., "fc": ...}``,
  ``frozenset({"relu", "maxpool"})``).

Strings that are not layer names never count (``"sgd"``, ``"step"``, ``"input"``, ``"call"``,
``"layer"``). A layer name used for something else is not reported because it is neither
compared nor a table's majority: the checkpoint's random stream ``"dropout"`` (a key among
``"epoch_start"``, ``"shuffle"``, ``"augment"`` in cnnc/training/train.py) and the ``"id"``
key of ``cnnc draw``'s JSON. Subscripts (``rng["dropout"]``) are not scanned for that reason.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cnnc
from cnnc.layers import layer_types, registry

PACKAGE = Path(cnnc.__file__).resolve().parent
LAYER_NAMES = frozenset(registry())  # every name and alias


def _named(node: ast.AST) -> list[ast.Constant]:
    """The layer-name string constants of ``node``: itself, or the elements of a literal."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [c for c in items
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in LAYER_NAMES]


def _is_table(keys: list[ast.AST | None]) -> bool:
    """At least two keys (or elements) are layer names, and they are more than half of them."""
    named = sum(1 for k in keys if k is not None and _named(k))
    return named >= 2 and 2 * named > len(keys)


def violations(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: 'name' (how it is used)`` for each layer name the module decides on."""
    found: dict[tuple[int, int], str] = {}
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare):
            hits, how = [c for operand in (node.left, *node.comparators) for c in _named(operand)], "compared"
        elif isinstance(node, ast.MatchValue):
            hits, how = _named(node.value), "a case pattern"
        elif isinstance(node, ast.Dict) and _is_table(node.keys):
            hits, how = [c for k in node.keys if k is not None for c in _named(k)], "a table key"
        elif isinstance(node, (ast.Set, ast.Tuple, ast.List)) and _is_table(node.elts):
            hits, how = _named(node), "a table entry"
        else:
            continue
        for c in hits:
            found.setdefault((c.lineno, c.col_offset), f"{filename}:{c.lineno}: {c.value!r} ({how})")
    return [found[k] for k in sorted(found)]


def _modules() -> list[Path]:
    """Every module of the package outside cnnc/layers/."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "layers"]


def test_names_come_from_the_registry():
    assert {t.name for t in layer_types()} <= LAYER_NAMES
    assert {"conv", "fc", "relu", "softmax", "maxpool", "add", "concat", "id", "dense", "pool"} <= LAYER_NAMES
    assert not {"sgd", "step", "call", "input", "layer", "cosine"} & LAYER_NAMES
    assert len(_modules()) > 20 and not any("layers" in p.relative_to(PACKAGE).parts[:1] for p in _modules())


def test_no_module_outside_layers_decides_on_a_layer_name():
    found = [v for p in _modules() for v in violations(p.read_text(), str(p.relative_to(PACKAGE.parent)))]
    assert not found, ("layer names compared outside cnnc/layers/; ask the layer type instead (an attribute "
                       "or a method defined next to the layer):\n" + "\n".join(found))


@pytest.mark.parametrize("source", [
    'if x.type.name == "conv":\n    pass',
    'ok = layer_kind(net, n) != "softmax"',
    'ok = kind in ("maxpool", "avgpool")',
    'ok = "relu" not in kinds',
    'ok = kind in {"fc"}',
    'KINKED = frozenset({"relu", "leaky", "maxpool", "maxout"})',
    'TORCH = {"conv": {"weight": "w"}, "bn": {"weight": "gamma"}}',
    'COLOURS = {"input": "#e8e8e8", "conv": "#cfe3f7", "fc": "#f7dccf"}',
    'match kind:\n    case "dropout":\n        pass',
    'ok = t.name == "linear"',  # an alias is a layer name too
])
def test_the_scan_finds_layer_names(source):
    assert violations(source)


@pytest.mark.parametrize("source", [
    'if self.kind == "sgd":\n    pass',
    'ok = b.kind in ("input", "call")',
    'ok = layer_type(net, n).has_filters',
    'rng = {"epoch_start": 1, "shuffle": 2, "augment": 3, "dropout": 4}',
    'data = {"id": b.id, "title": b.title, "layers": b.layers, "shape": []}',
    'state = rng["dropout"]',
    'print("conv")',
])
def test_the_scan_leaves_other_strings(source):
    assert violations(source) == []
