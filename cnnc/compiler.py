"""The driver: ``parse -> build -> infer -> lower -> run``, and the :class:`Model` it returns.

Checking (parse, build, infer) needs neither Numba nor arrays; lowering and running
(:mod:`cnnc.lower`, :mod:`cnnc.runtime`) are imported only when a model is executed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from .errors import SourceError, UsageError
from .graph import build
from .layers import resolve_name
from .infer import Summary, infer
from .report import summary_text
from .settings import Header, override, read_header
from .syntax import Program, parse

if TYPE_CHECKING:
    from .runtime import Network

DEFAULT_WIDTH = 32


def parse_shape(text: str | tuple | list) -> tuple[int, int, int]:
    """``"3x32x32"`` or ``(3, 32, 32)`` -> a CxHxW tuple; UsageError otherwise."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"bad input shape {text!r}", hint="write it as CxHxW, e.g. 3x32x32") from None
    if len(dims) != 3 or min(dims) < 1:
        raise UsageError(f"bad input shape {text!r}: it needs 3 positive sizes",
                         hint="write it as CxHxW, e.g. 1x28x28 or 3x32x32")
    return dims  # type: ignore[return-value]


@dataclass
class Model:
    """A checked network: its program, header, layer graph and static summary."""

    program: Program
    header: Header
    graph: nx.DiGraph
    summary: Summary

    @property
    def source(self) -> str:
        return self.program.source

    @property
    def filename(self) -> str:
        return self.program.filename

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.summary.input_shape  # type: ignore[return-value]

    @property
    def classes(self) -> int | None:
        return self.summary.classes

    @property
    def layers(self) -> list[str]:
        """Layer names in execution order."""
        return [r.name for r in self.summary.rows]

    def summary_text(self) -> str:
        return summary_text(self.summary)

    def summary_dict(self) -> dict[str, Any]:
        return self.summary.to_dict()

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.summary_dict(), indent=indent)

    def network(self, *, seed: int = 0, dtype: str = "float32") -> "Network":
        """Lower the model to compiled kernels with parameters initialized from ``seed``."""
        from .runtime import Network

        return Network(self, seed=seed, dtype=dtype)


def _is_layer_or_def(program: Program):
    defs = {d.name for d in program.definitions}
    return lambda name: name in defs or resolve_name(name) is not None


def compile(source: str, *, input: str | tuple | None = None, classes: int | None = None,
            width: int | None = None, batch: int = 1, filename: str = "<string>") -> Model:
    """Compile model text: parse, build the graph, check it. Raises :class:`SourceError`.

    ``input`` (``"3x32x32"``), ``classes`` and ``width`` override the text's header lines.
    """
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    program = parse(source, filename)
    try:
        header = read_header(program.settings, _is_layer_or_def(program))
    except SourceError as err:
        raise err.with_source(source, filename)
    header = override(header, input=parse_shape(input) if input is not None else None,
                      classes=classes, width=width)
    if header.classes is not None and header.classes < 1:
        raise UsageError(f"classes must be at least 1, got {header.classes}")
    if header.input is None:
        raise SourceError("the model has no input shape", None, "header",
                          hint="add a header line `input 3x32x32` (or pass --input / input=)",
                          source=source, filename=filename)
    graph = build(program)
    summary = infer(graph, header.input, header.classes, header.width or DEFAULT_WIDTH,
                    batch=batch, source=source, filename=filename)
    return Model(program, header, graph, summary)


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
