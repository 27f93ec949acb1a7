"""One error hierarchy for cnnc.

Every mistake a user can make (a bad model text, bad arguments, a damaged data file,
a checkpoint that does not fit) raises a subclass of :class:`CnncError`. The CLI catches
exactly this class, prints ``str(err)`` and exits with status 1; anything else is a bug.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line/column of the start, 0-based offsets."""

    line: int
    column: int
    start: int
    end: int
    end_line: int = 0
    end_column: int = 0


class CnncError(Exception):
    """Base class of every error cnnc reports to a user."""

    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  {self.hint}"
        return text


class UsageError(CnncError):
    """A bad command-line argument or API argument."""

    kind = "usage"


class DataError(CnncError):
    """A data set that cannot be read, is damaged, or does not fit the model."""

    kind = "data"


class CheckpointError(CnncError):
    """A checkpoint that cannot be read or does not match the model."""

    kind = "checkpoint"


class TrainingError(CnncError):
    """Training cannot go on (a loss that became NaN, an unwritable output)."""

    kind = "training"


@dataclass
class SourceError(CnncError):
    """An error in model text, with the span it points at.

    ``kind`` is a short machine-readable category (``syntax``, ``unknown-layer``,
    ``argument``, ``header``, ``definition``, ``shape``, ``merge``, ``fit``, ``empty``).
    ``notes`` are "where it was expanded from" lines, innermost first.
    """

    message: str
    span: Span | None = None
    kind: str = "error"
    hint: str | None = None
    source: str | None = None
    filename: str = "<string>"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def with_source(self, source: str, filename: str) -> "SourceError":
        if self.source is None:
            self.source = source
            self.filename = filename
        return self

    def __str__(self) -> str:
        if self.span is None:
            head = f"{self.filename}: error: {self.message}"
            lines = [head]
        else:
            lines = [f"{self.filename}:{self.span.line}:{self.span.column}: error: {self.message}"]
            if self.source is not None:
                # lines as Lark counts them: only "\n" ends a line (not "\r", "\f", ...)
                src_lines = [ln.rstrip("\r") for ln in self.source.split("\n")]
                idx = min(self.span.line - 1, len(src_lines) - 1)
                text = src_lines[idx] if idx >= 0 else ""
                col = self.span.column - 1
                if self.span.end_line in (0, self.span.line) and self.span.end > self.span.start:
                    width = max(1, min(self.span.end - self.span.start, len(text) - col))
                else:
                    width = max(1, len(text.rstrip()) - col)
                shown = "".join(" " if ch in "\t\f\v\r" else ch for ch in text)
                lines.append("    " + shown)
                lines.append("    " + " " * col + "^" * width)
        if self.hint:
            lines.append(f"  {self.hint}")
        for note in self.notes:
            lines.append(f"  ({note})")
        return "\n".join(lines)


@dataclass
class OptionalDoesNotFit(SourceError):
    """An optional layer (``pool?``) that would not fit its input, raised by the checker so
    that the design driver (:mod:`cnnc.lang.design`) leaves that instance out and checks again.
    ``key`` names the instance (:func:`cnnc.lang.graph.optional_key`)."""

    key: tuple = ()
