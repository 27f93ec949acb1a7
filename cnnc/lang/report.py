"""The report of ``cnnc check``: the analysis with memory at one batch size, as data
(:class:`Summary`, ``--json``) and as the human-readable table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .infer import Analysis, LayerRow, Memory
from ..layers import Shape


@dataclass(frozen=True)
class Summary:
    """The whole static report of a network, with memory figures at ``batch``."""

    filename: str
    input_shape: Shape
    classes: int | None
    output_shape: Shape
    rows: tuple[LayerRow, ...]
    total_params: int
    buffer_values: int  # batch-norm running statistics (not learned)
    total_macs: int
    batch: int
    activation_bytes: int  # per image, all layer outputs
    inference_bytes: int  # weights + peak live activations at `batch`
    training_bytes: int  # at `batch`, SGD with momentum
    training_parts: Mapping[str, object]

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def to_dict(self) -> dict:
        return {
            "file": self.filename,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "buffers": self.buffer_values,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "conventions": "1 MAC = 1 multiply + 1 add; FLOPs = 2 x MACs; only conv and fc count; "
                           "memory in float32 bytes",
            "batch": self.batch,
            "activation_bytes_per_image": self.activation_bytes,
            "inference_memory_bytes": self.inference_bytes,
            "training_memory_bytes": self.training_bytes,
            "training_memory": dict(self.training_parts),
            "layers": [r.to_dict() for r in self.rows],
        }


def summarize(analysis: Analysis, filename: str, batch: int = 1) -> Summary:
    """The report of ``analysis`` with memory at ``batch``."""
    memory: Memory = analysis.memory(batch)
    return Summary(
        filename=filename, input_shape=analysis.input_shape, classes=analysis.classes,
        output_shape=analysis.output_shape, rows=analysis.rows, total_params=analysis.total_params,
        buffer_values=analysis.buffer_values, total_macs=analysis.total_macs, batch=batch,
        activation_bytes=analysis.activation_bytes, inference_bytes=memory.inference,
        training_bytes=memory.training, training_parts=memory.parts)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def _rf(row) -> str:
    rf = row.receptive_field  # (H, W) for images, (L,) for sequences
    size = f"{rf.size[0]}" if len(set(rf.size)) == 1 else "x".join(map(str, rf.size))
    jump = f"{rf.jump[0]}" if len(set(rf.jump)) == 1 else "x".join(map(str, rf.jump))
    return f"{size} /{jump}"


def table_rows(s: Summary) -> list[tuple[str, ...]]:
    """The summary table's header and rows, as the cells' text."""
    rows = [("layer", "configuration", "output", "parameters", "MACs", "RF /jump", "memory/img")]
    for r in s.rows:
        config = r.detail or r.text
        rows.append((r.name, config, "x".join(map(str, r.output_shape)),
                     r.formula or "0", f"{r.macs:,}" if r.macs else "-", _rf(r),
                     human_bytes(r.activation_bytes)))
    return rows


def summary_html(s: Summary, footer: str = "") -> str:
    """The summary table as an HTML table (a notebook's display of a Model), then the
    totals' lines (``footer``: the text after the table) as preformatted text."""
    from html import escape

    header, *body = table_rows(s)
    right = {2, 3, 4, 5, 6}

    def cells(row, tag):
        return "".join(f'<{tag} style="text-align:{"right" if i in right else "left"}">{escape(c)}</{tag}>'
                       for i, c in enumerate(row))

    return ('<table class="cnnc-summary"><thead><tr>' + cells(header, "th") + "</tr></thead><tbody>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</tbody></table>"
            + (f"<pre>{escape(footer)}</pre>" if footer else ""))


def summary_text(s: Summary) -> str:
    shape = "x".join(map(str, s.input_shape))
    head = f"{s.filename}: input {shape}" + (" (1-D: channels x length)" if len(s.input_shape) == 2 else "")
    head += f", {s.classes} classes" if s.classes else ""
    header, *body = table_rows(s)
    rows = [header, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}
    lines = [head, ""]
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    weights = s.total_params * 4
    lines += [
        "",
        f"parameters   {s.total_params:,} ({human_bytes(weights)} as float32)"
        + (f"; plus {s.buffer_values:,} batch-norm running statistics (buffers)" if s.buffer_values else ""),
        f"MACs         {s.total_macs:,} ({human_count(s.total_macs)}); FLOPs {s.total_flops:,} "
        f"({human_count(s.total_flops)}), FLOPs = 2 x MACs, conv and fc only",
        f"activations  {human_bytes(s.activation_bytes)} per image",
        f"memory       at batch {s.batch}: inference {human_bytes(s.inference_bytes)}, "
        f"training {human_bytes(s.training_bytes)}",
        "             (training = weights + gradients + SGD momentum + activations kept for "
        "backward + their gradients + pooling indices and dropout masks)",
    ]
    return "\n".join(lines)
