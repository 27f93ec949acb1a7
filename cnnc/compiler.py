"""The driver: ``parse -> build -> infer -> lower -> run``, and the :class:`Model` it returns.

Each stage is one function returning its own value: :func:`cnnc.lang.syntax.parse` (text -> AST),
:func:`cnnc.lang.graph.build` (AST -> frozen layer graph), :func:`cnnc.lang.infer.infer` (graph ->
:class:`~cnnc.lang.infer.Analysis`), :func:`cnnc.runtime.lower.lower` (analysis -> :class:`~cnnc.runtime.lower.Plan`),
and :class:`cnnc.runtime.network.Network` (plan -> parameters and executors). Checking needs neither
Numba nor arrays; lowering and running are imported only when a model is executed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from .errors import SourceError, Span, UsageError
from .lang.design import check_design, resolve_design
from .lang.infer import Analysis
from .layers import resolve_name
from .lang.report import Summary, summarize, summary_html, summary_text
from .lang.settings import Header, override, read_header
from .lang.syntax import ModelAst, parse

DEFAULT_WIDTH = 32


def parse_shape(text: str | tuple | list) -> tuple[int, ...]:
    """``"3x32x32"`` or ``(3, 32, 32)`` -> a CxHxW tuple, ``"1x100"`` -> a CxL tuple (a 1-D
    network); UsageError otherwise."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"bad input shape {text!r}",
                         hint="write it as CxHxW, e.g. 3x32x32, or CxL for a sequence, e.g. 1x100") from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise UsageError(f"bad input shape {text!r}: it needs 3 positive sizes (CxHxW) or 2 (CxL)",
                         hint="write it as CxHxW, e.g. 1x28x28 or 3x32x32, or CxL, e.g. 1x100")
    return dims  # type: ignore[return-value]


@dataclass(frozen=True)
class Model:
    """A checked network: its AST, header, layer graph and static analysis."""

    ast: ModelAst
    header: Header
    analysis: Analysis  # its .graph is the layer graph the stages read (a cnnc.lang.graph.LayerGraph)
    design: Any = None  # cnnc.lang.design.Design: the variables and switches this design used
    dropped: tuple = ()  # cnnc.lang.design.Dropped: optional layers left out (they did not fit)

    @cached_property
    def graph(self):
        """The layer graph as a frozen ``networkx.DiGraph``: one node per layer instance (and
        ``"input"``), node attributes ``layer``, ``inputs``, ``optional``, edge attribute
        ``slot``, graph attribute ``output`` (see :mod:`cnnc.lang.graph`). networkx is imported
        on first use."""
        return self.analysis.graph.to_networkx()

    @property
    def source(self) -> str:
        return self.ast.source

    @property
    def filename(self) -> str:
        return self.ast.filename

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.analysis.input_shape  # type: ignore[return-value]

    @property
    def classes(self) -> int | None:
        return self.analysis.classes

    @property
    def layers(self) -> list[str]:
        """Layer names in execution order."""
        return list(self.analysis.order)

    @cached_property
    def summary(self) -> Summary:
        """The report with memory figures at batch 1 (see :meth:`report`)."""
        return self.report(1)

    def report(self, batch: int = 1) -> Summary:
        """The report with memory figures at ``batch``."""
        if batch < 1:
            raise UsageError(f"batch must be at least 1, got {batch}")
        return summarize(self.analysis, self.filename, batch)

    def summary_text(self, batch: int = 1) -> str:
        text = summary_text(self.report(batch))
        if self.design is not None and self.design.as_dict():  # issue 11: the design's values
            text += "\ndesign       " + ", ".join(f"{k}={v}" for k, v in self.design.as_dict().items())
        for d in self.dropped:
            text += f"\ndropped      {d.describe()}"
        return text

    def summary_dict(self, batch: int = 1) -> dict[str, Any]:
        d = self.report(batch).to_dict()
        if self.design is not None and (self.design.as_dict() or self.dropped):
            # a model with design variables or optional layers: what this design used
            d["design"] = self.design.as_dict()
            d["dropped_optional"] = [x.describe() for x in self.dropped]
        return d

    # ---- notebooks: the summary table and the drawing (the layout is cnnc.lang.layout's)
    def __repr__(self) -> str:
        return f"<cnnc.Model {self.filename}: input {'x'.join(map(str, self.input_shape))}, " \
               f"{self.summary.total_params:,} parameters, {len(self.analysis.order)} layers>"

    def _repr_html_(self) -> str:
        from html import escape

        from .lang.layout import svg

        text = self.summary_text()
        lines = text.splitlines()
        footer = "\n".join(lines[len(self.summary.rows) + 4:]).strip("\n")
        try:
            drawing = svg(self.analysis)
        except Exception as err:  # noqa: BLE001  (a drawing problem still shows the table)
            drawing = f"<p>(no drawing: {escape(str(err))})</p>"
        return (f'<div class="cnnc-model"><p><b>{escape(lines[0])}</b></p>'
                f"{summary_html(self.summary, footer)}"
                f'<details open><summary>drawing</summary>{drawing}</details></div>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": self.summary_text(), "text/html": self._repr_html_()}

    def to_json(self, indent: int | None = 2, batch: int = 1) -> str:
        return json.dumps(self.summary_dict(batch), indent=indent)

    def network(self, *, seed: int = 0, dtype: str = "float32"):
        """Lower the model to compiled kernels with parameters initialized from ``seed``
        (a :class:`cnnc.runtime.network.Network`)."""
        from .runtime.lower import lower
        from .runtime.network import Network

        return Network(lower(self.analysis), seed=seed, dtype=dtype)


def _is_layer_or_def(ast: ModelAst):
    defs = {d.name for d in ast.definitions}
    return lambda name: name in defs or resolve_name(name) is not None


def compile(source: str, *, input: str | tuple | None = None, classes: int | None = None,
            width: int | None = None, filename: str = "<string>",
            variables: Mapping[str, Any] | str | None = None) -> Model:
    """Compile model text: parse, build the graph, check it. Raises :class:`SourceError`.

    ``input`` (``"3x32x32"``), ``classes`` and ``width`` override the text's header lines.
    ``variables`` (``{"N": 2, "pool": "off"}`` or ``"N=2,pool=off"``) set design variables
    and optional layers over the text's ``let`` lines (see :mod:`cnnc.lang.design`).
    """
    ast = parse(source, filename)
    try:
        header = read_header(ast.settings, _is_layer_or_def(ast))
    except SourceError as err:
        raise err.with_source(source, filename)
    header = override(header, input=parse_shape(input) if input is not None else None,
                      classes=classes, width=width)
    if header.classes is not None and header.classes < 1:
        raise UsageError(f"classes must be at least 1, got {header.classes}")
    if header.input is None:  # at the network (or the start): every model-text error has a position
        at = getattr(ast.network, "span", None) or Span(1, 1, 0, min(len(source), 1))
        raise SourceError("the model has no input shape", at, "header",
                          hint="add a header line `input 3x32x32` (or pass --input / input=)",
                          source=source, filename=filename)
    design = resolve_design(ast, variables)
    _, analysis, dropped = check_design(ast, design, header.input, header.classes,
                                        header.width or DEFAULT_WIDTH)
    return Model(ast, header, analysis, design, dropped)


def compile_file(path: str | Path, **kwargs: Any) -> Model:
    """Compile a ``.cnn`` file (see :func:`compile` for the keyword arguments)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a model file") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot be read ({err.strerror})") from None
    return compile(text, filename=str(path), **kwargs)
