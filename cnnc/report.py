"""The human-readable summary table of ``cnnc check``."""
from __future__ import annotations

from .infer import Summary


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
    rf = row.receptive_field
    size = f"{rf.size[0]}" if rf.size[0] == rf.size[1] else f"{rf.size[0]}x{rf.size[1]}"
    jump = f"{rf.jump[0]}" if rf.jump[0] == rf.jump[1] else f"{rf.jump[0]}x{rf.jump[1]}"
    return f"{size} /{jump}"


def summary_text(s: Summary) -> str:
    shape = "x".join(map(str, s.input_shape))
    head = f"{s.filename}: input {shape}" + (f", {s.classes} classes" if s.classes else "")
    header = ("layer", "configuration", "output", "parameters", "MACs", "RF /jump", "memory/img")
    rows = [header]
    for r in s.rows:
        config = r.detail or r.text
        rows.append((r.name, config, "x".join(map(str, r.output_shape)),
                     r.formula or "0", f"{r.macs:,}" if r.macs else "-", _rf(r),
                     human_bytes(r.activation_bytes)))
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
        "backward + their gradients)",
    ]
    return "\n".join(lines)
