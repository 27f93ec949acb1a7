"""AST -> layer graph: repetitions and definitions expanded, names resolved.

Every node is one layer instance (its own weights). Node attributes:

* ``layer``: a :class:`LayerNode` (type, resolved configuration, source span, trace);
* ``optional``: for a layer made by an optional ``pool?`` whose switch is not forced on,
  the key of that optional instance (:func:`optional_key`), else None;

Node attribute ``inputs`` is the ordered tuple of input nodes (the branch order of a
merge; a node may appear twice, as in ``( id | id )``); edges carry ``slot``, the
position of their first use. The node ``"input"`` is the network input; the graph attribute
``output`` names the last node. The graph is frozen: later stages read it and keep what
they compute in their own values (:class:`cnnc.lang.infer.Analysis`, :class:`cnnc.runtime.lower.Plan`).

The stages read it as a :class:`LayerGraph`, a frozen DAG with the few networkx ``DiGraph``
reads they need (``nodes[n]``, ``successors``, ``predecessors``, ``graph``, ``edges``).
Users get the same graph as a frozen networkx ``DiGraph`` (:meth:`LayerGraph.to_networkx`,
``Model.graph``). networkx is imported only then: importing it takes longer than parsing,
building and checking ResNet-50 together, and ``cnnc check`` never needs it (issue 8).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from ..errors import SourceError, Span
from ..layers import REQUIRED, LayerError, LayerType, registry, resolve_name, suffix_base
from ..layers.base import SUFFIX_RE, ArgSpec
from .syntax import (Arg, ArgExpr, BinOp, Branches, Call, Definition, ModelAst, Neg, Num, Optional, Ref,
                     Repeat, Seq)

MAX_LAYERS = 20_000
MAX_STEPS = 200_000  # expansion steps (layers, ids, calls, repetitions): `[[id*1000]*1000]*1000`
INPUT = "input"


def did_you_mean(name: str, extra: list[str] = ()) -> list[str]:
    """Close matches for an unknown layer name; a size suffix is kept (``cnov3`` -> ``conv3``)."""
    reg = registry()
    names = sorted(k for k, v in reg.items() if not v.internal) + list(extra)
    found = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    m = SUFFIX_RE.match(name)
    if m:
        sized = sorted(k for k, v in reg.items() if not v.internal and v.suffix)
        with_suffix = [b + m.group(2) for b in difflib.get_close_matches(m.group(1), sized, n=3, cutoff=0.6)]
        found = with_suffix + [f for f in found if f not in with_suffix and f not in sized]
    return found[:3]


@dataclass(frozen=True)
class Frame:
    """One step of "how this layer was reached": a repetition or a definition call."""

    kind: str  # "repeat" | "call"
    text: str
    span: Span
    index: int = 0
    count: int = 0

    def note(self) -> str:
        if self.kind == "repeat":
            return f"in repetition {self.index} of {self.text}, line {self.span.line}"
        return f"in {self.text}, called at line {self.span.line}:{self.span.column}"


@dataclass(frozen=True)
class LayerNode:
    """A layer instance in the graph."""

    id: str
    type: LayerType
    config: Any
    span: Span
    text: str  # the source text of the layer, e.g. conv3(64, stride=2)
    trace: tuple[Frame, ...] = ()  # outermost first
    branch_spans: tuple[Span, ...] = ()  # merges: the span of each branch
    arg_spans: tuple[tuple[str, Span], ...] = ()  # where each written argument is

    def notes(self) -> tuple[str, ...]:
        return tuple(f.note() for f in reversed(self.trace))

    def error(self, err: LayerError, span: Span | None = None) -> SourceError:
        """The SourceError for a shape rule's error: at the argument it names, if written."""
        if span is None and err.arg:
            span = dict(self.arg_spans).get(err.arg)
        return SourceError(err.message, span or self.span, err.kind, hint=err.hint, notes=self.notes())


