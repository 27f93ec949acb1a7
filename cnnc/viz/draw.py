"""``cnnc draw``: the layer graph as a picture (SVG, PNG or PDF), with no system binary.

Keras' ``plot_model`` and Caffe's ``draw_net.py`` hand the graph to Graphviz' ``dot`` and
break where it is not installed. cnnc lays the graph out itself with a small layered
(Sugiyama-style) layout (:mod:`cnnc.lang.layout`, shared with the notebook display and the
live page, which draw it as plain SVG) and draws it here with matplotlib.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from ..errors import UsageError
from ..lang.layout import (COLOURS, Box, Layout, boxes_and_edges, fmt_params, fmt_shape,  # noqa: F401
                           layered_layout, model_title, place)

__all__ = ["Box", "Layout", "boxes_and_edges", "layered_layout", "render", "to_json", "COLOURS"]


def render(model, path: str | Path | None, expand: bool = False, direction: str = "TB") -> dict:
    """Lay out and draw ``model``'s graph; write it to ``path`` (format from the suffix)
    unless None. Returns the layout as data (boxes with positions, edges)."""
    if direction not in ("TB", "LR"):
        raise UsageError(f"--direction must be TB (top to bottom) or LR (left to right), got {direction!r}")
    fmt = None
    if path is not None:
        fmt = Path(path).suffix.lower().lstrip(".")
        if fmt not in ("svg", "png", "pdf"):
            raise UsageError(f"{path}: the picture must be .svg, .png or .pdf")
    p = place(model.analysis, expand, direction)
    boxes, lay, bw, bh = p.boxes, p.layout, p.bw, p.bh
    x0, x1, y0, y1 = p.bounds
    data = {
        "model": model.filename, "expand": expand, "direction": direction,
        "crossings": lay.crossings(),
        "boxes": [{"id": b.id, "title": b.title, "layers": b.layers, "shape": list(b.shape), "params": b.params,
                   "kind": p.kinds[b.id], "rank": lay.rank[b.id], "x": round(p.place(b.id)[0], 3),
                   "y": round(p.place(b.id)[1], 3)} for b in boxes],
        "edges": [list(e) for e in p.edges],
    }
    if path is None:
        return data
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    w_in, h_in = x1 - x0, y1 - y0 + 0.6
    fig = plt.figure(figsize=(max(w_in, 4), max(h_in, 2)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(x0 - max(0, (4 - w_in) / 2), x0 + max(w_in, 4) - max(0, (4 - w_in) / 2))
    ax.set_ylim(y1, y1 - max(h_in, 2))
    ax.axis("off")
    ax.text((x0 + x1) / 2, y0 - 0.15, model_title(model.filename, boxes),
            ha="center", va="top", fontsize=11, weight="bold")
    for chain in lay.paths.values():
        pts = p.edge_points(chain)
        if len(pts) > 2:
            ax.plot([q[0] for q in pts[:-1]], [q[1] for q in pts[:-1]], color="#555555", lw=1.0, zorder=1)
        ax.add_patch(FancyArrowPatch(pts[-2], pts[-1], arrowstyle="-|>", mutation_scale=10, color="#555555",
                                     lw=1.0, zorder=1, shrinkA=0, shrinkB=0))
    for b in boxes:
        cx, cy = p.place(b.id)
        ax.add_patch(FancyBboxPatch((cx - bw / 2, cy - bh / 2), bw, bh, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc=p.colour[b.id], ec="#333333", lw=1.4 if b.kind == "call" else 0.8, zorder=2))
        ax.text(cx, cy - bh * 0.22, b.title, ha="center", va="center", weight="bold", zorder=3,
                fontsize=min(9.0, 9.0 * 30 / max(len(b.title), 1)))
        sub = fmt_shape(b.shape) + ("" if b.kind == "input" else "   " + fmt_params(b.params))
        ax.text(cx, cy + bh * 0.08, sub, ha="center", va="center", fontsize=8, zorder=3)
        ax.text(cx, cy + bh * 0.32, b.name, ha="center", va="center", fontsize=6.5, color="#555555", zorder=3)
    from ..atomic import atomic_write_bytes

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text (searchable, small)
        fig.savefig(buf, format=fmt, dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), error=UsageError, what="picture")
    data["file"] = str(path)
    return data


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2)
