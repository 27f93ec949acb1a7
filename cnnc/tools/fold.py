"""A layer sequence written the way lectures write it: ``cnnc import``'s text.

Input: the series-parallel structure of :func:`cnnc.tools.onnx_import.structure`, a list
of layers (objects with ``kind``, the name as written, ``suffix``, ``args`` and ``type``, the
:class:`cnnc.layers.LayerType`) and branch groups (``sums``, ``branches``). Output: model text in three moves.

1. **Blocks.** A branch group with the activations right after it is a *block*
   (ResNet's ``( ... + id ) - relu``, an Inception module). Blocks whose text is the same
   up to the integers in it (filters, strides, paddings, groups) become one definition;
   an integer that differs between the calls becomes a parameter, one that is a whole
   multiple of another parameter in every call is written as that multiple (``4*c``), and
   one that is the same in every call stays a number. A block that occurs once stays
   inline.
2. **Repetition.** In every sequence the longest run of equal consecutive groups is
   folded into ``x*N`` or ``[a - b]*N``, again and again, inner runs first, so
   ``conv3-relu-conv3-relu-pool`` three times is ``[[conv3(64) - relu]*2 - pool]*3``
   (with equal arguments).
3. **Layout.** Defaults are never written (``conv3(64)``, not ``conv3(64, stride=1,
   pad=1)``): the importer leaves them out of each layer's arguments. Lines are wrapped
   after `` - `` at about 96 characters; a long definition puts one branch per line.
"""
from __future__ import annotations

from typing import Any, Callable

WRAP = 96
PARAM_BASE = {"": "c", "stride": "s", "pad": "p", "groups": "g", "dilation": "d"}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def layer_text(node, slot: Callable[[str, int, bool], str | None] | None = None, last_fc: bool = False,
               loose: bool = False) -> str:
    """``conv3(64, stride=2, bias=false)``; ``slot(arg, value, is_default)`` may replace an
    integer argument by a parameter expression (definitions), or leave it out (None).
    ``loose``: a conv's stride and pad are offered to ``slot`` even where they are defaults."""
    suffix = getattr(node, "suffix", ())
    name = node.kind + "x".join(str(s) for s in suffix)
    explicit = getattr(node, "explicit", None)
    args = explicit if loose and explicit is not None else [(k, v, False) for k, v in node.args]
    parts = []
    for i, (key, v, default) in enumerate(args):
        if last_fc and key == "" and i == 0:  # the last fc: `classes` outputs
            continue
        text = slot(key, v, default) if slot is not None and isinstance(v, int) and not isinstance(v, bool) \
            else _value(v)
        if text is None:
            continue
        parts.append(text if key == "" else f"{key}={text}")
    return name + (f"({', '.join(parts)})" if parts else "")


# ---------------------------------------------------------------------------


def _is_branches(item) -> bool:
    return hasattr(item, "branches")


def _render(items: list, slot=None, last_fc=None, loose: bool = False) -> list[str]:
    """Tokens of a sequence: one per layer or branch group (no folding)."""
    out = []
    for it in items:
        if _is_branches(it):
            sep = " + " if it.sums else " | "
            parts = [" - ".join(fold(_render(b, slot, last_fc, loose))) if b else "id" for b in it.branches]
            out.append(_tok("( " + sep.join(parts) + " )", True))
        else:
            out.append(_tok(layer_text(it, slot, last_fc is it, loose), bool(it.params)))
    return out


def _units(items: list) -> list[tuple[int, int]]:
    """(start, end) of every block: a branch group and the activations after it."""
    units, i = [], 0
    while i < len(items):
        if _is_branches(items[i]):
            j = i + 1
            while j < len(items) and not _is_branches(items[j]) and items[j].type.is_activation:
                j += 1
            units.append((i, j))
            i = j
        else:
            i += 1
    return units


def _skeleton(items: list, loose: bool = False) -> tuple[str, list[tuple[str, int, bool]]]:
    """The blocks' text with every integer a ``{}``, and the integers (arg, value, is default)."""
    found: list[tuple[str, int, bool]] = []

    def slot(key, v, default):
        found.append((key, v, default))
        return "{}"

    return " - ".join(_render(items, slot, loose=loose)), found


