"""``cnnc diff A B``: two checked models side by side, layer by layer.

The two layer lists are aligned like two texts (:class:`difflib.SequenceMatcher`) on a
key that says what a layer *is*: its type and resolved configuration (``conv 3x3, 256
filters, stride 1, pad 1``), not its name, because inserting one conv renumbers every
later ``conv_k``. Inside a replaced stretch, layers are paired by type (a conv whose
width changed is shown as one changed conv, not as one removed and one added).

Every aligned pair reports the difference in output shape, parameters, MACs, receptive
field and activation memory; an added layer counts fully as ``+``, a removed one as ``-``.
Pure static analysis: nothing is compiled.
"""
from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from ..compiler import Model
from ..lang.infer import LayerRow
from ..lang.report import human_bytes
from ..text import plural

SAME, CHANGED, ADDED, REMOVED = "=", "~", "+", "-"
SHIFTED = "rf"  # the layer itself is unchanged; only its receptive field moved (a layer before it changed)


@dataclass(frozen=True)
class RowDiff:
    """One line of the diff: a layer of A, of B, or of both."""

    status: str  # SAME | CHANGED | ADDED | REMOVED
    a: LayerRow | None
    b: LayerRow | None

    def _get(self, row: LayerRow | None, field: str) -> int:
        return getattr(row, field) if row is not None else 0

    @property
    def params(self) -> int:
        return self._get(self.b, "params") - self._get(self.a, "params")

    @property
    def macs(self) -> int:
        return self._get(self.b, "macs") - self._get(self.a, "macs")

    @property
    def memory(self) -> int:
        return self._get(self.b, "activation_bytes") - self._get(self.a, "activation_bytes")

    def changes(self) -> list[str]:
        """What differs between the two sides of a pair (empty for SAME, ADDED, REMOVED)."""
        if self.a is None or self.b is None:
            return []
        out = []
        if self.a.detail != self.b.detail:
            out.append("configuration")
        if self.a.output_shape != self.b.output_shape:
            out.append("output shape")
        if self.params:
            out.append("parameters")
        if self.macs:
            out.append("MACs")
        if self.a.receptive_field != self.b.receptive_field:
            out.append("receptive field")
        return out

    def to_dict(self) -> dict[str, Any]:
        def side(row):
            if row is None:
                return None
            rf = row.receptive_field
            return {"name": row.name, "type": row.type, "configuration": row.detail or row.text,
                    "output_shape": list(row.output_shape), "params": row.params, "macs": row.macs,
                    "receptive_field": {"size": list(rf.size), "jump": list(rf.jump)},
                    "activation_bytes": row.activation_bytes}
        return {"status": {SAME: "same", SHIFTED: "receptive-field-only", CHANGED: "changed", ADDED: "added",
                           REMOVED: "removed"}[self.status],
                "a": side(self.a), "b": side(self.b), "changes": self.changes(),
                "delta": {"params": self.params, "macs": self.macs, "activation_bytes": self.memory}}


@dataclass(frozen=True)
class ModelDiff:
    a: Model
    b: Model
    rows: tuple[RowDiff, ...]

    def count(self, status: str, layer_type: str | None = None) -> int:
        return sum(1 for r in self.rows if r.status == status
                   and (layer_type is None or (r.b or r.a).type == layer_type))

    def totals(self) -> dict[str, dict[str, int]]:
        sa, sb = self.a.summary, self.b.summary
        pairs = {
            "params": (sa.total_params, sb.total_params),
            "buffers": (sa.buffer_values, sb.buffer_values),
            "macs": (sa.total_macs, sb.total_macs),
            "activation_bytes_per_image": (sa.activation_bytes, sb.activation_bytes),
            "inference_memory_bytes": (sa.inference_bytes, sb.inference_bytes),
            "training_memory_bytes": (sa.training_bytes, sb.training_bytes),
        }
        return {k: {"a": va, "b": vb, "delta": vb - va} for k, (va, vb) in pairs.items()}

    def to_dict(self) -> dict[str, Any]:
        sa, sb = self.a.summary, self.b.summary
        return {
            "a": {"file": sa.filename, "input_shape": list(sa.input_shape), "classes": sa.classes,
                  "output_shape": list(sa.output_shape), "layers": len(sa.rows)},
            "b": {"file": sb.filename, "input_shape": list(sb.input_shape), "classes": sb.classes,
                  "output_shape": list(sb.output_shape), "layers": len(sb.rows)},
            "counts": {"same": self.count(SAME), "receptive_field_only": self.count(SHIFTED),
                       "changed": self.count(CHANGED),
                       "added": self.count(ADDED), "removed": self.count(REMOVED)},
            "totals": self.totals(),
            "layers": [r.to_dict() for r in self.rows],
        }


def _key(row: LayerRow) -> tuple:
    return (row.type, row.detail or row.text)


def _status(x: LayerRow, y: LayerRow) -> str:
    if _key(x) != _key(y) or x.output_shape != y.output_shape or x.params != y.params or x.macs != y.macs:
        return CHANGED
    return SAME if x.receptive_field == y.receptive_field else SHIFTED


