"""``cnnc draw``: the layer graph as a picture (SVG, PNG or PDF), with no system binary.

Keras' ``plot_model`` and Caffe's ``draw_net.py`` hand the graph to Graphviz' ``dot`` and
break where it is not installed. cnnc lays the graph out itself with a small layered
(Sugiyama-style) layout on networkx and draws it with matplotlib, both pip-installed:

1. **Layers** (ranks): longest path from the input, so every edge points down (or right).
2. **Dummy nodes** split edges that span several ranks (a ResNet shortcut), so they are
   routed around boxes and take part in the ordering.
3. **Ordering**: barycenter sweeps, down then up, keeping the order with fewest crossings.
4. **Coordinates**: each node moves towards the mean position of its neighbours, then the
   rank is pushed apart to keep a minimum gap, keeping the order (a few rounds).

Boxes are one per layer, or one per definition call (``basic(64)``) unless ``expand``;
each shows the layer, its output shape and its parameter count.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from ..errors import UsageError
from ..lang.graph import INPUT


@dataclass
class Box:
    id: str
    title: str  # what the box is: "conv 3x3, 64", "basic(64)"
    name: str  # graph node(s): "conv_2" or "conv_2..relu_3"
    shape: tuple[int, ...]
    params: int
    layers: list[str] = field(default_factory=list)
    kind: str = "layer"  # "input" | "layer" | "call"


# ---------------------------------------------------------------------------
# the graph to draw
# ---------------------------------------------------------------------------


def _group_key(node):
    for i, frame in enumerate(node.trace):
        if frame.kind == "call":
            return node.trace[: i + 1]
    return None


def boxes_and_edges(analysis, expand: bool = False) -> tuple[list[Box], list[tuple[str, str]]]:
    """The boxes (in schedule order) and the edges between them, from a model's analysis."""
    shapes = analysis.shapes
    boxes: dict[str, Box] = {INPUT: Box(INPUT, "input", INPUT, tuple(shapes[INPUT]), 0, [INPUT], "input")}
    owner = {INPUT: INPUT}
    groups: dict[tuple, str] = {}
    for n in analysis.order:
        node, info = analysis.layer(n), analysis.info[n]
        key = None if expand else _group_key(node)
        if key is None:
            title = node.type.draw_label(node.config, info)
            boxes[n] = Box(n, title, n, tuple(shapes[n]), info.param_count, [n])
            owner[n] = n
            continue
        bid = groups.get(key)
        if bid is None:
            bid = groups[key] = n
            boxes[bid] = Box(bid, key[-1].text, n, (), 0, [], "call")
        box = boxes[bid]
        box.layers.append(n)
        box.params += info.param_count
        box.shape = tuple(shapes[n])  # the last layer of the call: its output
        box.name = f"{box.layers[0]}..{n}" if len(box.layers) > 1 else n
        owner[n] = bid
    edges = []
    for n in analysis.order:
        for src in analysis.inputs(n):
            e = (owner[src], owner[n])
            if e[0] != e[1] and e not in edges:
                edges.append(e)
    return list(boxes.values()), edges


# ---------------------------------------------------------------------------
# layered layout
# ---------------------------------------------------------------------------


@dataclass
class Layout:
    rank: dict[str, int]  # every node (dummies included) -> its layer
    order: list[list[str]]  # nodes of each rank, in drawing order
    x: dict[str, float]  # position across the ranks
    paths: dict[tuple[str, str], list[str]]  # each edge -> the chain of nodes it runs through

    def crossings(self) -> int:
        return sum(_crossings(self.order[r], self.order[r + 1], self._segments(r)) for r in range(len(self.order) - 1))

    def _segments(self, r: int) -> list[tuple[str, str]]:
        segs = []
        for chain in self.paths.values():
            for a, b in zip(chain, chain[1:]):
                if self.rank[a] == r:
                    segs.append((a, b))
        return segs


