"""Design variables and optional layers (issue 11): ``[[conv3-relu]*N - pool?]*M - fc``.

* A **variable** is any name used as a repetition count or an argument value (``N``,
  ``M``, ``conv3(C)``). Its value comes from ``--set N=2`` (the API's ``variables=``),
  else from a header line ``let N = 2`` (an integer or number expression of variables set
  on earlier lines), else it is an error at the place it is used.
* An **optional layer** ``name?`` (a layer or a definition call) has the switch ``name``:
  ``--set pool=off`` (or ``let pool = off``) leaves every ``pool?`` out, ``pool=on``
  keeps every one (one that does not fit is then an error like any layer's), and unset
  (the default, "auto") keeps each instance unless its own shape rule says it does not fit
  its input or leaves nothing (the "doesn't fit" and "leaves nothing" errors): then that
  instance is left out, later layers see its input, and the report lists what was dropped.
  Other errors of an optional layer, and errors it causes further on, are still errors.
* A **sweep** (``--sweep N=1..3,M=1..4``) checks every combination (the first name varies
  slowest) and reports one row per design: parameters, MACs, output shape, training memory,
  or the positioned error of a design that does not fit.

Errors in ``--set``/``--sweep`` text are positioned in that text (``--set:1:3: error: ...``).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import CnncError, OptionalDoesNotFit, SourceError, Span
from .syntax import BinOp, Branches, Call, ModelAst, Neg, Num, Optional, Ref, Repeat, Seq

Value = int | float | bool  # bool: an optional layer's switch
MAX_DESIGNS = 10_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_ON = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


@dataclass(frozen=True)
class Design:
    """The values of one design: variables (numbers) and optional-layer switches."""

    variables: Mapping[str, int | float] = field(default_factory=dict)
    switches: Mapping[str, bool] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.variables, **{k: ("on" if v else "off") for k, v in self.switches.items()}}


# ---------------------------------------------------------------------------
# --set and --sweep text
# ---------------------------------------------------------------------------


def _span(offset: int, length: int) -> Span:
    return Span(1, offset + 1, offset, offset + max(length, 1), 1, offset + 1 + max(length, 1))


def _err(text: str, flag: str, message: str, offset: int, length: int, hint: str | None = None) -> SourceError:
    return SourceError(message, _span(offset, length), "design", hint=hint, source=text, filename=flag)


def _items(text: str, flag: str):
    """``(name, value text, offset of name, offset of value)`` for each ``NAME=VALUE``."""
    pos = 0
    for part in text.split(","):
        stripped = part.strip()
        start = pos + (len(part) - len(part.lstrip()))
        pos += len(part) + 1
        if not stripped:
            raise _err(text, flag, "empty item", start, 1, hint="write NAME=VALUE items separated by commas")
        if "=" not in stripped:
            raise _err(text, flag, f"'{stripped}' has no '='", start, len(stripped),
                       hint="write NAME=VALUE, e.g. N=2")
        name, value = stripped.split("=", 1)
        if not _NAME.match(name.strip()):
            raise _err(text, flag, f"'{name.strip()}' is not a name", start, len(name))
        voff = start + len(name) + 1 + (len(value) - len(value.lstrip()))
        yield name.strip(), value.strip(), start, voff


def _scalar(text: str, flag: str, value: str, offset: int) -> Value:
    low = value.lower()
    if low in _ON:
        return _ON[low]
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise _err(text, flag, f"'{value}' is not a number or on/off", offset, len(value),
                   hint="variables take numbers (N=2); optional layers take on or off (pool=off)") from None


def parse_assignments(text: str, flag: str = "--set") -> dict[str, tuple[Value, Span]]:
    """``"N=2,M=3,pool=off"`` -> ``{name: (value, span in text)}``."""
    out: dict[str, tuple[Value, Span]] = {}
    for name, value, noff, voff in _items(text, flag):
        if name in out:
            raise _err(text, flag, f"'{name}' is set twice", noff, len(name))
        if not value:
            raise _err(text, flag, f"'{name}' has no value", noff, len(name) + 1)
        out[name] = (_scalar(text, flag, value, voff), _span(noff, len(name)))
    return out


def parse_sweep(text: str) -> tuple[tuple[str, tuple[Value, ...], Span], ...]:
    """``"N=1..3,M=1|2|4,pool=on|off"`` -> ``((name, values, span), ...)``: ``A..B`` is
    every integer from A to B inclusive, ``a|b|c`` the listed values, ``v`` one value."""
    flag = "--sweep"
    out = []
    seen = set()
    for name, value, noff, voff in _items(text, flag):
        if name in seen:
            raise _err(text, flag, f"'{name}' is swept twice", noff, len(name))
        seen.add(name)
        if ".." in value:
            lo_text, hi_text = value.split("..", 1)
            try:
                lo, hi = int(lo_text), int(hi_text)
            except ValueError:
                raise _err(text, flag, f"bad range '{value}': its ends must be integers", voff, len(value),
                           hint="write a range as A..B, e.g. N=1..4") from None
            if hi < lo:
                raise _err(text, flag, f"bad range '{value}': it is empty ({hi} < {lo})", voff, len(value),
                           hint=f"write {hi}..{lo}")
            values: tuple[Value, ...] = tuple(range(lo, hi + 1))
        else:
            values, off = [], voff
            for v in value.split("|"):
                if not v.strip():
                    raise _err(text, flag, f"empty value in '{value}'", off, 1)
                values.append(_scalar(text, flag, v.strip(), off + len(v) - len(v.lstrip())))
                off += len(v) + 1
            values = tuple(values)
        out.append((name, values, _span(noff, len(name))))
    count = 1
    for _, values, _ in out:
        count *= len(values)
    if count > MAX_DESIGNS:
        raise _err(text, flag, f"the sweep has {count:,} designs, more than {MAX_DESIGNS:,}", 0, len(text))
    return tuple(out)


# ---------------------------------------------------------------------------
# the names a model can be designed by
# ---------------------------------------------------------------------------


def _walk(node, counts: set[str], args: set[str], optional: set[str]) -> None:
    if isinstance(node, Optional):
        optional.add(node.body.name)
        _walk(node.body, counts, args, optional)
    elif isinstance(node, Call):
        for a in node.args:
            _refs(a.value, args)
    elif isinstance(node, Repeat):
        for c in node.counts:
            _refs(c, counts)
        _walk(node.body, counts, args, optional)
    elif isinstance(node, (Seq, Branches)):
        for item in node.items:
            _walk(item, counts, args, optional)


def _refs(expr, out: set[str]) -> None:
    if isinstance(expr, Ref):
        out.add(expr.name)
    elif isinstance(expr, BinOp):
        _refs(expr.left, out)
        _refs(expr.right, out)
    elif isinstance(expr, Neg):
        _refs(expr.operand, out)


def design_names(ast: ModelAst) -> tuple[set[str], set[str]]:
    """(variable names, optional-layer names) the model uses: names in repetition counts
    and arguments (less definition parameters), ``let`` names, and ``name?`` switches."""
    counts: set[str] = set()
    args: set[str] = set()
    optional: set[str] = set()
    params: set[str] = set()
    for d in ast.definitions:
        params.update(d.params)
        _walk(d.body, counts, args, optional)
    if ast.network is not None:
        _walk(ast.network, counts, args, optional)
    variables = ((counts | args) - params) | {v.name for v in ast.variables}
    return variables, optional


# ---------------------------------------------------------------------------
# resolving a design and checking it
# ---------------------------------------------------------------------------


def _evaluate(expr, values: Mapping[str, Value], ast: ModelAst) -> Value:
    if isinstance(expr, Num):
        return expr.value
    if isinstance(expr, Ref):
        if expr.name in _ON:
            return _ON[expr.name]
        if expr.name not in values:
            raise SourceError(f"variable '{expr.name}' is not set", expr.span, "variable",
                              hint=f"set it on an earlier `let` line or with --set {expr.name}=...")
        return values[expr.name]
    if isinstance(expr, Neg):
        v = _evaluate(expr.operand, values, ast)
        if isinstance(v, bool):
            raise SourceError("on/off cannot be negated", expr.span, "variable")
        return -v
    a, b = _evaluate(expr.left, values, ast), _evaluate(expr.right, values, ast)
    for v, part in ((a, expr.left), (b, expr.right)):
        if isinstance(v, bool):
            raise SourceError("on/off is not a number", part.span, "variable")
    return expr.apply(a, b, "variable")


def resolve_design(ast: ModelAst, given: Mapping[str, Value] | str | None = None,
                   flag: str = "--set") -> Design:
    """The design of ``ast`` with ``given`` values (``--set`` text or a mapping) over its
    ``let`` lines. Raises SourceError (in the model text, or in the ``--set`` text)."""
    spans: dict[str, Span] = {}
    text = ""
    if isinstance(given, str):
        text = given
        parsed = parse_assignments(given, flag)
        given = {k: v for k, (v, _) in parsed.items()}
        spans = {k: s for k, (_, s) in parsed.items()}
    given = {k: (_ON[v.lower()] if isinstance(v, str) and v.lower() in _ON else v)
             for k, v in (given or {}).items()}
    variables, optional = design_names(ast)
    for name, v in given.items():
        where = spans.get(name)
        if name not in variables and name not in optional:
            known = sorted(variables | optional)
            close = difflib.get_close_matches(name, known, n=1)
            hint = (f"did you mean '{close[0]}'? " if close else "") + (
                f"its variables and optional layers: {', '.join(known)}" if known
                else "it has no variables (N in [..]*N) and no optional layers (pool?)")
            raise _given_error(f"the model has no variable or optional layer '{name}'", where, text, flag, hint)
        if name in optional and not isinstance(v, bool):
            raise _given_error(f"'{name}' is an optional layer: set it to on or off, not {v!r}",
                               where, text, flag, None)
        if name not in optional and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _given_error(f"variable '{name}' takes a number, not {v!r}", where, text, flag, None)
    values: dict[str, Value] = {}
    try:
        for var in ast.variables:
            values[var.name] = given[var.name] if var.name in given else _evaluate(var.value, values, ast)
            if isinstance(values[var.name], bool) and var.name not in optional:
                raise SourceError(f"'{var.name}' is not an optional layer, so it cannot be on or off",
                                  var.name_span, "variable",
                                  hint="on/off switches optional layers written name?, e.g. pool?")
    except SourceError as err:
        raise err.with_source(ast.source, ast.filename)
    values.update(given)
    return Design(MappingProxyType({k: v for k, v in values.items() if not isinstance(v, bool)}),
                  MappingProxyType({k: v for k, v in values.items() if isinstance(v, bool)}))


def _given_error(message: str, where: Span | None, text: str, flag: str, hint: str | None) -> CnncError:
    if where is None:
        from ..errors import UsageError

        return UsageError(message, hint=hint)
    return SourceError(message, where, "design", hint=hint, source=text, filename=flag)


@dataclass(frozen=True)
class Dropped:
    """An optional layer instance left out because it did not fit."""

    text: str  # e.g. "pool?"
    line: int
    column: int
    reason: str  # the error it would have raised
    notes: tuple[str, ...]

    def describe(self) -> str:
        where = "".join(f" ({n})" for n in self.notes)
        return f"{self.text} at {self.line}:{self.column}{where}: {self.reason}"


def check_design(ast: ModelAst, design: Design, input_shape, classes, width: int):
    """Build and check the design: ``(graph, analysis, dropped)``. Each optional instance
    whose own shape rule fails with "does not fit" or "leaves nothing" is left out and the
    design checked again (at most once per optional instance)."""
    from .graph import build
    from .infer import infer

    dropped: dict[tuple, Dropped] = {}
    while True:
        graph = build(ast, design.variables, design.switches, frozenset(dropped))
        try:
            analysis = infer(graph, input_shape, classes, width, source=ast.source, filename=ast.filename)
        except OptionalDoesNotFit as err:
            if err.key in dropped:  # pragma: no cover - the builder leaves dropped keys out
                raise
            text = ast.source[err.key[0]:].split("?", 1)[0].strip() + "?"
            start = err.key[0]
            line = ast.source.count("\n", 0, start) + 1
            column = start - (ast.source.rfind("\n", 0, start) + 1) + 1
            dropped[err.key] = Dropped(text, line, column, err.message, tuple(err.notes))
            continue
        return graph, analysis, tuple(dropped.values())


# ---------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------
