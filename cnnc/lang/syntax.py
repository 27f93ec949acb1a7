"""Text -> AST. The only module that talks to Lark; every Lark error ends here.

The AST is made of frozen dataclasses that carry their source :class:`Span`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Union

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import SourceError, Span
from .settings import SETTING_KEYS

# ---------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True)
class Ref:
    """A bare name in an argument: a symbol (``same``) or a definition parameter."""

    name: str
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "ArgExpr"
    right: "ArgExpr"
    span: Span

    def apply(self, a: float, b: float, kind: str) -> float:
        """``a op b`` for evaluated operands; division stays an integer when it is exact.
        A division by zero is a SourceError of ``kind`` at this expression."""
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        if self.op == "*":
            return a * b
        if b == 0:
            raise SourceError("division by zero", self.span, kind)
        return a // b if isinstance(a, int) and isinstance(b, int) and a % b == 0 else a / b


@dataclass(frozen=True)
class Neg:
    operand: "ArgExpr"
    span: Span


ArgExpr = Union[Num, Ref, BinOp, Neg]


@dataclass(frozen=True)
class Arg:
    name: str | None  # None for positional
    value: ArgExpr
    span: Span


@dataclass(frozen=True)
class Call:
    """A layer or a definition used like a layer: ``conv3(64, stride=2)``."""

    name: str
    args: tuple[Arg, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Seq:
    items: tuple["Node", ...]
    span: Span


@dataclass(frozen=True)
class Repeat:
    body: "Node"
    counts: tuple[ArgExpr, ...]
    span: Span


@dataclass(frozen=True)
class Branches:
    """``( a | b )`` (kind ``concat``) or ``( a + b )`` (kind ``sum``)."""

    kind: str
    items: tuple["Node", ...]
    span: Span


@dataclass(frozen=True)
class Optional:
    """``pool?``: a layer (or definition call) that a design may leave out (issue 11)."""

    body: Call
    span: Span


Node = Union[Call, Seq, Repeat, Branches, Optional]


@dataclass(frozen=True)
class Setting:
    key: str
    value: object  # int, float, str, or tuple[int, ...] for shapes
    span: Span
    key_span: Span
    value_span: Span


@dataclass(frozen=True)
class Definition:
    name: str
    params: tuple[str, ...]
    body: Node
    span: Span
    head_span: Span


@dataclass(frozen=True)
class Variable:
    """``let N = 2``: a design variable's default value (an expression of earlier ones)."""

    name: str
    value: ArgExpr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class ModelAst:
    """A parsed model file: header settings, definitions and the network expression."""

    settings: tuple[Setting, ...]
    definitions: tuple[Definition, ...]
    network: Node | None
    source: str
    filename: str
    variables: tuple[Variable, ...] = ()  # `let` lines, in order


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

_GRAMMAR_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "grammar" / "cnnc.lark",  # installed: cnnc/grammar/
    Path(__file__).resolve().parents[2] / "grammar" / "cnnc.lark",  # source tree: grammar/
)

_CONTINUES_AFTER = {"_DASH", "_ARROW", "PLUS", "VBAR", "COMMA", "EQUAL", "STAR", "SLASH",
                    "LPAR", "LSQB"}
_CONTINUES_BEFORE = {"_DASH", "_ARROW", "PLUS", "VBAR", "RPAR", "RSQB", "STAR", "COMMA"}
_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB"}
_CLOSE = {"RPAR", "RSQB"}