def _crossings(upper: list[str], lower: list[str], segs: list[tuple[str, str]]) -> int:
    pu = {n: i for i, n in enumerate(upper)}
    pl = {n: i for i, n in enumerate(lower)}
    pairs = [(pu[a], pl[b]) for a, b in segs]
    count = 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            (a1, b1), (a2, b2) = pairs[i], pairs[j]
            if (a1 - a2) * (b1 - b2) < 0:
                count += 1
    return count


def layered_layout(nodes: list[str], edges: list[tuple[str, str]], sweeps: int = 12) -> Layout:
    """A Sugiyama-style layout of a DAG (nodes in a topological order)."""
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(g):
        raise UsageError("the layer graph has a cycle; it cannot be drawn in layers")
    rank: dict[str, int] = {}
    for n in nx.topological_sort(g):
        preds = list(g.predecessors(n))
        rank[n] = max((rank[p] + 1 for p in preds), default=0)
    # dummy nodes on long edges
    paths: dict[tuple[str, str], list[str]] = {}
    up: dict[str, list[str]] = {n: [] for n in nodes}
    down: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        chain = [a]
        for r in range(rank[a] + 1, rank[b]):
            d = f"\0{a}->{b}#{r}"
            rank[d] = r
            up[d], down[d] = [], []
            chain.append(d)
        chain.append(b)
        for u, v in zip(chain, chain[1:]):
            down[u].append(v)
            up[v].append(u)
        paths[(a, b)] = chain
    depth = max(rank.values()) + 1
    order: list[list[str]] = [[] for _ in range(depth)]
    for n in rank:  # nodes first in schedule order, dummies after their source
        order[rank[n]].append(n)
    order = [_initial(layer, up, order[r - 1] if r else []) for r, layer in enumerate(order)]
    best, best_c = [list(o) for o in order], None
    lay = Layout(rank, order, {}, paths)
    for it in range(sweeps):
        rng = range(1, depth) if it % 2 == 0 else range(depth - 2, -1, -1)
        for r in rng:
            ref = order[r - 1] if it % 2 == 0 else order[r + 1]
            nbrs = up if it % 2 == 0 else down
            pos = {n: i for i, n in enumerate(ref)}
            cur = {n: i for i, n in enumerate(order[r])}

            def bary(n):
                ps = [pos[m] for m in nbrs[n] if m in pos]
                return sum(ps) / len(ps) if ps else cur[n]
            order[r] = sorted(order[r], key=lambda n: (bary(n), cur[n]))
        lay.order = order
        c = lay.crossings()
        if best_c is None or c < best_c:
            best, best_c = [list(o) for o in order], c
        if c == 0:
            break
    lay.order = best
    lay.x = _coordinates(best, up, down)
    return lay


def _initial(layer: list[str], up, prev: list[str]) -> list[str]:
    pos = {n: i for i, n in enumerate(prev)}
    keyed = []
    for i, n in enumerate(layer):
        ps = [pos[m] for m in up[n] if m in pos]
        keyed.append((sum(ps) / len(ps) if ps else 0.0, i, n))
    return [n for _, _, n in sorted(keyed)]


def _coordinates(order: list[list[str]], up, down, gap: float = 1.0, dummy_gap: float = 0.5,
                 rounds: int = 8) -> dict[str, float]:
    x: dict[str, float] = {}
    for layer in order:
        w = len(layer) - 1
        for i, n in enumerate(layer):
            x[n] = (i - w / 2) * gap
    for _ in range(rounds):
        for layer in order:
            want = []
            for n in layer:
                nb = up[n] + down[n]
                want.append(sum(x[m] for m in nb) / len(nb) if nb else x[n])
            x.update(_separate(layer, want, gap, dummy_gap))
    return x


