"""`cnnc draw`: grouping into boxes, the layered layout's invariants, files and errors."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import pytest

import cnnc
from cnnc.cli.main import main
from cnnc.viz.draw import boxes_and_edges, layered_layout, render

MODELS = Path(__file__).resolve().parent.parent / "models"


def check_layout(boxes, edges):
    lay = layered_layout([b.id for b in boxes], edges)
    for a, b in edges:  # every edge points down, through one node per rank
        chain = lay.paths[(a, b)]
        assert [lay.rank[n] for n in chain] == list(range(lay.rank[a], lay.rank[b] + 1))
    for layer in lay.order:  # in order, at least the gap apart (0.5 between two dummies)
        xs = [lay.x[n] for n in layer]
        for (n1, x1), (n2, x2) in zip(zip(layer, xs), zip(layer[1:], xs[1:])):
            assert x2 - x1 >= (0.5 if n1[0] == n2[0] == "\0" else 1.0) - 1e-9
    return lay


@pytest.mark.parametrize("name", ["resnet18", "inception", "lenet5", "vgg16", "digits"])
@pytest.mark.parametrize("expand", [False, True])
def test_layout_invariants_and_no_crossings(name, expand):
    m = cnnc.compile_file(MODELS / f"{name}.cnn")
    boxes, edges = boxes_and_edges(m.analysis, expand)
    lay = check_layout(boxes, edges)
    assert lay.crossings() == 0  # these graphs are series-parallel: a drawing without crossings exists
    if expand:
        assert len(boxes) == m.graph.number_of_nodes()


def test_resnet_boxes_per_call():
    m = cnnc.compile_file(MODELS / "resnet18.cnn")
    boxes, edges = boxes_and_edges(m.analysis)
    titles = [b.title for b in boxes]
    assert titles.count("basic(64)") == 2 and titles.count("down(128)") == 1
    assert sum(b.params for b in boxes) == m.summary.total_params
    down = boxes[titles.index("down(128)")]
    assert down.shape == (128, 28, 28)
    # a call is one box: the graph of boxes is a chain
    assert all(len(set(a for a, b in edges if b == x.id)) <= 1 for x in boxes)


def test_inception_branches_side_by_side():
    m = cnnc.compile_file(MODELS / "inception.cnn")
    boxes, edges = boxes_and_edges(m.analysis, expand=True)
    lay = check_layout(boxes, edges)
    # the four branches of the first module start on one rank, next to each other
    relu1 = [b for b in boxes if b.id == "relu_1"][0]
    heads = [b for a, b in edges if a == relu1.id]
    assert len(heads) == 4 and len({lay.rank[h] for h in heads}) == 1
    assert len({round(lay.x[h], 6) for h in heads}) == 4


def test_crossing_minimization_on_a_crossed_input():
    # two parallel chains whose first ranks are listed in crossing order
    nodes = ["s", "a1", "b1", "b2", "a2", "t"]
    edges = [("s", "a1"), ("s", "b1"), ("a1", "a2"), ("b1", "b2"), ("a2", "t"), ("b2", "t")]
    lay = layered_layout(nodes, edges)
    assert lay.crossings() == 0
    g = nx.DiGraph(edges)
    assert nx.is_directed_acyclic_graph(g)


def test_svg_and_json(tmp_path, capsys):
    out = tmp_path / "r.svg"
    assert main(["draw", str(MODELS / "resnet18.cnn"), "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == str(out) and data["crossings"] == 0
    text = out.read_text()
    ET.fromstring(text)  # well-formed XML
    assert "basic(64)" in text and "11.69 M params" in text
    png = tmp_path / "i.png"
    assert main(["draw", str(MODELS / "inception.cnn"), "--expand", "--direction", "LR", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_output_suffix(tmp_path, capsys):
    assert main(["draw", str(MODELS / "lenet5.cnn"), "-o", str(tmp_path / "x.gif")]) == 1
    assert "must be .svg, .png or .pdf" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_render_without_file_returns_layout():
    data = render(cnnc.compile_file(MODELS / "lenet5.cnn"), None)
    assert [b["title"] for b in data["boxes"]][:3] == ["input", "conv 5x5, 6", "relu"]
    assert [b["rank"] for b in data["boxes"]] == list(range(len(data["boxes"])))


def test_titles_come_from_the_layers():
    # each layer type writes its own title (LayerType.draw_label): an activation's alpha,
    # maxout's k and dropout's p are shown; colours are the types' draw_colour
    m = cnnc.compile("conv3(8, stride=2) - elu(0.7) - leaky - maxout(2) - maxpool - dropout(0.25) - fc",
                     input="3x17x17", classes=4)
    data = render(m, None, expand=True)
    titles = [b["title"] for b in data["boxes"]]
    assert titles == ["input", "conv 3x3/2, 8", "elu 0.7", "leaky 0.01", "maxout 2", "maxpool 2x2/2",
                      "dropout 0.25", "fc 64 -> 4"]
    assert [b["kind"] for b in data["boxes"]][1:3] == ["conv", "elu"]
    a = m.analysis
    assert {a.layer(n).type.draw_colour for n in a.order if a.layer(n).type.has_filters} == {"#cfe3f7"}


def _segment_hits_box(p, q, box) -> bool:
    """Whether the segment p-q passes through the open rectangle ``box`` (x0, y0, x1, y1):
    Liang-Barsky clipping, written here independently of the layout code."""
    (x0, y0, x1, y1), (px, py), (qx, qy) = box, p, q
    t0, t1 = 0.0, 1.0
    dx, dy = qx - px, qy - py
    for edge_p, edge_q in ((-dx, px - x0), (dx, x1 - px), (-dy, py - y0), (dy, y1 - py)):
        if edge_p == 0:
            if edge_q <= 0:
                return False
            continue
        t = edge_q / edge_p
        if edge_p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 >= t1:
            return False
    return True


MODEL_FILES = sorted(MODELS.glob("*.cnn"))


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
@pytest.mark.parametrize("expand", [False, True], ids=["collapsed", "expanded"])
@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_edges_never_pass_behind_a_box(path, expand, direction):
    """No edge of any reference model's drawing runs through a box other than its own two ends
    (expanded Inception had branch edges behind boxes, which then seemed to have two outputs)."""
    from cnnc.lang.layout import place

    p = place(cnnc.compile_file(path).analysis, expand, direction)
    inset = 0.02  # touching a box's border at an end is fine
    rects = {b.id: (p.place(b.id)[0] - p.bw / 2 + inset, p.place(b.id)[1] - p.bh / 2 + inset,
                    p.place(b.id)[0] + p.bw / 2 - inset, p.place(b.id)[1] + p.bh / 2 - inset) for b in p.boxes}
    for (a, b), chain in p.layout.paths.items():
        pts = p.edge_points(chain)
        for q0, q1 in zip(pts, pts[1:]):
            hits = [n for n, r in rects.items() if n not in (a, b) and _segment_hits_box(q0, q1, r)]
            assert not hits, f"{path.stem}: edge {a} -> {b} passes behind {hits}"
        # and the ends: the edge leaves its source and reaches its target on their borders
        assert not _segment_hits_box(pts[0], pts[1], rects[a]) and not _segment_hits_box(pts[-2], pts[-1], rects[b])


def test_long_left_to_right_layouts_wrap():
    """LeNet-5 drawn left to right is no longer a 31-inch strip: it wraps into rows and stays
    at most about three times as wide as tall; a short chain stays on one row."""
    from cnnc.lang.layout import place

    p = place(cnnc.compile_file(MODELS / "lenet5.cnn").analysis, False, "LR")
    x0, x1, y0, y1 = p.bounds
    assert (x1 - x0) / (y1 - y0) <= 3.0 and len({p.row_of(b.id) for b in p.boxes}) > 1
    short = place(cnnc.compile("conv3 - relu - fc", input="1x8x8", classes=3).analysis, False, "LR")
    assert {short.row_of(b.id) for b in short.boxes} == {0}