class _NewlinePostLex:
    """Drop newlines that do not end a statement.

    A newline is kept only at bracket depth 0, when the previous token is not an
    operator and the next token does not start with one. Runs of newlines become one.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        prev: Token | None = None
        pending: Token | None = None
        for tok in stream:
            if tok.type == "_NL":
                if depth == 0 and prev is not None and prev.type not in _CONTINUES_AFTER:
                    pending = pending or tok
                continue
            if pending is not None:
                if tok.type not in _CONTINUES_BEFORE:
                    yield pending
                pending = None
            if tok.type in _OPEN:
                depth += 1
            elif tok.type in _CLOSE and depth > 0:
                depth -= 1
            prev = tok
            yield tok


def _grammar_text() -> str:
    for path in _GRAMMAR_CANDIDATES:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError("cnnc.lark not found next to the cnnc package")  # install is broken


@lru_cache(maxsize=1)
def _parser() -> Lark:
    # cache=True: Lark keeps the analysed LALR tables in the temp folder, keyed by the
    # grammar and options (building them costs ~20 ms of every `cnnc check`; loading ~2 ms)
    return Lark(_grammar_text(), parser="lalr", lexer="basic", propagate_positions=True,
                postlex=_NewlinePostLex(), maybe_placeholders=True, cache=True)


def _span(meta_or_tok) -> Span:
    if isinstance(meta_or_tok, Token):
        return Span(meta_or_tok.line, meta_or_tok.column, meta_or_tok.start_pos,
                    meta_or_tok.end_pos, meta_or_tok.end_line, meta_or_tok.end_column)
    m = meta_or_tok
    return Span(m.line, m.column, m.start_pos, m.end_pos, m.end_line, m.end_column)


class _ToAst(Transformer):
    """Lark tree -> AST dataclasses."""

    def __init__(self, text: str = ""):
        super().__init__()
        self.text = text

    def _paren_span(self, meta) -> Span:
        """The span of ``( a | b )`` including its brackets (Lark's covers the branches only)."""
        span = _span(meta)
        text = self.text
        i, j = span.start - 1, span.end
        while i >= 0 and text[i] in " \t\r\n\f":
            i -= 1
        while j < len(text) and text[j] in " \t\r\n\f":
            j += 1
        if i < 0 or text[i] != "(" or j >= len(text) or text[j] != ")":
            return span
        start = _offset_span(text, i)
        end = _offset_span(text, j)
        return Span(start.line, start.column, i, j + 1, end.line, end.column + 1)

    # ---- values
    @v_args(meta=True)
    def int_lit(self, meta, children):
        (tok,) = children
        return Num(int(tok), _span(tok))

    @v_args(meta=True)
    def float_lit(self, meta, children):
        (tok,) = children
        return Num(float(tok), _span(tok))

    @v_args(meta=True)
    def name_ref(self, meta, children):
        (tok,) = children
        return Ref(str(tok), _span(tok))

    @v_args(meta=True)
    def shape_lit(self, meta, children):
        (tok,) = children
        return _Literal(tuple(int(p) for p in str(tok).split("x")), _span(tok))

    @v_args(meta=True)
    def string_lit(self, meta, children):
        (tok,) = children
        return _Literal(str(tok)[1:-1], _span(tok))

    @v_args(meta=True)
    def add(self, meta, c):
        return BinOp("+", c[0], c[1], _span(meta))

    @v_args(meta=True)
    def sub(self, meta, c):
        return BinOp("-", c[0], c[1], _span(meta))

    @v_args(meta=True)
    def mul(self, meta, c):
        return BinOp("*", c[0], c[1], _span(meta))

    @v_args(meta=True)
    def div(self, meta, c):
        return BinOp("/", c[0], c[1], _span(meta))

    @v_args(meta=True)
    def neg(self, meta, c):
        return Neg(c[0], _span(meta))

    # ---- calls
    @v_args(meta=True)
    def positional(self, meta, c):
        return Arg(None, c[0], _span(meta))

    @v_args(meta=True)
    def keyword(self, meta, c):
        return Arg(str(c[0]), c[1], _span(meta))

    def args(self, c):
        return tuple(a for a in c if a is not None)

    @v_args(meta=True)
    def call(self, meta, c):
        name_tok, args = c
        return Call(str(name_tok), args or (), _span(meta), _span(name_tok))

    # ---- structure
    @v_args(meta=True)
    def sequence(self, meta, c):
        if len(c) == 1:
            return c[0]
        return Seq(tuple(c), _span(meta))

    @v_args(meta=True)
    def repeat(self, meta, c):
        return Repeat(c[0], tuple(c[1:]), _span(meta))

    @v_args(meta=True)
    def count_int(self, meta, c):
        return Num(int(c[0]), _span(c[0]))

    @v_args(meta=True)
    def count_name(self, meta, c):
        return Ref(str(c[0]), _span(c[0]))

    @v_args(meta=True)
    def optional(self, meta, c):
        return Optional(c[0], _span(meta))

    @v_args(meta=True)
    def variable(self, meta, c):
        name, value = c
        return Variable(str(name), value, _span(meta), _span(name))

    def bracket(self, c):
        return c[0]

    def group(self, c):
        return c[0]

    @v_args(meta=True)
    def concat(self, meta, c):
        return Branches("concat", tuple(c), self._paren_span(meta))

    @v_args(meta=True)
    def sum(self, meta, c):
        return Branches("sum", tuple(c), self._paren_span(meta))

    # ---- statements
    @v_args(meta=True)
    def setting(self, meta, c):
        key, value = c
        if isinstance(value, (Num, _Literal)):
            raw, vspan = value.value, value.span
        else:  # Ref
            raw, vspan = value.name, value.span
        return Setting(str(key), raw, _span(meta), _span(key), vspan)

    @v_args(meta=True)
    def definition(self, meta, c):
        head, body = c
        params = []
        for a in head.args:
            if a.name is not None or not isinstance(a.value, Ref):
                raise SourceError(
                    f"a parameter of definition '{head.name}' must be a plain name",
                    a.span, "definition",
                    hint=f"write it as {head.name}(c, s) = ... and pass values where it is used")
            if a.value.name in params:
                raise SourceError(f"parameter '{a.value.name}' appears twice in definition '{head.name}'",
                                  a.span, "definition")
            params.append(a.value.name)
        return Definition(head.name, tuple(params), body, _span(meta), head.span)

    @v_args(meta=True)
    def network(self, meta, c):
        return _Network(c[0], _span(meta))

    def start(self, c):
        return [x for x in c if x is not None]


@dataclass(frozen=True)
class _Literal:
    value: object
    span: Span


@dataclass(frozen=True)
class _Network:
    node: Node
    span: Span


_TOKEN_WORDS = {
    "_DASH": "'-'", "_ARROW": "'->'", "PLUS": "'+'", "VBAR": "'|'", "STAR": "'*'",
    "SLASH": "'/'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "EQUAL": "'='", "NAME": "a name", "INT": "an integer",
    "FLOAT": "a number", "SHAPE": "a shape like 3x32x32", "STRING": "a quoted string",
    "_NL": "a new line", "$END": "the end of the text", "QMARK": "'?'", "LET": "'let'",
}


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t) for t in expected if not t.startswith("__")})
    if not words:
        return ""
    if len(words) > 6:
        words = words[:6] + ["..."]
    return "expected " + ", ".join(words)