def _separate(layer: list[str], want: list[float], gap: float, dummy_gap: float) -> dict[str, float]:
    """Positions as close to ``want`` as a left-right and a right-left pass allow, in order."""
    def sep(a, b):
        return dummy_gap if a.startswith("\0") and b.startswith("\0") else gap
    left = list(want)
    for i in range(1, len(layer)):
        left[i] = max(left[i], left[i - 1] + sep(layer[i - 1], layer[i]))
    right = list(want)
    for i in range(len(layer) - 2, -1, -1):
        right[i] = min(right[i], right[i + 1] - sep(layer[i], layer[i + 1]))
    mid = [(a + b) / 2 for a, b in zip(left, right)]
    for i in range(1, len(layer)):  # the average keeps the order; restore the gap exactly
        mid[i] = max(mid[i], mid[i - 1] + sep(layer[i - 1], layer[i]))
    return dict(zip(layer, mid))


# ---------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------


def _fmt_shape(shape) -> str:
    return "x".join(map(str, shape))


def _fmt_params(p: int) -> str:
    if p >= 1_000_000:
        return f"{p / 1e6:.2f} M params"
    if p >= 10_000:
        return f"{p / 1e3:.1f} K params"
    return f"{p:,} params" if p else "no params"


COLOURS = {"input": "#e8e8e8", "call": "#d9ecf2"}  # boxes that are not one layer; a layer's is its draw_colour


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
    analysis = model.analysis
    boxes, edges = boxes_and_edges(analysis, expand)
    lay = layered_layout([b.id for b in boxes], edges)
    kinds = {b.id: (b.kind if b.kind != "layer" else analysis.layer(b.id).type.name) for b in boxes}
    bw, bh, step_x, step_r = 2.6, 0.78, 3.0, 1.25  # box size and spacing, in inches

    def place(n):  # node -> (x, y) in inches, y growing downwards for TB
        a, r = lay.x[n] * step_x, lay.rank[n] * step_r
        return (a, r) if direction == "TB" else (r * 2.6, a * 0.42)

    if direction == "LR":
        bw, bh = 2.3, 0.78
    pts = [place(n) for n in lay.rank]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs) - bw, max(xs) + bw, min(ys) - bh, max(ys) + bh
    data = {
        "model": model.filename, "expand": expand, "direction": direction,
        "crossings": lay.crossings(),
        "boxes": [{"id": b.id, "title": b.title, "layers": b.layers, "shape": list(b.shape), "params": b.params,
                   "kind": kinds[b.id], "rank": lay.rank[b.id], "x": round(place(b.id)[0], 3),
                   "y": round(place(b.id)[1], 3)} for b in boxes],
        "edges": [list(e) for e in edges],
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
    ax.text((x0 + x1) / 2, y0 - 0.15, f"{Path(model.filename).name}: {_fmt_params(sum(b.params for b in boxes))}",
            ha="center", va="top", fontsize=11, weight="bold")
    for (a, b), chain in lay.paths.items():
        pts = [place(n) for n in chain]
        if direction == "TB":
            pts[0] = (pts[0][0], pts[0][1] + bh / 2)
            pts[-1] = (pts[-1][0], pts[-1][1] - bh / 2)
        else:
            pts[0] = (pts[0][0] + bw / 2, pts[0][1])
            pts[-1] = (pts[-1][0] - bw / 2, pts[-1][1])
        if len(pts) > 2:
            ax.plot([p[0] for p in pts[:-1]], [p[1] for p in pts[:-1]], color="#555555", lw=1.0, zorder=1)
        ax.add_patch(FancyArrowPatch(pts[-2], pts[-1], arrowstyle="-|>", mutation_scale=10, color="#555555",
                                     lw=1.0, zorder=1, shrinkA=0, shrinkB=0))
    for b in boxes:
        cx, cy = place(b.id)
        colour = COLOURS[b.kind] if b.kind in COLOURS else analysis.layer(b.id).type.draw_colour
        ax.add_patch(FancyBboxPatch((cx - bw / 2, cy - bh / 2), bw, bh, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc=colour, ec="#333333", lw=1.4 if b.kind == "call" else 0.8, zorder=2))
        ax.text(cx, cy - bh * 0.22, b.title, ha="center", va="center", weight="bold", zorder=3,
                fontsize=min(9.0, 9.0 * 30 / max(len(b.title), 1)))
        sub = _fmt_shape(b.shape) + ("" if b.kind == "input" else "   " + _fmt_params(b.params))
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