def _block_name(items: list, taken: set[str]) -> str:
    b = items[0]
    has_id = any(not br for br in b.branches)
    if b.sums:
        base = "res" if has_id else "down"
    else:
        base = "denselayer" if has_id else "inception" if len(b.branches) >= 3 else "split"
    from ..layers import registry

    name, k = base, 2
    while name in taken or name in registry():  # `dense` is an alias of fc
        name, k = f"{base}{k}", k + 1
    taken.add(name)
    return name


def _parameters(columns: list[tuple[str, tuple[int, ...], bool]]):
    """For each integer slot: a literal, a parameter expression, or None (left out: the
    same default in every call); and the parameters (name, slot whose values it takes)."""
    exprs: list[str | None] = [None] * len(columns)
    distinct: dict[tuple[int, ...], list[int]] = {}
    for j, (key, vals, default) in enumerate(columns):
        if len(set(vals)) == 1:
            exprs[j] = None if default else str(vals[0])
        else:
            distinct.setdefault(vals, []).append(j)
    # the smallest values first: a column that is a whole multiple of one of them is
    # written as that multiple (4*c); parameters are named in the order the text uses them
    bases: list[tuple[tuple[int, ...], int]] = []  # (values, first slot)
    derived: dict[tuple[int, ...], tuple[int, int]] = {}  # values -> (factor, base index)
    for vals in sorted(distinct, key=lambda v: (sum(v), distinct[v][0])):
        for b, (bvals, _) in enumerate(bases):
            if all(x > 0 for x in bvals) and all(v % x == 0 for v, x in zip(vals, bvals)):
                ks = {v // x for v, x in zip(vals, bvals)}
                if len(ks) == 1 and min(ks) >= 2:
                    derived[vals] = (ks.pop(), b)
                    break
        else:
            bases.append((vals, distinct[vals][0]))
    first_use = {b: min(min(distinct[bvals]), *(min(distinct[v]) for v, (_, bb) in derived.items() if bb == b))
                 if any(bb == b for _, bb in derived.values()) else min(distinct[bvals])
                 for b, (bvals, _) in enumerate(bases)}
    names: dict[int, str] = {}
    used: set[str] = set()
    for b in sorted(first_use, key=first_use.get):
        base = PARAM_BASE.get(columns[bases[b][1]][0], "a")
        name, k = base, 2
        while name in used:
            name, k = f"{base}{k}", k + 1
        used.add(name)
        names[b] = name
    for b, (bvals, _) in enumerate(bases):
        for j in distinct[bvals]:
            exprs[j] = names[b]
    for vals, (factor, b) in derived.items():
        for j in distinct[vals]:
            exprs[j] = f"{factor}*{names[b]}"
    # parameters in the order they first appear in the text
    params = sorted(((names[b], bslot) for b, (_, bslot) in enumerate(bases)), key=lambda p: first_use[
        next(b for b in names if names[b] == p[0])])
    params = [(name, next(j for j, e in enumerate(exprs) if e == name) if name in exprs else slot)
              for name, slot in params]
    return exprs, params


def _definitions(items: list) -> tuple[list[Any], list[str]]:
    """Replace repeated blocks of the top-level sequence by calls; return the new item
    list (calls are strings) and the definition lines."""
    units = _units(items)
    groups: dict[str, list[tuple[int, int, list]]] = {}
    for s, e in units:
        skel, found = _skeleton(items[s:e])
        groups.setdefault(skel, []).append((s, e, found))
    # groups that differ only in a conv's stride or pad written or not (a default) share one
    # definition in which they are written: ResNet-50's first block and the strided ones
    loose: dict[str, list[str]] = {}
    for skel, occ in groups.items():
        loose.setdefault(_skeleton(items[occ[0][0]:occ[0][1]], loose=True)[0], []).append(skel)
    plans: list[tuple[list, bool]] = []
    for lskel, skels in loose.items():
        if len(skels) >= 2:
            occ = sorted((s, e, _skeleton(items[s:e], loose=True)[1]) for sk in skels for s, e, _ in groups[sk])
            plans.append((occ, True))
        elif len(groups[skels[0]]) >= 2:
            plans.append((groups[skels[0]], False))
    plans.sort(key=lambda p: p[0][0][0])
    replace: dict[int, tuple[int, str]] = {}
    defs: list[str] = []
    taken: set[str] = set()
    for occ, is_loose in plans:
        first = items[occ[0][0]:occ[0][1]]
        name = _block_name(first, taken)
        columns = [(occ[0][2][j][0], tuple(o[2][j][1] for o in occ), all(o[2][j][2] for o in occ))
                   for j in range(len(occ[0][2]))]
        exprs, params = _parameters(columns)
        it = iter(exprs)
        body = " - ".join(_render(first, lambda key, v, default: next(it), loose=is_loose))
        head = f"{name}({', '.join(p for p, _ in params)})" if params else name
        defs.append(_definition_text(head, body))
        for s, e, found in occ:
            call = f"{name}({', '.join(str(found[j][1]) for _, j in params)})" if params else name
            replace[s] = (e, call)
    out, i = [], 0
    while i < len(items):
        if i in replace:
            e, call = replace[i]
            out.append(call)
            i = e
        else:
            out.append(items[i])
            i += 1
    return out, defs


def _definition_text(head: str, body: str) -> str:
    line = f"{head} = {body}"
    if len(line) <= WRAP + 8:
        return line
    # one branch per line: split the outermost group at its top-level separators
    depth, cuts = 0, []
    for k, ch in enumerate(body):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch in "|+" and depth == 1 and body[k - 1] == " " and body[k + 1] == " ":
            cuts.append(k)
    if not body.startswith("(") or not cuts:
        return head + " =\n    " + _wrap_tokens(body.split(" - "), "    ")
    pieces, prev = [], 0
    for k in cuts:
        pieces.append(body[prev:k].rstrip())
        prev = k
    pieces.append(body[prev:])
    return head + " =\n    " + "\n    ".join(pieces)


class Tok(str):
    """A token of a sequence; ``head``: it can start a group (a layer with weights, a block,
    a call), so ``conv3 - relu`` repeats as ``[conv3 - relu]*2``, not ``[relu - conv3]*2``."""

    head = True


def _tok(text: str, head: bool) -> Tok:
    t = Tok(text)
    t.head = head
    return t


def fold(tokens: list[str]) -> list[str]:
    """Fold runs of equal consecutive groups until none is left: the shortest group first
    (inner runs before the runs they make up: ``[[conv3 - relu]*2 - pool]*2``), among those
    one that starts with a head token, then the longest run, then the first."""
    tokens = [t if isinstance(t, Tok) else _tok(t, True) for t in tokens]
    while True:
        best = None
        n = len(tokens)
        for p in range(1, n // 2 + 1):
            for i in range(0, n - 2 * p + 1):
                pat = tokens[i:i + p]
                k = 1
                while tokens[i + k * p:i + (k + 1) * p] == pat:
                    k += 1
                if k >= 2:
                    key = (not pat[0].head, -k, i)
                    if best is None or key < best[0]:
                        best = (key, i, p, k)
            if best is not None:
                break
        if best is None:
            return tokens
        _, i, p, k = best
        pat = tokens[i:i + p]
        if p == 1:
            group = f"{pat[0]}*{k}"
        else:
            group = f"[{' - '.join(fold(pat))}]*{k}"
        tokens[i:i + k * p] = [_tok(group, pat[0].head)]


def _wrap_tokens(tokens: list[str], indent: str) -> str:
    lines, cur = [], ""
    for t in tokens:
        piece = t if not cur else cur + " - " + t
        if cur and len(indent + piece) > WRAP:
            lines.append(cur + " -")
            cur = t
        else:
            cur = piece
    lines.append(cur)
    return ("\n" + indent).join(lines)


def render(items: list, input_shape: tuple[int, ...], classes: int | None, header: dict[str, Any]) -> str:
    """The model text of ``items`` (see the module notes)."""
    last_fc = None
    if classes is not None:
        tail = [it for it in items if not _is_branches(it)]
        for it in reversed(tail):
            if it.type.takes_classes:
                last_fc = it if it.args and it.args[0][1] == classes else None
                break
    top, defs = _definitions(items)
    tokens = []
    for it in top:
        tokens += [it] if isinstance(it, str) else _render([it], last_fc=last_fc)
    body = _wrap_tokens(fold(tokens), "    ")
    lines = [f"# imported by cnnc from {header['source']}: {header['params']:,} parameters",
             f"input {'x'.join(map(str, input_shape))}"]
    if classes is not None:
        lines.append(f"classes {classes}")
    lines.append("")
    if defs:
        lines += defs + [""]
    lines.append(body)
    return "\n".join(lines) + "\n"


__all__ = ["render", "fold", "layer_text"]