def _unclosed_bracket(text: str) -> tuple[int, str] | None:
    """Offset and character of the first bracket that is never closed (comments skipped)."""
    stack: list[tuple[int, str]] = []
    in_comment = False
    for i, ch in enumerate(text):
        if in_comment:
            in_comment = ch != "\n"
            continue
        if ch == "#":
            in_comment = True
        elif ch in "([":
            stack.append((i, ch))
        elif ch in ")]":
            if stack and {"(": ")", "[": "]"}[stack[-1][1]] == ch:
                stack.pop()
            else:
                return None
    return stack[0] if stack else None


def _innermost_open(text: str) -> str | None:
    """The innermost bracket still open at the end of ``text`` (comments skipped)."""
    stack: list[str] = []
    in_comment = False
    for ch in text:
        if in_comment:
            in_comment = ch != "\n"
        elif ch == "#":
            in_comment = True
        elif ch in "([":
            stack.append(ch)
        elif ch in ")]" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _is_setting_line(text: str, tok: Token) -> bool:
    line_start = text.rfind("\n", 0, tok.start_pos) + 1
    words = text[line_start: tok.start_pos].split()
    return bool(words) and words[0] in SETTING_KEYS


def _offset_span(text: str, offset: int, length: int = 1) -> Span:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Span(line, col, offset, offset + length, line, col + length)


_WORD_WORD = re.compile(r"^[ \t\f]*([A-Za-z_][A-Za-z0-9_]*)[ \t\f]+([A-Za-z_][A-Za-z0-9_]*)[ \t\f]*$")


