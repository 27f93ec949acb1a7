"""``cnnc check --sweep``: check every design of a space of design variables, one row each
(parameters, MACs, output shape, training memory, or the positioned error of a design that
does not fit). It drives the compiler once per design; :mod:`cnnc.lang.design` holds the rules.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping

from ..lang.design import Value, design_names, parse_assignments, parse_sweep, resolve_design
from ..compiler import compile as compile_model
from ..errors import OptionalDoesNotFit, SourceError

@dataclass(frozen=True)
class SweepRow:
    values: Mapping[str, Any]
    params: int | None = None
    macs: int | None = None
    output_shape: tuple[int, ...] | None = None
    training_bytes: int | None = None
    layers: int | None = None
    dropped: tuple[str, ...] = ()
    error: SourceError | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"values": dict(self.values), "ok": self.error is None}
        if self.error is None:
            d.update(total_params=self.params, total_macs=self.macs, output_shape=list(self.output_shape),
                     training_memory_bytes=self.training_bytes, layers=self.layers,
                     dropped_optional=list(self.dropped))
        else:
            e = self.error
            d["error"] = {"message": e.message, "kind": e.kind, "line": e.line, "column": e.column,
                          "hint": e.hint, "notes": list(e.notes), "text": str(e)}
        return d


@dataclass(frozen=True)
class Sweep:
    filename: str
    input_shape: tuple[int, ...]
    classes: int | None
    batch: int
    names: tuple[str, ...]
    rows: tuple[SweepRow, ...]

    def to_dict(self) -> dict:
        return {"file": self.filename, "input_shape": list(self.input_shape), "classes": self.classes,
                "batch": self.batch, "swept": list(self.names), "designs": [r.to_dict() for r in self.rows]}


def sweep(source: str, spec: str, *, filename: str = "<string>", given: Mapping[str, Value] | str | None = None,
          batch: int = 1, **compile_kwargs: Any) -> Sweep:
    """Check every design of ``spec`` (``"N=1..3,M=1..4"``) over the ``given`` values."""
    from ..lang.syntax import parse

    axes = parse_sweep(spec)
    ast = parse(source, filename)
    if isinstance(given, str):
        resolve_design(ast, given)  # unknown names and bad values, positioned in the --set text
        given = {k: v for k, (v, _) in parse_assignments(given).items()}
    given = dict(given or {})
    variables, optional = design_names(ast)
    for name, _, span in axes:  # names are checked once, positioned in the --sweep text
        if name not in variables and name not in optional:
            known = sorted(variables | optional)
            raise SourceError(f"the model has no variable or optional layer '{name}'", span, "design",
                              hint=f"its variables and optional layers: {', '.join(known) or 'none'}",
                              source=spec, filename="--sweep")
    rows = []
    model = None
    for combo in itertools.product(*(values for _, values, _ in axes)):
        values = {**given, **{name: v for (name, _, _), v in zip(axes, combo)}}
        shown = {name: (("on" if v else "off") if isinstance(v, bool) else v)
                 for (name, _, _), v in zip(axes, combo)}
        try:
            model = compile_model(source, filename=filename, variables=values, **compile_kwargs)
        except OptionalDoesNotFit:  # pragma: no cover - handled by check_design
            raise
        except SourceError as err:
            if err.filename != filename:  # an error in --set/--sweep text, not in the design
                raise
            rows.append(SweepRow(shown, error=err))
            continue
        s = model.report(batch)
        rows.append(SweepRow(shown, s.total_params, s.total_macs, s.output_shape, s.training_bytes,
                             len(s.rows), tuple(d.describe() for d in model.dropped)))
    if model is not None:
        input_shape, classes = model.input_shape, model.classes
    else:  # no design compiled: the shape as given (or as the header says)
        from ..compiler import parse_shape
        from ..lang.settings import read_header

        given_shape = compile_kwargs.get("input")
        input_shape = (parse_shape(given_shape) if given_shape is not None
                       else read_header(ast.settings, lambda name: True).input or ())
        classes = compile_kwargs.get("classes") or read_header(ast.settings, lambda name: True).classes
    return Sweep(filename, tuple(input_shape), classes, batch, tuple(n for n, _, _ in axes), tuple(rows))


def sweep_text(s: Sweep) -> str:
    from ..lang.report import human_bytes, human_count

    shape = "x".join(map(str, s.input_shape))
    ok = sum(r.error is None for r in s.rows)
    lines = [f"{s.filename}: {len(s.rows)} designs ({ok} fit), input {shape}"
             + (f", {s.classes} classes" if s.classes else "") + f"; training memory at batch {s.batch}", ""]
    header = (*s.names, "parameters", "MACs", "output", "training mem", "layers", "notes")
    table = [header]
    for r in s.rows:
        vals = tuple(str(r.values[n]) for n in s.names)
        if r.error is None:
            note = f"{len(r.dropped)} optional dropped" if r.dropped else ""
            table.append((*vals, f"{r.params:,}", human_count(r.macs), "x".join(map(str, r.output_shape)),
                          human_bytes(r.training_bytes), str(r.layers), note))
        else:
            e = r.error
            where = f"{e.line}:{e.column}: " if e.line is not None else ""
            table.append((*vals, f"error {where}{e.message}"))
    widths = [max(len(row[i]) for row in table if i < len(row) and len(row) == len(header)) for i in range(len(header))]
    k = len(s.names)
    for j, row in enumerate(table):
        if len(row) != len(header):  # an error row: the message spans the remaining columns
            lines.append("  ".join(c.rjust(w) for c, w in zip(row[:k], widths)) + "  " + row[k])
            continue
        cells = [c.rjust(w) if i < k + 5 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    dropped = [(r, d) for r in s.rows if r.error is None for d in r.dropped]
    if dropped:
        lines += ["", "optional layers dropped (they did not fit):"]
        for r, d in dropped:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in r.values.items()) + f": {d}")
    return "\n".join(lines)
