"""The layer graph's layout: boxes (one per layer, or one per definition call), a layered
(Sugiyama-style) layout of them, and a small SVG drawing in pure Python. ``cnnc draw``
(:mod:`cnnc.viz.draw`) draws the same layout with matplotlib; a notebook shows the SVG
(``Model._repr_html_``); the live training page shows it too.

1. **Layers** (ranks): longest path from the input, so every edge points down (or right).
2. **Dummy nodes** split edges that span several ranks (a ResNet shortcut), so they are
   routed around boxes and take part in the ordering.
3. **Ordering**: barycenter sweeps, down then up, keeping the order with fewest crossings.
4. **Coordinates**: each node moves towards the mean position of its neighbours, then the
   rank is pushed apart to keep a minimum gap, keeping the order (a few rounds).

Boxes are one per layer, or one per definition call (``basic(64)``) unless ``expand``;
each shows the layer, its output shape and its parameter count. networkx is imported only
when a layout is made.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .graph import INPUT


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
    import networkx as nx  # here: `cnnc check` imports the language without networkx

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
# placing and drawing
# ---------------------------------------------------------------------------


def fmt_shape(shape) -> str:
    return "x".join(map(str, shape))


def fmt_params(p: int) -> str:
    if p >= 1_000_000:
        return f"{p / 1e6:.2f} M params"
    if p >= 10_000:
        return f"{p / 1e3:.1f} K params"
    return f"{p:,} params" if p else "no params"


COLOURS = {"input": "#e8e8e8", "call": "#d9ecf2"}  # boxes that are not one layer; a layer's is its draw_colour


@dataclass
class Placed:
    """A laid-out graph in inches (y grows downwards): boxes, the layout, box size, bounds.

    Edges never pass behind a box: between two ranks an edge runs in the free band between
    their rows (columns, left to right), and through a rank it does not stop at (a dummy
    node) it runs straight along the rank's direction, at a position the layout keeps a gap
    away from every box. A left-to-right layout too long for its height wraps into rows
    (``row_of``): an edge from the end of one row to the next leaves the last column on the
    right, runs back in the gap below the row and enters the next row from the left."""

    boxes: list[Box]
    edges: list[tuple[str, str]]
    layout: Layout
    place: Callable[[str], tuple[float, float]]
    colour: dict[str, str]
    kinds: dict[str, str]
    bw: float
    bh: float
    bounds: tuple[float, float, float, float]  # x0, x1, y0, y1
    direction: str
    row_of: Callable[[str], int] = lambda n: 0  # noqa: E731  (wrapped LR rows; 0 otherwise)
    row_bottom: Callable[[int], float] = lambda r: 0.0  # noqa: E731  (y below row r's boxes)
    margin: float = 0.3  # how far a wrapping edge runs beside the boxes

    def _ends(self, n: str, dummy: bool) -> tuple[tuple[float, float], tuple[float, float]]:
        """Where an edge enters and leaves node ``n`` (a dummy: straight through its rank)."""
        x, y = self.place(n)
        if self.direction == "TB":
            return (x, y - self.bh / 2), (x, y + self.bh / 2)
        return (x - self.bw / 2, y), (x + self.bw / 2, y)

    def edge_points(self, chain: list[str]) -> list[tuple[float, float]]:
        """The polyline of an edge, from the bottom (right) of its source box to the top
        (left) of its target box."""
        pts: list[tuple[float, float]] = []
        for i, n in enumerate(chain):
            into, out = self._ends(n, n.startswith("\0"))
            if i > 0:
                prev = chain[i - 1]
                if self.row_of(prev) != self.row_of(n):  # wrap to the next row
                    px, py = pts[-1]
                    gap_y = self.row_bottom(self.row_of(prev)) + self.margin
                    pts += [(px + self.margin, py), (px + self.margin, gap_y),
                            (into[0] - self.margin, gap_y), (into[0] - self.margin, into[1])]
                pts.append(into)
            if 0 < i < len(chain) - 1 or i == 0:
                if i == 0 or out != into:
                    pts.append(out)
        return pts


def place(analysis, expand: bool = False, direction: str = "TB") -> Placed:
    """Boxes and edges of ``analysis`` laid out, with positions in inches."""
    if direction not in ("TB", "LR"):
        raise UsageError(f"--direction must be TB (top to bottom) or LR (left to right), got {direction!r}")
    boxes, edges = boxes_and_edges(analysis, expand)
    lay = layered_layout([b.id for b in boxes], edges)
    kinds = {b.id: (b.kind if b.kind != "layer" else analysis.layer(b.id).type.name) for b in boxes}
    colour = {b.id: COLOURS[b.kind] if b.kind in COLOURS else analysis.layer(b.id).type.draw_colour
              for b in boxes}
    if direction == "TB":
        bw, bh, step_x, step_r = 2.6, 0.78, 3.0, 1.25  # box size and spacing, in inches

        def at(n):  # node -> (x, y) in inches, y growing downwards
            return lay.x[n] * step_x, lay.rank[n] * step_r

        pts = [at(n) for n in lay.rank]
        xs, ys = [q[0] for q in pts], [q[1] for q in pts]
        bounds = (min(xs) - bw, max(xs) + bw, min(ys) - bh, max(ys) + bh)
        return Placed(boxes, edges, lay, at, colour, kinds, bw, bh, bounds, direction)
    bw, bh, step_r, step_a, row_gap = 2.3, 0.78, 2.9, 1.26, 0.9
    lo = min(lay.x.values())
    span = (max(lay.x.values()) - lo) * step_a + bh  # one row's height
    depth = len(lay.order)
    per_row = _ranks_per_row(depth, step_r, span + row_gap)
    rows = -(-depth // per_row)

    def row_of(n: str) -> int:
        return lay.rank[n] // per_row

    def row_top(r: int) -> float:
        return r * (span + row_gap)

    def at(n):  # node -> (x, y): ranks left to right, wrapped into rows
        return (lay.rank[n] % per_row) * step_r, row_top(row_of(n)) + (lay.x[n] - lo) * step_a + bh / 2

    margin = 0.3
    bounds = (-bw / 2 - margin - 0.2, (min(per_row, depth) - 1) * step_r + bw / 2 + margin + 0.2,
              -0.1, row_top(rows - 1) + span + 0.1)
    return Placed(boxes, edges, lay, at, colour, kinds, bw, bh, bounds, direction,
                  row_of, lambda r: row_top(r) + span, margin)


def _ranks_per_row(depth: int, step: float, row_height: float, widest: float = 2.0,
                   max_width: float = 16.0) -> int:
    """How many ranks a left-to-right row holds: all of them unless the picture would be wider
    than ``max_width`` inches and more than ``widest`` times as wide as tall; then the count
    whose wrapped picture comes closest to that ratio."""
    def ratio(k: int) -> float:
        return (k * step) / (-(-depth // k) * row_height)

    if depth * step <= max_width or ratio(depth) <= widest:
        return depth
    return min(range(2, depth + 1), key=lambda k: abs(ratio(k) - widest))


def svg(analysis, expand: bool = False, direction: str = "TB", scale: float = 72.0,
        title: str | None = None) -> str:
    """The layer graph as an SVG document (pure Python: no matplotlib, no Graphviz), the
    layout and box contents of ``cnnc draw``. ``scale``: pixels per inch."""
    p = place(analysis, expand, direction)
    x0, x1, y0, y1 = p.bounds
    top = 0.45 if title else 0.1
    w, h = (x1 - x0) * scale, (y1 - y0 + top) * scale

    def X(x):
        return round((x - x0) * scale, 1)

    def Y(y):
        return round((y - y0 + top) * scale, 1)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
           f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="sans-serif" class="cnnc-graph">',
           '<defs><marker id="cnnc-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/>'
           '</marker></defs>']
    if title:
        out.append(f'<text x="{w / 2:.0f}" y="{0.3 * scale:.0f}" text-anchor="middle" font-size="14" '
                   f'font-weight="bold">{escape(title)}</text>')
    for chain in p.layout.paths.values():
        pts = " ".join(f"{X(a)},{Y(b)}" for a, b in p.edge_points(chain))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#555" stroke-width="1.2" '
                   'marker-end="url(#cnnc-arrow)"/>')
    for b in p.boxes:
        cx, cy = p.place(b.id)
        bx, by = X(cx - p.bw / 2), Y(cy - p.bh / 2)
        sub = fmt_shape(b.shape) + ("" if b.kind == "input" else " \u00b7 " + fmt_params(b.params))
        size = min(12.0, 12.0 * 30 / max(len(b.title), 1))
        out.append(f'<g><title>{escape(b.name)}</title>'
                   f'<rect x="{bx}" y="{by}" width="{p.bw * scale:.1f}" height="{p.bh * scale:.1f}" rx="6" '
                   f'fill="{p.colour[b.id]}" stroke="#333" stroke-width="{1.6 if b.kind == "call" else 0.9}"/>'
                   f'<text x="{X(cx)}" y="{Y(cy - p.bh * 0.22) + 4}" text-anchor="middle" font-size="{size:.1f}" '
                   f'font-weight="bold">{escape(b.title)}</text>'
                   f'<text x="{X(cx)}" y="{Y(cy + p.bh * 0.08) + 4}" text-anchor="middle" font-size="10.5">'
                   f'{escape(sub)}</text>'
                   f'<text x="{X(cx)}" y="{Y(cy + p.bh * 0.32) + 3}" text-anchor="middle" font-size="8.5" '
                   f'fill="#555">{escape(b.name)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def model_title(filename: str, boxes: list[Box]) -> str:
    return f"{Path(filename).name}: {fmt_params(sum(b.params for b in boxes))}"