def _missing_dash(text: str, tok: Token) -> SourceError | None:
    """``conv3 relu - pool``: two names on a line read as a header line, then an operator."""
    if tok.type not in ("_DASH", "_ARROW", "STAR", "LPAR") or tok.line is None:
        return None
    line_start = text.rfind("\n", 0, tok.start_pos) + 1
    m = _WORD_WORD.match(text[line_start: tok.start_pos])
    if m is None:
        return None
    first, second = m.group(1), m.group(2)
    if first in SETTING_KEYS:
        return None
    return SourceError(f"missing '-' between '{first}' and '{second}'",
                       _offset_span(text, line_start + m.start(2), len(second)), "syntax",
                       hint="layers are joined with '-', e.g. conv3 - relu")


def _last_token_offset(text: str) -> int:
    """Offset of the last character of the last token (comments and blanks skipped)."""
    try:
        last = None
        for tok in _parser().lex(text):
            if tok.type != "_NL":
                last = tok
        if last is not None:
            return max(last.end_pos - 1, 0)
    except UnexpectedInput:
        pass
    return max(len(text.rstrip()) - 1, 0)


def _unclosed_before_line_break(text: str, tok: Token) -> SourceError | None:
    """``[a - b`` followed by more lines: the newline did not end the statement because a
    bracket is still open, so the next line's first word is "unexpected"; the real mistake
    is the bracket never closed."""
    unclosed = _unclosed_bracket(text)  # never closed anywhere in the text
    if unclosed is None or unclosed[0] >= tok.start_pos:
        return None
    before = text[: tok.start_pos]
    code = "\n".join(line.split("#", 1)[0] for line in before.split("\n"))
    if "\n" not in code[len(code.rstrip()):]:
        return None
    off, ch = unclosed
    close = ")" if ch == "(" else "]"
    return SourceError(f"'{ch}' is never closed", _offset_span(text, off), "syntax",
                       hint=f"add '{close}' to close it; inside brackets a line break does not end "
                            f"the expression, so line {tok.line} was read as part of it")


def _syntax_error(err: UnexpectedInput, text: str) -> SourceError:
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        span = _offset_span(text, err.pos_in_stream)
        hint = None
        if ch in "{}<>;:":
            hint = "layers are joined with '-', branches are written ( a | b ) or ( a + b )"
        elif ch == ".":
            hint = "a number needs digits before its point is optional, but names cannot contain '.'"
        elif ch == "'":
            hint = "strings are written in double quotes"
        return SourceError(f"unexpected character {ch!r}", span, "syntax", hint=hint)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        unclosed = _unclosed_bracket(text)
        if unclosed is not None:
            off, ch = unclosed
            close = ")" if ch == "(" else "]"
            return SourceError(f"'{ch}' is never closed", _offset_span(text, off), "syntax",
                               hint=f"add '{close}' to close it")
        off = _last_token_offset(text)
        expected = getattr(err, "expected", set())
        return SourceError("unexpected end of the text", _offset_span(text, off), "syntax",
                           hint=_describe_expected(set(expected)) or None)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    span = _span(tok) if tok.line is not None else _offset_span(text, 0)
    expected = set(err.expected)
    if tok.type == "_NL":
        what = "end of line"
        unclosed = _unclosed_bracket(text[: tok.start_pos])
        hint = _describe_expected(expected)
        if unclosed is not None:
            off, ch = unclosed
            return SourceError(f"'{ch}' is never closed", _offset_span(text, off), "syntax",
                               hint="add the closing bracket")
        return SourceError(f"unexpected {what}", span, "syntax", hint=hint or None)
    shown = str(tok)
    hint = _describe_expected(expected)
    if tok.type == "QMARK":  # issue 11: `[a - b]?`, `pool??`, `pool*2?`
        return SourceError("only a layer or a definition call can be optional", span, "syntax",
                           hint="write name? right after the layer, e.g. pool?; for a group, give it a "
                                "name with a definition: blk = conv3 - pool, then blk?")
    in_args = "COMMA" in expected  # '+' is also arithmetic inside a call's arguments
    if not in_args and ((tok.type == "PLUS" and "VBAR" in expected)
                        or (tok.type == "VBAR" and "PLUS" in expected)):
        return SourceError("'|' and '+' are mixed in one group of branches", span, "syntax",
                           hint="a group either concatenates ( a | b ) or sums ( a + b ); "
                                "nest one group in the other: ( (a | b) + c )")
    if tok.type in ("NAME", "INT", "FLOAT", "SHAPE", "STRING", "LPAR", "LSQB"):
        unclosed = _unclosed_before_line_break(text, tok)
        if unclosed is not None:
            return unclosed
    if (tok.type in ("PLUS", "VBAR") and not in_args and _innermost_open(text[: tok.start_pos]) != "("
            and not _is_setting_line(text, tok)):
        return SourceError(f"'{shown}' outside parentheses", span, "syntax",
                           hint="branches are written in parentheses: ( a | b ) concatenates, "
                                "( a + b ) sums")
    missing = _missing_dash(text, tok)
    if missing is not None:
        return missing
    if tok.type in ("RPAR", "RSQB") and _unclosed_bracket(text[: tok.end_pos]) is None:
        opener = "(" if tok.type == "RPAR" else "["
        if text[: tok.start_pos].count(opener) < text[: tok.end_pos].count(shown):
            return SourceError(f"'{shown}' closes nothing", span, "syntax",
                               hint="remove it or add the opening bracket")
    if tok.type in ("NAME", "INT", "FLOAT", "SHAPE") and "_DASH" in expected:
        hint = "join layers with '-' (or '->'); a new line ends the network unless it follows '-'"
    if tok.type == "SHAPE":
        if _unclosed_bracket(text[: tok.start_pos]) is not None:
            hint = "a window size is written as a suffix of the layer name: conv3x1, maxpool2x1"
        else:
            hint = "shapes like 3x32x32 belong in the header: input 3x32x32"
    return SourceError(f"unexpected {shown!r}", span, "syntax", hint=hint or None)