def optional_key(node: Optional, trace) -> tuple:
    """Which instance of an optional layer this is: its place in the text and the
    repetitions and calls it was expanded in (stable when other instances are dropped)."""
    return (node.span.start, tuple((f.span.start, f.index) for f in trace))


def unset_variable(name: str, span: Span) -> SourceError:
    return SourceError(f"variable '{name}' is not set", span, "variable",
                       hint=f"set it with --set {name}=2 or a header line `let {name} = 2`")


def _snippet(source: str, span: Span, limit: int = 32) -> str:
    text = " ".join(source[span.start:span.end].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LayerGraph:
    """A layer graph: nodes in insertion order, which is topological (a layer is added after
    its inputs), each with an attribute dict; edges ``src -> dst`` with a ``slot``; graph
    attributes in :attr:`graph`. Built by :func:`build`, read-only afterwards (:meth:`freeze`)."""

    __slots__ = ("_nodes", "_succ", "_pred", "_frozen", "nodes", "graph")

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, Any]] = {}
        self._succ: dict[str, dict[str, dict[str, Any]]] = {}  # src -> {dst: edge attributes}
        self._pred: dict[str, dict[str, dict[str, Any]]] = {}
        self._frozen = False
        self.nodes: Mapping[str, dict[str, Any]] = MappingProxyType(self._nodes)
        self.graph: dict[str, Any] = {}

    def add_node(self, node: str, **attrs: Any) -> None:
        self._check_mutable()
        if node in self._nodes:
            raise ValueError(f"node {node!r} is already in the graph")
        self._nodes[node] = dict(attrs)
        self._succ[node] = {}
        self._pred[node] = {}

    def add_edge(self, src: str, dst: str, **attrs: Any) -> None:
        self._check_mutable()
        if src not in self._nodes or dst not in self._nodes:
            raise ValueError(f"edge {src!r} -> {dst!r}: both ends must be nodes already")
        edge = self._succ[src].setdefault(dst, {})
        edge.update(attrs)
        self._pred[dst][src] = edge

    def freeze(self) -> LayerGraph:
        """Make the graph read-only (its structure and graph attributes) and return it."""
        self._frozen = True
        self.graph = MappingProxyType(self.graph)  # type: ignore[assignment]
        return self

    def _check_mutable(self) -> None:
        if self._frozen:
            raise TypeError("the layer graph is frozen")

    def has_edge(self, src: str, dst: str) -> bool:
        return dst in self._succ.get(src, ())

    def successors(self, node: str) -> Iterator[str]:
        return iter(self._succ[node])

    def predecessors(self, node: str) -> Iterator[str]:
        return iter(self._pred[node])

    @property
    def edges(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(src, dst, attributes)`` for every edge, by source in node order."""
        return [(u, v, d) for u, nbrs in self._succ.items() for v, d in nbrs.items()]

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def number_of_nodes(self) -> int:
        return len(self._nodes)

    def number_of_edges(self) -> int:
        return sum(len(nbrs) for nbrs in self._succ.values())

    def to_networkx(self):
        """The same graph as a frozen ``networkx.DiGraph``: the same nodes in the same order,
        the same node, edge and graph attributes."""
        import networkx as nx

        g = nx.DiGraph()
        g.graph.update(self.graph)
        for n, attrs in self._nodes.items():
            g.add_node(n, **attrs)
        g.add_edges_from(self.edges)
        return nx.freeze(g)


class _Builder:
    def __init__(self, ast: ModelAst, variables: Mapping[str, int | float] | None = None,
                 switches: Mapping[str, bool] | None = None, dropped: frozenset = frozenset()):
        self.variables = dict(variables or {})  # design variables (issue 11): N, M, ...
        self.switches = dict(switches or {})  # optional layers by name: True on, False off
        self.dropped = dropped  # optional instances left out because they did not fit
        self.optional = None  # the key of the optional instance being expanded
        self.ast = ast
        self.source = ast.source
        self.graph = LayerGraph()
        self.graph.add_node(INPUT, layer=None)
        self.counts: dict[str, int] = {}
        self.defs: dict[str, Definition] = {}
        self.layers = 0
        self.steps = 0

    # ---- definitions
    def read_definitions(self) -> None:
        for d in self.ast.definitions:
            if d.name in self.defs:
                first = self.defs[d.name].span
                raise SourceError(f"definition '{d.name}' is defined twice (first on line {first.line})",
                                  d.head_span, "definition")
            if resolve_name(d.name) is not None or d.name in registry():
                raise SourceError(f"definition '{d.name}' would hide the built-in layer '{d.name}'",
                                  d.head_span, "definition", hint="choose another name")
            self.defs[d.name] = d
        done: set[str] = set()
        for d in self.ast.definitions:
            self._check_recursion(d, [d.name], done)

    def _calls(self, node) -> list[Call]:
        if isinstance(node, Call):
            return [node]
        if isinstance(node, (Seq, Branches)):
            return [c for item in node.items for c in self._calls(item)]
        if isinstance(node, (Repeat, Optional)):
            return self._calls(node.body)
        return []

    def _check_recursion(self, d: Definition, path: list[str], done: set[str] | None = None) -> None:
        """Refuse cycles of definitions; each definition is explored once (no blow-up on
        a chain like d2 = d1 - d1, d3 = d2 - d2, ...)."""
        done = set() if done is None else done
        if d.name in done:
            return
        for call in self._calls(d.body):
            if call.name not in self.defs:
                continue
            if call.name in path:
                cycle = path[path.index(call.name):] + [call.name]
                raise SourceError(f"definition '{cycle[0]}' is recursive ({' -> '.join(cycle)})",
                                  call.name_span, "definition",
                                  hint="a definition cannot use itself, directly or "
                                       "through another definition; use [..]*N to repeat")
            self._check_recursion(self.defs[call.name], path + [call.name], done)
        done.add(d.name)

    # ---- values
    def evaluate(self, expr: ArgExpr, env: dict[str, Any]) -> Any:
        if isinstance(expr, Num):
            return expr.value
        if isinstance(expr, Ref):
            if expr.name in env:
                return env[expr.name]
            return self.variables.get(expr.name, expr.name)
        if isinstance(expr, Neg):
            v = self.evaluate(expr.operand, env)
            if not isinstance(v, (int, float)):
                raise SourceError(f"cannot negate '{v}'", expr.span, "argument")
            return -v
        assert isinstance(expr, BinOp)
        a, b = self.evaluate(expr.left, env), self.evaluate(expr.right, env)
        for v, part in ((a, expr.left), (b, expr.right)):
            if not isinstance(v, (int, float)):
                raise SourceError(f"'{v}' is not a number", part.span, "argument",
                                  hint=self._param_hint(env))
        return expr.apply(a, b, "argument")

    def _param_hint(self, env: dict[str, Any]) -> str | None:
        params = env.get("__params__")
        if params:
            return f"the parameters of {env['__def__']} are: {', '.join(params)}"
        return None

    # ---- argument binding
    def bind(self, layer: LayerType, call: Call, env: dict[str, Any],
             suffix: tuple[int, ...] | None) -> tuple[dict[str, Any], dict[str, Span]]:
        """Arguments by name (defaults filled in) and where each given one was written."""
        specs = {a.name: a for a in layer.args}
        positional = [a for a in layer.args if a.positional]
        values: dict[str, Any] = {}
        where: dict[str, Span] = {}
        pos_index = 0
        for arg in call.args:
            if arg.name is None:
                if pos_index >= len(positional):
                    n = len(positional)
                    raise SourceError(
                        f"{layer.name} takes {'no' if n == 0 else f'at most {n}'} positional "
                        f"argument{'s' if n != 1 else ''}", arg.span, "argument",
                        hint=self._usage(layer))
                spec = positional[pos_index]
                pos_index += 1
            else:
                spec = specs.get(arg.name)
                if spec is None:
                    import difflib

                    close = difflib.get_close_matches(arg.name, list(specs), n=1)
                    raise SourceError(
                        f"{layer.name} has no argument '{arg.name}'", arg.span, "argument",
                        hint=(f"did you mean '{close[0]}'? " if close else "") + self._usage(layer))
            if spec.name in values:
                raise SourceError(f"argument '{spec.name}' of {layer.name} is given twice", arg.span,
                                  "argument")
            value = self.evaluate(arg.value, env)
            if (isinstance(value, str) and isinstance(arg.value, Ref) and spec.kind in ("int", "float", "size")
                    and not env.get("__params__")):
                raise unset_variable(value, arg.value.span)
            values[spec.name] = self._convert(spec, value, arg, layer, env)
            where[spec.name] = arg.span
        if suffix is not None and layer.suffix:
            if layer.suffix in values:
                raise SourceError(f"the size of {call.name} is given twice (suffix and {layer.suffix}=)",
                                  where[layer.suffix], "argument")
            if min(suffix) < 1:
                raise SourceError(f"window size must be at least 1 in {call.name}", call.name_span,
                                  "argument")
            values[layer.suffix] = suffix
        for spec in layer.args:
            if spec.name not in values:
                if spec.default is REQUIRED:
                    raise SourceError(f"{layer.name} needs the argument '{spec.name}'", call.span,
                                      "argument", hint=self._usage(layer))
                values[spec.name] = spec.default
        return values, where

    @staticmethod
    def _usage(layer: LayerType) -> str:
        parts = []
        for a in layer.args:
            if a.name == layer.suffix:
                continue
            parts.append(a.name if a.positional else f"{a.name}=")
        sfx = "N" if layer.suffix else ""
        return f"usage: {layer.name}{sfx}({', '.join(parts)})" if parts else f"usage: {layer.name}{sfx}"

    def _convert(self, spec: ArgSpec, v: Any, arg: Arg, layer: LayerType, env) -> Any:
        def bad(expected: str) -> SourceError:
            hint = None
            if isinstance(v, str) and env.get("__params__"):
                hint = f"'{v}' is not a parameter of {env['__def__']} (its parameters: {', '.join(env['__params__'])})"
            return SourceError(f"argument '{spec.name}' of {layer.name} must be {expected}, got {v!r}",
                               arg.span, "argument", hint=hint)

        def in_range(x):
            if spec.minimum is not None and x < spec.minimum:
                raise bad(spec.describe())
            if spec.maximum is not None and x > spec.maximum:
                raise bad(spec.describe())
            return x

        if spec.kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(spec.describe())
            return in_range(v)
        if spec.kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(spec.describe())
            return float(in_range(v))
        if spec.kind == "bool":
            if v in ("true", "false"):
                return v == "true"
            if v in (0, 1):
                return bool(v)
            raise bad(spec.describe())
        if spec.kind == "pad":
            if v in ("same", "valid"):
                return v
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                return v
            raise bad(spec.describe())
        if spec.kind == "choice":
            if v in spec.choices:
                return v
            raise bad(spec.describe())
        if spec.kind == "size":
            if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
                return (v,)  # one size: square on images, the window length on sequences
            raise bad("a window size >= 1")
        raise AssertionError(spec.kind)

    # ---- expansion
    def new_id(self, base: str) -> str:
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        return f"{base}_{n}"

    def add_layer(self, layer: LayerType, config: Any, span: Span, text: str, trace, inputs: list[str],
                  branch_spans: tuple[Span, ...] = (), arg_spans: tuple = ()) -> str:
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise SourceError(f"the network expands to more than {MAX_LAYERS:,} layers", span, "size",
                              hint="check the repetition counts")
        node_id = self.new_id(layer.name)
        self.graph.add_node(node_id, layer=LayerNode(node_id, layer, config, span, text, tuple(trace),
                                                     branch_spans, tuple(arg_spans)),
                            inputs=tuple(inputs), optional=self.optional)
        for slot, src in enumerate(inputs):
            if not self.graph.has_edge(src, node_id):
                self.graph.add_edge(src, node_id, slot=slot)
        return node_id

    def step(self, span: Span) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SourceError(f"the network takes more than {MAX_STEPS:,} steps to expand", span, "size",
                              hint="check the repetition counts")

    def expand(self, node, src: str, env: dict[str, Any], trace: list[Frame], stack: list[str]) -> str:
        try:
            return self._expand(node, src, env, trace, stack)
        except SourceError as err:
            # an argument error inside a definition or a repetition: say where it was expanded
            if not err.notes and trace:
                err.notes = tuple(f.note() for f in reversed(trace))
            raise

    def _expand(self, node, src: str, env: dict[str, Any], trace: list[Frame], stack: list[str]) -> str:
        self.step(node.span)
        if isinstance(node, Seq):
            for item in node.items:
                src = self.expand(item, src, env, trace, stack)
            return src
        if isinstance(node, Repeat):
            count = 1
            for c in node.counts:
                v = self.evaluate(c, env)
                if isinstance(v, str) and isinstance(c, Ref) and not env.get("__params__"):
                    raise unset_variable(v, c.span)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise SourceError(f"a repetition count must be an integer, got {v!r}", c.span,
                                      "argument", hint=self._param_hint(env))
                if v < 1:
                    raise SourceError(f"a repetition count must be at least 1, got {v}", c.span, "argument")
                count *= v
                if count > MAX_LAYERS:
                    raise SourceError(f"repetition count {count:,} is too large", c.span, "size")
            body = node.body
            label = (f"{_snippet(self.source, body.span)}*{count}" if isinstance(body, Call)
                     else f"[..]*{count}")
            for i in range(count):
                frame = Frame("repeat", label, node.span, i + 1, count)
                src = self.expand(body, src, env, trace + [frame], stack)
            return src
        if isinstance(node, Optional):
            return self.expand_optional(node, src, env, trace, stack)
        if isinstance(node, Branches):
            outs = [self.expand(b, src, env, trace, stack) for b in node.items]
            layer = next(t for t in registry().values() if t.branch_form == node.kind)
            return self.add_layer(layer, layer.config_class(), node.span,
                                  _snippet(self.source, node.span), trace, outs,
                                  tuple(b.span for b in node.items))
        assert isinstance(node, Call)
        return self.expand_call(node, src, env, trace, stack)

    def expand_optional(self, node: Optional, src: str, env, trace, stack) -> str:
        """``pool?``: left out when its switch is off (``--set pool=off``) or when this
        instance was dropped for not fitting; otherwise expanded with its layers marked
        optional, unless the switch is forced on (then it must fit like any layer)."""
        switch = self.switches.get(node.body.name)
        key = optional_key(node, trace)
        if switch is False or (switch is None and key in self.dropped):
            return src
        outer = self.optional
        self.optional = None if switch else (outer or key)
        try:
            return self.expand(node.body, src, env, trace, stack)
        finally:
            self.optional = outer

    def expand_call(self, call: Call, src: str, env, trace, stack) -> str:
        d = self.defs.get(call.name)
        if d is not None:
            if call.name in stack:  # guarded statically, kept as a safety net
                raise SourceError(f"definition '{call.name}' is recursive", call.name_span, "definition")
            if any(a.name is not None for a in call.args):
                kw = next(a for a in call.args if a.name is not None)
                raise SourceError(f"definition '{d.name}' takes its arguments by position", kw.span,
                                  "definition", hint=f"{d.name} is defined on line {d.span.line} as "
                                                     f"{_snippet(self.source, d.head_span, 60)}")
            if len(call.args) != len(d.params):
                n = len(d.params)
                raise SourceError(
                    f"definition '{d.name}' takes {n} argument{'s' if n != 1 else ''}, "
                    f"{len(call.args)} given", call.span, "definition",
                    hint=f"{d.name} is defined on line {d.span.line} as "
                         f"{_snippet(self.source, d.head_span, 60)}")
            new_env = {p: self.evaluate(a.value, env) for p, a in zip(d.params, call.args)}
            for p, a in zip(d.params, call.args):  # an unset design variable passed to a definition
                if isinstance(new_env[p], str) and isinstance(a.value, Ref) and not env.get("__params__") \
                        and a.value.name not in _SYMBOLS:
                    raise unset_variable(a.value.name, a.value.span)
            new_env["__params__"] = d.params
            new_env["__def__"] = d.name
            label = _snippet(self.source, call.span, 40)
            frame = Frame("call", label, call.span)
            return self.expand(d.body, src, new_env, trace + [frame], stack + [call.name])
        resolved = resolve_name(call.name)
        if resolved is None:
            base = suffix_base(call.name)
            if base is not None and not base.suffix:
                raise SourceError(f"{base.name} takes no size suffix", call.name_span, "unknown-layer",
                                  hint=f"write {base.name}" + (f"; {self._usage(base)}" if base.args else ""))
            if call.name in registry():  # internal layer names
                raise SourceError(f"'{call.name}' is not a layer you can write", call.name_span,
                                  "unknown-layer", hint="branches are merged with ( a | b ) or ( a + b )")
            close = did_you_mean(call.name, list(self.defs))
            raise SourceError(f"unknown layer '{call.name}'", call.name_span, "unknown-layer",
                              hint=(f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                                    else "run `cnnc layers` for the list of layers"))
        layer = resolved.layer
        values, where = self.bind(layer, call, env, resolved.suffix)
        try:
            config = layer.make_config(values)
        except LayerError as err:
            span = where.get(err.arg, call.span) if err.arg else call.span
            raise SourceError(err.message, span, err.kind, hint=err.hint,
                              notes=tuple(f.note() for f in reversed(trace))) from None
        if layer.elided:
            return src
        return self.add_layer(layer, config, call.span, _snippet(self.source, call.span, 60), trace, [src],
                              arg_spans=tuple(where.items()))


_SYMBOLS = frozenset({"same", "valid", "default", "true", "false", "floor", "ceil", "on", "off"})


def build(ast: ModelAst, variables: Mapping[str, int | float] | None = None,
          switches: Mapping[str, bool] | None = None, dropped: frozenset = frozenset()) -> LayerGraph:
    """Expand the model's network into a layer graph (frozen). Raises :class:`SourceError`.

    ``variables``: design variables by name (N, M, ...); ``switches``: optional layers by
    name, True (forced on) or False (left out); ``dropped``: keys of optional instances left
    out (see :mod:`cnnc.lang.design`, which chooses them)."""
    try:
        b = _Builder(ast, variables, switches, dropped)
        try:
            b.read_definitions()
        except RecursionError:
            raise SourceError("definitions are nested too deeply", ast.definitions[0].head_span,
                              "size", hint="use fewer levels of definitions calling definitions") from None
        if ast.network is None:  # positioned at the end of the text, where it is missing
            lines = ast.source.split("\n")
            while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
                lines.pop()  # after the last line that says something
            end = sum(len(line) + 1 for line in lines) - 1
            at = Span(len(lines), len(lines[-1]) + 1, end, end)
            raise SourceError("the model has no network expression", at, "empty",
                              hint="add a line such as: conv3 - relu - pool - fc")
        try:
            out = b.expand(ast.network, INPUT, {}, [], [])
        except RecursionError:
            raise SourceError("the network is nested too deeply to expand", ast.network.span,
                              "size", hint="use fewer levels of brackets or definitions") from None
        if out == INPUT:
            raise SourceError("the network has no layers (only id)", ast.network.span, "empty")
        b.graph.graph["output"] = out
        return b.graph.freeze()
    except SourceError as err:
        raise err.with_source(ast.source, ast.filename)