def _pair_by_type(a: list[LayerRow], b: list[LayerRow]) -> list[RowDiff]:
    """A replaced stretch: pair layers of the same type in order, the rest added/removed."""
    out: list[RowDiff] = []
    sm = SequenceMatcher(None, [r.type for r in a], [r.type for r in b], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            out += [RowDiff(_status(x, y), x, y) for x, y in zip(a[i1:i2], b[j1:j2])]
        else:
            out += [RowDiff(REMOVED, x, None) for x in a[i1:i2]]
            out += [RowDiff(ADDED, None, y) for y in b[j1:j2]]
    return out


def diff_models(a: Model, b: Model) -> ModelDiff:
    """Align the layer lists of two checked models (see the module docstring)."""
    ra, rb = list(a.summary.rows), list(b.summary.rows)
    sm = SequenceMatcher(None, [_key(r) for r in ra], [_key(r) for r in rb], autojunk=False)
    rows: list[RowDiff] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            rows += [RowDiff(_status(x, y), x, y) for x, y in zip(ra[i1:i2], rb[j1:j2])]
        elif tag == "delete":
            rows += [RowDiff(REMOVED, x, None) for x in ra[i1:i2]]
        elif tag == "insert":
            rows += [RowDiff(ADDED, None, y) for y in rb[j1:j2]]
        else:
            rows += _pair_by_type(ra[i1:i2], rb[j1:j2])
    return ModelDiff(a, b, tuple(rows))


# ---------------------------------------------------------------------------
# Text


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def _signed_bytes(n: int) -> str:
    if not n:
        return "0"
    return ("+" if n > 0 else "-") + human_bytes(abs(n))


def _shape(row: LayerRow | None) -> str:
    return "x".join(map(str, row.output_shape)) if row is not None else ""


def _rf(row: LayerRow | None) -> str:
    if row is None:
        return ""
    rf = row.receptive_field
    size = f"{rf.size[0]}" if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"
    return f"{size}/{rf.jump[0]}" if rf.jump[0] == rf.jump[1] else f"{size}/{rf.jump[0]}x{rf.jump[1]}"


def _both(fa: str, fb: str) -> str:
    return fa if fa == fb else f"{fa}  =>  {fb}"


def diff_text(d: ModelDiff, show_same: bool = False) -> str:
    """The diff as a table: one row per aligned layer, then the totals."""
    sa, sb = d.a.summary, d.b.summary
    header = ("", "layer A", "layer B", "configuration", "output", "params", "MACs", "RF/jump", "memory/img")
    table = [header]
    hidden = 0
    for r in d.rows:
        if r.status in (SAME, SHIFTED) and not show_same:
            hidden += 1
            continue
        config = _both((r.a.detail or r.a.text) if r.a else "", (r.b.detail or r.b.text) if r.b else "")
        if r.a is None or r.b is None:
            config = ((r.a or r.b).detail or (r.a or r.b).text)
        table.append(({SAME: " ", SHIFTED: " "}.get(r.status, r.status), r.a.name if r.a else "",
                      r.b.name if r.b else "", config,
                      _both(_shape(r.a), _shape(r.b)) if r.a and r.b else _shape(r.a or r.b),
                      _signed(r.params), _signed(r.macs),
                      _both(_rf(r.a), _rf(r.b)) if r.a and r.b else _rf(r.a or r.b),
                      _signed_bytes(r.memory)))
    lines = [f"A: {sa.filename} ({plural(len(sa.rows), 'layer')})   B: {sb.filename} ({plural(len(sb.rows), 'layer')})", ""]
    if len(table) > 1:
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        right = {5, 6, 8}
        for k, row in enumerate(table):
            cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
    else:
        lines.append("the layer lists are identical")
    counts = (f"{d.count(ADDED)} added, {d.count(REMOVED)} removed, {d.count(CHANGED)} changed, "
              f"{d.count(SAME) + d.count(SHIFTED)} unchanged"
              + (f" ({d.count(SHIFTED)} of them with a moved receptive field)" if d.count(SHIFTED) else "")
              + ("; --all lists them" if hidden else ""))
    lines += ["", counts, ""]
    t = d.totals()

    def total(label, key, fmt):
        v = t[key]
        delta = (_signed(v["delta"]) if fmt is None else _signed_bytes(v["delta"]))
        show = (lambda n: f"{n:,}") if fmt is None else human_bytes
        lines.append(f"{label:<13}{show(v['a']):>18} -> {show(v['b']):<18} {delta}")

    total("parameters", "params", None)
    if t["buffers"]["a"] or t["buffers"]["b"]:
        total("buffers", "buffers", None)
    total("MACs", "macs", None)
    total("activations", "activation_bytes_per_image", "bytes")
    total("inference", "inference_memory_bytes", "bytes")
    total("training", "training_memory_bytes", "bytes")
    if sa.output_shape != sb.output_shape:
        lines.append(f"output       {'x'.join(map(str, sa.output_shape))} -> {'x'.join(map(str, sb.output_shape))}")
    return "\n".join(lines)