MAX_NESTING = 64


def _check_nesting(text: str) -> None:
    """Refuse brackets nested deeper than :data:`MAX_NESTING` (comments skipped)."""
    depth = 0
    in_comment = False
    for i, ch in enumerate(text):
        if in_comment:
            in_comment = ch != "\n"
        elif ch == "#":
            in_comment = True
        elif ch in "([":
            depth += 1
            if depth > MAX_NESTING:
                raise SourceError(f"brackets are nested more than {MAX_NESTING} deep",
                                  _offset_span(text, i), "syntax",
                                  hint="use a definition for a deeply nested block")
        elif ch in ")]":
            depth = max(depth - 1, 0)


def parse(text: str, filename: str = "<string>") -> ModelAst:
    """Parse model text into a :class:`ModelAst`. Raises :class:`SourceError`."""
    try:
        try:
            _check_nesting(text)
            tree = _parser().parse(text)
            items = _ToAst(text).transform(tree)
        except VisitError as err:  # a SourceError raised inside the transformer
            if isinstance(err.orig_exc, SourceError):
                raise err.orig_exc from None
            raise
        except UnexpectedInput as err:
            raise _syntax_error(err, text) from None
        except RecursionError:  # e.g. an argument like 1+1+1+... with thousands of terms
            raise SourceError("the model text is nested too deeply to parse", None, "syntax",
                              hint="split long expressions; use definitions for deep nesting") from None
        settings, definitions, networks, variables = [], [], [], []
        for item in items:
            if isinstance(item, Variable):
                if any(v.name == item.name for v in variables):
                    first = next(v for v in variables if v.name == item.name)
                    raise SourceError(f"variable '{item.name}' is set twice (first on line {first.span.line})",
                                      item.name_span, "variable")
                variables.append(item)
            elif isinstance(item, Setting):
                settings.append(item)
            elif isinstance(item, Definition):
                definitions.append(item)
            else:
                networks.append(item)
        if len(networks) > 1:
            second = networks[1]
            raise SourceError(
                "a second network expression: a model file describes one network",
                second.span, "syntax",
                hint="join the lines with '-' at the end of the first line (or the start of the next)")
        network = networks[0].node if networks else None
        return ModelAst(tuple(settings), tuple(definitions), network, text, filename, tuple(variables))
    except SourceError as err:
        raise err.with_source(text, filename)
