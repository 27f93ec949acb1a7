"""The reference models and the static analysis: docs/design.md's reference numbers exactly,
the width rule, parameter formulas, batch norm, receptive fields, the graph structure,
and the Python API."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

import cnnc
from cnnc import SourceError, UsageError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODELS = sorted(MODELS_DIR.glob("*.cnn"))


@pytest.fixture(scope="module")
def compiled():
    cache: dict[str, cnnc.Model] = {}

    def get(name: str) -> cnnc.Model:
        if name not in cache:
            cache[name] = cnnc.compile_file(MODELS_DIR / name)
        return cache[name]

    return get


def rows_of(model, type_name):
    return [r for r in model.summary.rows if r.type == type_name]


# ---- every model compiles -------------------------------------------------------------------


def test_there_are_reference_models():
    names = {p.name for p in MODELS}
    assert {"cs231n_conv.cnn", "lenet5.cnn", "alexnet.cnn", "vgg16.cnn", "resnet18.cnn",
            "vgg_cifar.cnn", "inception.cnn"} <= names


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_every_model_compiles(path):
    m = cnnc.compile_file(path)
    assert m.filename == str(path)
    assert m.summary.total_params > 0
    assert nx.is_directed_acyclic_graph(m.graph)
    assert m.graph.graph["output"] == m.summary.rows[-1].name
    if m.classes is not None:
        assert m.summary.output_shape == (m.classes,)
    json.loads(m.to_json())  # serializable
    assert "parameters" in m.summary_text()


# ---- docs/design.md's reference numbers --------------------------------------------------------

REFERENCE = [
    # file, params (exact), MACs, relative tolerance on MACs (0: exact)
    ("cs231n_conv.cnn", 760, 768_000, 0),
    ("lenet5.cnn", 61_706, 416_520, 0),
    ("alexnet.cnn", 61_100_840, 714e6, 0.005),
    ("vgg16.cnn", 138_357_544, 15.47e9, 0.001),
    ("vgg19.cnn", 143_667_240, 19.63e9, 0.001),  # torchvision's table: 143.7 M, 19.63 G
    ("resnet18.cnn", 11_689_512, 1.814e9, 0.001),
]


@pytest.mark.parametrize("name,params,macs,tol", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_reference_numbers(compiled, name, params, macs, tol):
    s = compiled(name).summary
    assert s.total_params == params
    if tol == 0:
        assert s.total_macs == macs
    else:
        assert abs(s.total_macs - macs) <= tol * macs, s.total_macs
    assert s.total_flops == 2 * s.total_macs


def test_reference_shapes(compiled):
    assert compiled("cs231n_conv.cnn").summary.output_shape == (10, 32, 32)
    for name in ("alexnet.cnn", "vgg16.cnn", "resnet18.cnn"):
        s = compiled(name).summary
        assert s.input_shape == (3, 224, 224) and s.output_shape == (1000,)
    # AlexNet's last pool gives 256x6x6, VGG's 512x7x7, ResNet's last block 512x7x7
    assert rows_of(compiled("alexnet.cnn"), "maxpool")[-1].output_shape == (256, 6, 6)
    assert rows_of(compiled("vgg16.cnn"), "maxpool")[-1].output_shape == (512, 7, 7)
    assert rows_of(compiled("resnet18.cnn"), "gap")[0].output_shape == (512,)


def test_exact_macs_by_hand():
    # LeNet-5: 6*28*28*25 + 16*10*10*150 + 400*120 + 120*84 + 84*10
    assert 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10 == 416_520
    # CS231n: 10 filters x 32x32 positions x 5*5*3
    assert 10 * 32 * 32 * 75 == 768_000


def test_vgg16_last_pool_receptive_field(compiled):
    pools = rows_of(compiled("vgg16.cnn"), "maxpool")
    assert len(pools) == 5
    last = pools[-1]
    assert last.receptive_field.size == (212, 212)
    assert last.receptive_field.jump == (32, 32)
    assert [p.receptive_field.size[0] for p in pools] == [6, 16, 44, 100, 212]
    assert [p.receptive_field.jump[0] for p in pools] == [2, 4, 8, 16, 32]


def test_vgg16_parameter_count_by_hand(compiled):
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs, cin = 0, 3
    for c in cfg:
        convs += (9 * cin + 1) * c
        cin = c
    fcs = (512 * 7 * 7 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
    assert convs + fcs == 138_357_544 == compiled("vgg16.cnn").summary.total_params
    assert [r.params for r in rows_of(compiled("vgg16.cnn"), "conv")] == [
        (9 * a + 1) * b for a, b in zip([3] + cfg[:-1], cfg)]


# ---- the width rule -----------------------------------------------------------------------------


def test_width_rule_vgg_cifar(compiled):
    m = compiled("vgg_cifar.cnn")
    assert [r.output_shape[0] for r in rows_of(m, "conv")] == [32, 32, 64, 64, 128, 128]
    assert m.summary.total_params == 307_498


def test_width_rule_from_api_and_header():
    text = "[[conv3-relu]*2 - pool]*3 - fc"
    m = cnnc.compile(text, input="3x32x32", classes=10, width=8)
    assert [r.output_shape[0] for r in rows_of(m, "conv")] == [8, 8, 16, 16, 32, 32]
    m = cnnc.compile("width 4\n" + text, input="3x32x32", classes=10)
    assert [r.output_shape[0] for r in rows_of(m, "conv")] == [4, 4, 8, 8, 16, 16]
    # the API overrides the header
    m = cnnc.compile("width 4\n" + text, input="3x32x32", classes=10, width=16)
    assert rows_of(m, "conv")[0].output_shape[0] == 16


def test_width_rule_stride_two_conv_doubles():
    m = cnnc.compile("conv3 - conv3(stride=2, pad=1) - conv3 - gap - fc", input="3x32x32", classes=10, width=8)
    # the down-sampling conv itself already uses the doubled width, like ResNet's
    assert [r.output_shape[0] for r in rows_of(m, "conv")] == [8, 16, 16]


def test_docstring_example():
    m = cnnc.compile("[[conv3-relu]*2 - pool]*3 - fc", input="3x32x32", classes=10)
    assert m.summary.total_params == 307_498


# ---- per-layer parameter formulas ---------------------------------------------------------------


def test_cs231n_formula(compiled):
    (row,) = compiled("cs231n_conv.cnn").summary.rows
    assert row.formula == "(5*5*3+1)*10 = 760"
    assert row.params == 760 and row.macs == 768_000
    assert row.output_shape == (10, 32, 32)


def test_lenet_formulas(compiled):
    m = compiled("lenet5.cnn")
    formulas = [r.formula for r in m.summary.rows if r.params]
    assert formulas == ["(5*5*1+1)*6 = 156", "(5*5*6+1)*16 = 2,416", "(16*5*5+1)*120 = 48,120",
                        "(120+1)*84 = 10,164", "(84+1)*10 = 850"]
    assert sum(r.params for r in m.summary.rows) == 61_706


def test_bias_free_and_grouped_formulas():
    m = cnnc.compile("conv3(16, bias=false) - conv1(32, groups=4) - fc(5, bias=false)", input="8x4x4")
    a, b, c = m.summary.rows
    assert a.formula == "3*3*8*16 = 1,152" and a.params == 1152
    assert b.formula == "(1*1*16/4+1)*32 = 160" and b.params == (1 * 1 * 4 + 1) * 32
    assert c.params == 32 * 4 * 4 * 5


def test_batch_norm_two_params_per_channel_and_buffers(compiled):
    m = cnnc.compile("conv3(12) - bn - relu - fc(7) - bn", input="3x8x8")
    bn1, bn2 = rows_of(m, "bn")
    assert bn1.params == 24 and bn1.formula == "2*12 = 24"
    assert bn2.params == 14
    info = m.analysis.info[bn1.name]
    assert [p.name for p in info.params] == ["gamma", "beta"]
    assert [b.name for b in info.buffers] == ["running_mean", "running_var"]
    assert all(b.shape == (12,) for b in info.buffers)
    assert m.summary.buffer_values == 2 * 12 + 2 * 7
    assert m.summary.to_dict()["buffers"] == 38
    assert "running statistics" in m.summary_text()
    # ResNet-18: 4,800 BN channels -> 9,600 parameters and 9,600 buffer values
    r = compiled("resnet18.cnn")
    channels = 64 + 2 * 2 * 64 + sum(5 * c for c in (128, 256, 512))
    assert channels == 4800
    assert sum(x.params for x in rows_of(r, "bn")) == 2 * channels
    assert r.summary.buffer_values == 2 * channels


# ---- receptive fields ---------------------------------------------------------------------------


def rf_by_hand(layers):
    """(kernel, stride) list -> (size, jump): r += (k-1)*j; j *= s."""
    r, j = 1, 1
    for k, s in layers:
        r += (k - 1) * j
        j *= s
    return r, j


@pytest.mark.parametrize("text,layers", [
    ("conv3 - conv3", [(3, 1), (3, 1)]),
    ("conv3 - pool - conv3", [(3, 1), (2, 2), (3, 1)]),
    ("[conv3 - relu]*3", [(3, 1)] * 3),
    ("conv5(pad=valid) - maxpool3(stride=2, round=ceil) - conv3", [(5, 1), (3, 2), (3, 1)]),
    ("conv7(stride=2, pad=3) - maxpool3(stride=2, pad=1) - conv3 - conv3", [(7, 2), (3, 2), (3, 1), (3, 1)]),
    ("conv3(dilation=2) - conv3", [(5, 1), (3, 1)]),
    ("conv1x7 - conv7x1", None),
])
def test_receptive_field_of_small_nets(text, layers):
    m = cnnc.compile(text, input="3x32x32", classes=10)
    rf = m.summary.rows[-1].receptive_field
    if layers is None:  # 1x7 then 7x1: 7x7 in the end, each axis on its own
        assert m.summary.rows[0].receptive_field.size == (1, 7)
        assert rf.size == (7, 7)
        return
    size, jump = rf_by_hand(layers)
    assert rf.size == (size, size)
    assert rf.jump == (jump, jump)


def test_receptive_field_unchanged_by_pointwise_and_largest_branch_wins():
    m = cnnc.compile("conv3 - relu - bn - (conv1(4) | conv5(4) | conv3(4))", input="3x16x16")
    rows = {r.name: r for r in m.summary.rows}
    assert rows["relu_1"].receptive_field.size == (3, 3)
    assert rows["concat_1"].receptive_field.size == (7, 7)  # 3 + (5-1)


def test_receptive_field_in_json(compiled):
    d = compiled("vgg16.cnn").summary.to_dict()
    pool = [layer for layer in d["layers"] if layer["type"] == "maxpool"][-1]
    assert pool["receptive_field"]["size"] == [212, 212]
    assert pool["receptive_field"]["jump"] == [32, 32]


# ---- memory -----------------------------------------------------------------------------------


def test_memory_figures_scale_with_batch():
    text = "conv3(8) - relu - pool - fc"
    m = cnnc.compile(text, input="3x8x8", classes=10)
    a, b = m.report(1), m.report(4)
    assert m.summary == a
    act = (8 * 8 * 8 + 8 * 8 * 8 + 8 * 4 * 4 + 10) * 4
    assert a.activation_bytes == act == b.activation_bytes
    weights = a.total_params * 4
    kept = (8 * 8 * 8 + 8 * 4 * 4 + 10) * 4  # the relu runs inside the conv: no buffer of its own
    argmax = 8 * 4 * 4 * 4  # int32 per pooled output
    for batch, s in ((1, a), (4, b)):
        assert s.batch == batch
        assert s.training_parts["activations"] == batch * kept
        assert s.training_bytes == 3 * weights + 2 * batch * kept + batch * argmax + batch * 3 * 8 * 8 * 4
        # sequential: the most alive at once is relu's output and its conv input (8x8x8 each)
        assert s.inference_bytes == weights + batch * 2 * 8 * 8 * 8 * 4
    assert a.training_parts["weights"] == weights
    assert a.training_parts["gradients"] == weights


# ---- the graph ---------------------------------------------------------------------------------


def test_graph_one_node_per_layer_instance(compiled):
    m = compiled("vgg_cifar.cnn")
    g = m.graph
    names = [n for n in g.nodes if n != "input"]
    assert len(names) == 6 + 6 + 3 + 1
    assert [n for n in names if n.startswith("conv")] == [f"conv_{i}" for i in range(1, 7)]
    # a chain: every node has one input
    assert all(g.in_degree(n) == 1 for n in names)
    assert list(nx.topological_sort(g))[0] == "input"
    assert m.layers == names


def test_graph_repetitions_are_separate_instances():
    m = cnnc.compile("[conv3(4) - relu]*3 - fc", input="3x8x8", classes=2)
    g = m.graph
    convs = [n for n in g.nodes if n.startswith("conv")]
    assert convs == ["conv_1", "conv_2", "conv_3"]
    layers = [g.nodes[n]["layer"] for n in convs]
    # all from the same source text, each with its own repetition index
    assert len({(lay.span.line, lay.span.column) for lay in layers}) == 1
    assert [lay.trace[-1].index for lay in layers] == [1, 2, 3]
    assert all(lay.trace[-1].kind == "repeat" and lay.trace[-1].count == 3 for lay in layers)
    # separate weights: 3 + 4 + 4 input channels
    assert [r.params for r in rows_of(m, "conv")] == [(27 + 1) * 4, (36 + 1) * 4, (36 + 1) * 4]


def test_graph_merge_slots_follow_branch_order():
    m = cnnc.compile("conv1(8) - (conv1(2) | id | conv3(5) | maxpool3(stride=1, pad=1))", input="3x8x8")
    g = m.graph
    concat = "concat_1"
    assert g.nodes[concat]["inputs"] == ("conv_2", "conv_1", "conv_3", "maxpool_1")
    slots = {u: d["slot"] for u, _, d in g.in_edges(concat, data=True)}
    assert slots == {"conv_2": 0, "conv_1": 1, "conv_3": 2, "maxpool_1": 3}
    assert m.summary.output_shape == (2 + 8 + 5 + 8, 8, 8)
    # id adds no node: the shortcut edge comes from the branch point
    assert not any(n.startswith("id") for n in g.nodes)


def test_graph_same_input_twice():
    m = cnnc.compile("conv3(4) - (id | id)", input="3x8x8")
    assert m.graph.nodes["concat_1"]["inputs"] == ("conv_1", "conv_1")
    assert m.summary.output_shape == (8, 8, 8)


def test_graph_residual_block(compiled):
    m = compiled("resnet18.cnn")
    g = m.graph
    adds = [n for n in g.nodes if n.startswith("add")]
    assert len(adds) == 8
    for a in adds:
        assert g.in_degree(a) == 2
    assert len(rows_of(m, "conv")) == 1 + 8 * 2 + 3  # stem, two per block, three shortcuts


def test_graph_node_attributes_span_and_trace():
    text = "input 3x16x16\nblk(c) = conv3(c) - relu\n[blk(4)]*2 - fc(3)"
    m = cnnc.compile(text)
    g = m.graph
    conv2 = g.nodes["conv_2"]["layer"]
    assert (conv2.span.line, conv2.span.column) == (2, 10)
    assert conv2.text == "conv3(c)"
    kinds = [f.kind for f in conv2.trace]
    assert kinds == ["repeat", "call"]  # outermost first
    assert conv2.trace[0].index == 2
    assert conv2.trace[1].text == "blk(4)"
    assert conv2.notes() == ("in blk(4), called at line 3:2", "in repetition 2 of blk(4)*2, line 3")
    fc = g.nodes["fc_1"]["layer"]
    assert (fc.span.line, fc.span.column) == (3, 14) and fc.trace == ()
    assert m.analysis.info["conv_2"].out_shape == (4, 16, 16)
    row = [r for r in m.summary.rows if r.name == "conv_2"][0]
    assert (row.line, row.column) == (2, 10)
    assert m.analysis.shapes["conv_2"] == (4, 16, 16)


def test_inception_modules(compiled):
    m = compiled("inception.cnn")
    concats = [r for r in m.summary.rows if r.type == "concat"]
    assert [r.output_shape for r in concats] == [(64 + 128 + 32 + 32, 32, 32), (128 + 192 + 96 + 64, 32, 32)]


# ---- the Python API ---------------------------------------------------------------------------


def test_api_input_and_classes_without_header():
    m = cnnc.compile("conv5(6, pad=valid) - relu - pool - fc", input="1x28x28", classes=10)
    assert m.input_shape == (1, 28, 28) and m.classes == 10
    assert m.summary.output_shape == (10,)
    m = cnnc.compile("conv3 - fc(4)", input=(2, 8, 8))
    assert m.input_shape == (2, 8, 8) and m.classes is None


def test_api_overrides_header():
    text = "input 3x32x32\nclasses 10\nconv3(4) - gap - fc"
    m = cnnc.compile(text, input="1x8x8", classes=3)
    assert m.input_shape == (1, 8, 8) and m.summary.output_shape == (3,)
    assert m.header.input == (1, 8, 8)


def test_api_reads_training_settings(compiled):
    h = compiled("lenet5.cnn").header
    assert h.optimizer == "sgd" and h.epochs == 12 and h.momentum == 0.9
    assert h.training()["data"] == "mnist"


def test_api_errors_are_exceptions_with_positions():
    with pytest.raises(SourceError) as info:
        cnnc.compile("conv3 -\n  reul - fc", input="3x8x8", classes=10, filename="net.cnn")
    err = info.value
    assert (err.line, err.column) == (2, 3) and err.kind == "unknown-layer"
    assert str(err).startswith("net.cnn:2:3: error: unknown layer 'reul'")
    assert isinstance(err, cnnc.CnncError)


def test_api_usage_errors():
    for bad in ("3x32x32x2", "axbxc", "3x0x3", (3,), "32"):
        with pytest.raises(UsageError):
            cnnc.compile("conv3", input=bad)
    with pytest.raises(UsageError):
        cnnc.compile("conv3 - fc", input="3x8x8", classes=0)
    with pytest.raises(UsageError):
        cnnc.compile("conv3", input="3x8x8").report(batch=0)


def test_compile_file_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        cnnc.compile_file(tmp_path / "missing.cnn")
    with pytest.raises(UsageError, match="directory"):
        cnnc.compile_file(tmp_path)
    binary = tmp_path / "bin.cnn"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    with pytest.raises(UsageError, match="not a text file"):
        cnnc.compile_file(binary)
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x8x8\nconv3 - reul\n")
    with pytest.raises(SourceError) as info:
        cnnc.compile_file(bad)
    assert str(info.value).startswith(f"{bad}:2:9: error:")


def test_summary_dict_shape(compiled):
    d = compiled("lenet5.cnn").summary.to_dict()
    assert d["total_params"] == 61_706 and d["total_macs"] == 416_520
    assert d["total_flops"] == 2 * 416_520
    assert d["input_shape"] == [1, 32, 32] and d["output_shape"] == [10]
    layer = d["layers"][0]
    for key in ("name", "type", "output_shape", "params", "formula", "macs", "receptive_field",
                "activation_bytes", "line", "column"):
        assert key in layer
    assert layer["output_shape"] == [6, 28, 28]


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_layer_graph_and_its_networkx_form_agree(path):
    """The stages read a LayerGraph; users get the same graph from networkx (Model.graph)."""
    m = cnnc.compile_file(path)
    lg, g = m.analysis.graph, m.graph
    assert isinstance(g, nx.DiGraph) and nx.is_frozen(g)
    assert list(lg.nodes) == list(g.nodes) == ["input", *m.layers]
    assert sorted((u, v, d["slot"]) for u, v, d in lg.edges) == sorted(g.edges(data="slot"))
    assert lg.number_of_edges() == g.number_of_edges() and lg.number_of_nodes() == g.number_of_nodes()
    for n in g.nodes:
        assert lg.nodes[n] == g.nodes[n]
        assert list(lg.successors(n)) == list(g.successors(n))
        assert sorted(lg.predecessors(n)) == sorted(g.predecessors(n))
        # every input is an edge, its slot the first position it is used at
        for slot, src in enumerate(g.nodes[n].get("inputs", ())):
            assert g.has_edge(src, n) and lg.has_edge(src, n)
            assert g.edges[src, n]["slot"] == g.nodes[n]["inputs"].index(src) <= slot
    assert g.graph["output"] == lg.graph["output"] == m.layers[-1]
    # insertion order is a topological order (the stages rely on it)
    position = {n: i for i, n in enumerate(lg.nodes)}
    assert all(position[u] < position[v] for u, v, _ in lg.edges)


def test_layer_graph_is_frozen():
    lg = cnnc.compile("conv3(4) - relu - fc", input="3x8x8", classes=2).analysis.graph
    with pytest.raises(TypeError, match="frozen"):
        lg.add_node("x")
    with pytest.raises(TypeError, match="frozen"):
        lg.add_edge("input", "fc_1")
    with pytest.raises(TypeError):
        lg.graph["output"] = "relu_1"
    with pytest.raises(TypeError):
        lg.nodes["x"] = {}
