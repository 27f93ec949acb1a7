"""Every registered layer type, end to end through its executable Op (docs/design.md, "Tests").

One parametrized family runs over ``cnnc.layers.layer_types()``: a layer type registered
without a case table below fails ``test_layer`` (and ``test_every_layer_type_has_cases``).
For each case (a model-text snippet whose output node is the layer under test):

(a) the shape rule (``analysis.info[n].out_shape``) matches the shape the layer type's naive
    NumPy reference (``LayerType.reference``, float64) computes, and the kernel writes every
    element of a buffer of that shape and nothing past it;
(b) the forward pass matches that reference;
(c) the backward pass matches central finite differences in float64 of
    ``L = sum(y * dy)`` for a random ``dy``, for every input and every parameter.

Ops are built with ``node.type.make_op(cfg, info, in_shapes)`` and bound to arrays owned by
the test, as :class:`cnnc.runtime.executor.Executor` binds them. Whole-network tests at the end check the
lowering: ReLU fused into conv/fc, softmax fused into the loss, ``id`` elided, and gradient
summation over fan-out (finite differences of the network loss).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import conv_padding, numgrad

import cnnc
from cnnc.lang.graph import INPUT
from cnnc.layers import InferContext, layer_types, registry

# ---------------------------------------------------------------------------------------
# case tables: one entry per registered layer type
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    snippet: str  # model text; its output node is the layer under test
    input: str  # CxHxW, or CxL for a sequence (1-D network)
    training: bool = False
    batch: int = 2

    def __str__(self) -> str:
        mode = "-train" if self.training else ""
        return f"{self.snippet}@{self.input}{mode}"


CASES: dict[str, list[Case]] = {
    "conv": [
        Case("conv3(4)", "3x6x6"),
        Case("conv3(4, pad=valid)", "2x6x5"),
        Case("conv3(4, stride=2, pad=1)", "3x7x7"),
        Case("conv5(3, stride=2, pad=2)", "2x9x9"),
        Case("conv3(4, dilation=2)", "2x7x7"),
        Case("conv3(3, dilation=2, pad=valid)", "2x8x8"),
        Case("conv3(6, groups=3)", "3x5x5"),
        Case("conv1(8, groups=2, bias=false)", "4x5x5"),
        Case("conv3(4, bias=false)", "3x5x5"),
        Case("conv1x3(4)", "2x5x6"),
        Case("conv3x1(3, pad=valid)", "2x5x4"),
        Case("conv2(3, stride=2)", "2x6x6"),
        Case("conv1(4, stride=2)", "3x5x5"),
        Case("conv3(2, stride=3, pad=1)", "1x7x7"),
        Case("conv3(4, groups=2, stride=2, dilation=2, pad=2)", "4x8x8"),
        Case("conv4(3, pad=1)", "2x5x5"),
        Case("conv3(4, stride=2, pad=valid, edge=drop)", "3x6x6"),  # row/column 6 dropped, as PyTorch
        # 1-D: sequences (C, L)
        Case("conv2(1, pad=valid, bias=false)", "1x5"),
        Case("conv3(4)", "3x9"),
        Case("conv5(3, stride=2, pad=2)", "2x11"),
        Case("conv3(4, dilation=2)", "2x9"),
        Case("conv3(6, groups=3, stride=3, pad=1)", "3x7"),
        Case("conv1(4, bias=false)", "2x4"),
    ],
    "maxpool": [
        Case("pool", "2x6x6"),
        Case("maxpool3(stride=2)", "2x7x7"),
        Case("maxpool3(stride=2, pad=1)", "2x8x8"),
        Case("maxpool3(stride=1, pad=1)", "2x5x5"),
        Case("maxpool3(stride=2, round=ceil)", "2x8x8"),
        Case("maxpool3(stride=2, edge=drop)", "2x8x8"),
        Case("maxpool2(round=ceil)", "2x5x5"),
        Case("maxpool3(stride=2, pad=1, round=ceil)", "1x6x6"),
        Case("maxpool2x3(stride=1)", "2x5x6"),
        Case("maxpool3(stride=2, round=ceil)", "1x7x7"),
        Case("pool", "2x8"),
        Case("maxpool3(stride=2, pad=1)", "2x9"),
        Case("maxpool3(stride=2, round=ceil)", "2x8"),
    ],
    "avgpool": [
        Case("avgpool2", "2x6x6"),
        Case("avgpool3(stride=1, pad=1)", "2x5x5"),
        Case("avgpool3(stride=2, pad=1)", "2x8x8"),
        Case("avgpool3(stride=2, round=ceil)", "2x8x8"),
        Case("avgpool2(round=ceil)", "1x5x5"),
        Case("avgpool3(stride=2, pad=1, round=ceil)", "1x6x6"),
        Case("avgpool2x3(stride=1, pad=1)", "2x4x5"),
        Case("avgpool2", "2x6"),
        Case("avgpool3(stride=1, pad=1)", "2x5"),
        Case("avgpool3(stride=2, round=ceil)", "1x8"),
    ],
    "gap": [
        Case("gap", "3x4x4"),
        Case("gap", "2x1x1"),
        Case("gap", "4x3x5"),
        Case("gap", "3x7"),
    ],
    "maxout": [
        Case("maxout", "4x3x3"),
        Case("maxout(3)", "6x2x2"),
        Case("maxout(4)", "8x1x3"),
        Case("fc(6) - maxout(3)", "2x3x3"),
        Case("maxout", "4x5"),
    ],
    "relu": [
        Case("relu", "3x4x4"),
        Case("fc(7) - relu", "2x3x3"),
        Case("relu", "3x6"),
    ],
    "relu6": [
        Case("relu6", "3x4x4"),
        Case("fc(7) - relu6", "2x3x3"),
        Case("relu6", "3x6"),
    ],
    "leaky": [
        Case("leaky", "3x4x4"),
        Case("leaky(0.2)", "2x3x3"),
        Case("leaky(0)", "2x3x3"),
        Case("leaky(1)", "2x3x3"),
        Case("fc(7) - leaky(0.3)", "2x3x3"),
    ],
    "elu": [
        Case("elu", "3x4x4"),
        Case("elu(0.5)", "2x3x3"),
        Case("fc(7) - elu(2)", "2x3x3"),
    ],
    "tanh": [
        Case("tanh", "3x4x4"),
        Case("fc(7) - tanh", "2x3x3"),
        Case("tanh", "2x5"),
    ],
    "sigmoid": [
        Case("sigmoid", "3x4x4"),
        Case("fc(7) - sigmoid", "2x3x3"),
    ],
    "softmax": [  # no op: fused into the loss (see _check_softmax)
        Case("fc(4) - softmax", "2x3x3"),
        Case("conv1(2) - gap - fc(5) - softmax", "3x4x4"),
    ],
    "fc": [
        Case("fc(5)", "2x3x3"),
        Case("fc(4, bias=false)", "3x2x2"),
        Case("fc(6) - fc(3)", "2x3x3"),
        Case("fc(6) - fc(2, bias=false)", "1x4x4"),
        Case("fc(1)", "2x2x2"),
        Case("gap - fc(4)", "3x3x3"),
        Case("fc(5)", "2x6"),
        Case("gap - fc(4)", "3x5"),
    ],
    "flatten": [
        Case("flatten", "2x3x4"),
        Case("fc(5) - flatten", "2x2x2"),
        Case("flatten", "2x5"),
    ],
    "bn": [
        Case("bn", "3x4x4", training=True),
        Case("bn", "3x4x4"),
        Case("bn(eps=0.1)", "2x3x3", training=True),
        Case("bn(eps=0.1)", "2x3x3"),
        Case("bn(momentum=0.3)", "2x2x3", training=True, batch=3),
        Case("fc(5) - bn", "2x2x2", training=True, batch=4),
        Case("fc(5) - bn", "2x2x2"),
        Case("bn", "3x6", training=True),
        Case("bn", "3x6"),
    ],
    "lrn": [
        Case("lrn", "7x3x3"),
        Case("lrn(3, alpha=0.5, beta=0.75, k=1)", "4x3x3"),
        Case("lrn(5, alpha=2, beta=0.5, k=1)", "3x4x4"),
        Case("lrn(1, alpha=1, k=1)", "3x2x2"),
        Case("lrn(3, alpha=1, k=0.5)", "6x9"),
        Case("fc(6) - lrn(3, alpha=1, beta=1.5)", "2x2x2"),
    ],
    "dropout": [
        Case("dropout", "3x4x4"),
        Case("dropout(0.3)", "3x4x4"),
        Case("dropout(0.5)", "8x16x16", training=True),
        Case("dropout(0.2)", "8x16x16", training=True),
        Case("dropout(0)", "3x4x4", training=True),
        Case("fc(64) - dropout(0.3)", "2x2x2", training=True, batch=32),
        Case("dropout(0.4)", "8x64", training=True),
        Case("dropout", "3x6"),
    ],
    "concat": [
        Case("( conv1(2) | conv3(3) )", "2x4x4"),
        Case("( id | id )", "3x3x3"),
        Case("( id | id | id )", "2x2x3"),
        Case("( id | conv1(2) | maxpool3(stride=1, pad=1) )", "2x4x4"),
        Case("fc(4) - ( fc(3) | id )", "2x2x2"),
        Case("( conv1(2) | conv3(3) )", "2x6"),
    ],
    "add": [
        Case("( conv1(3) + id )", "3x4x4"),
        Case("( id + id )", "3x3x3"),
        Case("( id + conv1(3) + conv3(3) )", "3x4x4"),
        Case("( id + id + id )", "2x2x2"),
        Case("fc(4) - ( fc(4) + id )", "2x2x2"),
        Case("( conv3(3) + id )", "3x6"),
    ],
    "id": [  # no graph node: elided by the builder (see _check_identity)
        Case("id - conv1(2)", "3x4x4"),
        Case("conv1(2) - id", "3x4x4"),
        Case("( conv1(3) - id + id - id )", "3x4x4"),
    ],
}

# ---------------------------------------------------------------------------------------
# independent rules (the layers' NumPy references live with the layer types)
# ---------------------------------------------------------------------------------------


def bn_axes(x):
    return {4: (0, 2, 3), 3: (0, 2), 2: (0,)}[x.ndim]  # images, sequences, vectors


# ---------------------------------------------------------------------------------------
# harness: an op bound to arrays owned by the test
# ---------------------------------------------------------------------------------------


def compile_case(case: Case):
    return cnnc.compile(case.snippet, input=case.input)


@dataclass
class Bound:
    op: object
    kind: str
    type: object  # the LayerType
    cfg: object
    info: object
    sources: list  # distinct input node names (a node may feed several slots: ( id | id ))
    slots: list  # slot -> index into sources
    xs: list  # one array per distinct source
    params: dict
    grads: dict
    buffers: dict
    y: np.ndarray
    y_flat: np.ndarray  # y's storage plus a NaN guard tail
    batch: int

    def inputs(self):
        return [self.xs[i] for i in self.slots]

    def forward(self, training):
        self.op.forward(self.inputs(), self.y, training)
        return self.y

    def reference(self, training, params=None, buffers=None):
        return self.type.reference(self.cfg, self.inputs(), self.params if params is None else params,
                                   self.buffers if buffers is None else buffers, training)


GUARD = 7


def bind_case(case: Case, rng) -> Bound:
    model = compile_case(case)
    a = model.analysis
    node = a.output
    layer = a.layer(node)
    info = a.info[node]
    srcs = list(a.inputs(node))
    sources = list(dict.fromkeys(srcs))
    slots = [sources.index(s) for s in srcs]
    n = case.batch
    xs = [rng.standard_normal((n, *a.shapes[s])) for s in sources]

    def draw(spec):  # scales and variances ("ones") stay positive
        return rng.uniform(0.5, 1.5, spec.shape) if spec.init == "ones" else rng.standard_normal(spec.shape)

    params = {spec.name: draw(spec) for spec in info.params}
    grads = {spec.name: np.full(spec.shape, np.nan) for spec in info.params}
    buffers = {spec.name: draw(spec) for spec in info.buffers}
    op = layer.type.make_op(layer.config, info, [a.shapes[s] for s in srcs])
    op.relu = False
    op.bind(n, np.float64, params, grads, buffers, np.random.default_rng(123))
    size = n * int(np.prod(info.out_shape))
    y_flat = np.full(size + GUARD, np.nan)
    y = y_flat[:size].reshape((n, *info.out_shape))
    return Bound(op, layer.type.name, layer.type, layer.config, info, sources, slots, xs, params, grads,
                 buffers, y, y_flat, n)


def assert_grad_close(analytic, idx, numeric, what):
    got = analytic.reshape(-1)[idx]
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    err = np.abs(got - numeric)
    assert err.max(initial=0.0) <= 1e-6 * scale, (
        f"{what}: analytic gradient differs from finite differences by {err.max():.3g} "
        f"(worst entry {idx[err.argmax()]}: {got[err.argmax()]:.8g} vs {numeric[err.argmax()]:.8g})")


def check_backward_fd(b: Bound, training: bool, rng) -> None:
    """Backward vs central differences of L = sum(y * dy) for every input and parameter."""
    y = b.forward(training)
    dy = rng.standard_normal(y.shape)
    dxs = [np.full(b.xs[i].shape, np.nan) for i in b.slots]
    b.op.backward(b.inputs(), y, dy, dxs)
    for slot, dx in enumerate(dxs):
        assert np.isfinite(dx).all(), f"backward left entries of dx[{slot}] unwritten"
    for name, gr in b.grads.items():
        assert np.isfinite(gr).all(), f"backward left entries of d{name} unwritten"
    analytic_x = [np.zeros_like(x) for x in b.xs]
    for slot, dx in enumerate(dxs):
        analytic_x[b.slots[slot]] += dx  # a source feeding two slots gets both gradients
    analytic_p = {k: v.copy() for k, v in b.grads.items()}

    def loss():
        return float(np.sum(b.forward(training) * dy))

    for i, x in enumerate(b.xs):
        idx, est = numgrad(loss, x, rng, 120)
        assert_grad_close(analytic_x[i], idx, est, f"d/d{b.sources[i]}")
    for name, p in b.params.items():
        idx, est = numgrad(loss, p, rng, 120)
        assert_grad_close(analytic_p[name], idx, est, f"d/d{name}")


# ---------------------------------------------------------------------------------------
# the family: one test per (layer type, case)
# ---------------------------------------------------------------------------------------


def _family():
    out = []
    for t in layer_types():
        cases = CASES.get(t.name)
        if not cases:
            out.append(pytest.param(t.name, None, id=f"{t.name}-NO-CASES"))
            continue
        for i, case in enumerate(cases):
            out.append(pytest.param(t.name, case, id=f"{t.name}-{i}"))
    return out


def test_every_layer_type_has_cases():
    names = {t.name for t in layer_types()}
    missing = sorted(n for n in names if not CASES.get(n))
    assert not missing, f"layer types without a case table in {__file__}: {missing}"
    stale = sorted(set(CASES) - names)
    assert not stale, f"case tables for unregistered layer types: {stale}"


@pytest.mark.parametrize("kind, case", _family())
def test_layer(kind: str, case: Case | None):
    assert case is not None, (f"layer type {kind!r} is registered but has no entry in CASES "
                              f"of tests/test_layers_registry.py: add configurations for it")
    rng = np.random.default_rng(zlib.crc32(f"{kind}:{case}".encode()))
    if kind == "id":
        return _check_identity(case, rng)
    if kind == "softmax":
        return _check_softmax(case, rng)
    b = bind_case(case, rng)
    assert b.kind == kind, f"{case.snippet}: its output node is a {b.kind}, not a {kind}"
    if kind == "dropout" and case.training:
        return _check_dropout_training(b, rng)
    before = {k: v.copy() for k, v in b.buffers.items()}

    # (a) shape rule vs the shape the kernel writes; (b) forward vs the naive reference
    y = b.forward(case.training)
    assert np.isfinite(y).all(), "forward left entries of its output buffer unwritten"
    assert np.isnan(b.y_flat[-GUARD:]).all(), "forward wrote past the end of its output buffer"
    if kind == "conv":
        assert b.cfg.padding() == conv_padding(b.cfg), "the padding rule differs from docs/language.md's"
    ref = b.reference(case.training, buffers=before)
    assert ref.shape[1:] == b.info.out_shape, (
        f"shape rule says {b.info.out_shape}, the reference computes {ref.shape[1:]}")
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)

    if kind == "bn":
        _check_bn_running_stats(b, before, case.training)

    # (c) backward vs finite differences
    check_backward_fd(b, case.training, rng)


def _check_bn_running_stats(b: Bound, before, training: bool):
    """Training updates the running statistics like PyTorch; inference leaves them."""
    if not training:
        for k in before:
            np.testing.assert_array_equal(b.buffers[k], before[k])
        return
    x = b.xs[0]
    m = x.size // x.shape[1]
    mom = b.cfg.momentum
    mean = x.mean(axis=bn_axes(x))
    unbiased = x.var(axis=bn_axes(x)) * m / (m - 1)
    np.testing.assert_allclose(b.buffers["running_mean"], (1 - mom) * before["running_mean"] + mom * mean,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.buffers["running_var"], (1 - mom) * before["running_var"] + mom * unbiased,
                               rtol=1e-12, atol=1e-12)


def _check_dropout_training(b: Bound, rng):
    """Inverted dropout: y = x * mask / (1 - p), a mask kept with probability 1 - p, fresh
    each step, and a backward that uses the forward's mask."""
    p = b.cfg.p
    x = b.xs[0]
    y = b.forward(True).copy()
    assert np.isfinite(y).all() and np.isnan(b.y_flat[-GUARD:]).all()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-12)
    n = kept.size
    frac = kept.mean()
    assert abs(frac - (1 - p)) <= 5 * np.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (
        f"kept {frac:.4f} of the units, expected {1 - p}")
    dy = rng.standard_normal(y.shape)
    dx = np.full(x.shape, np.nan)
    b.op.backward([x], b.y, dy, [dx])
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0), rtol=1e-12, atol=0)
    # the forward is linear in x for a fixed mask: its backward is exactly that map's transpose
    if p > 0:
        y2 = b.forward(True).copy()
        assert not np.array_equal(y2 != 0, kept), "two training steps drew the same dropout mask"
        dx2 = np.empty_like(x)
        b.op.backward([x], b.y, dy, [dx2])
        np.testing.assert_allclose(dx2, np.where(y2 != 0, dy / (1 - p), 0.0), rtol=1e-12, atol=0)
    # inference: the identity, and its backward passes dy through
    y3 = b.forward(False)
    np.testing.assert_array_equal(y3, x)
    b.op.backward([x], b.y, dy, [dx])
    np.testing.assert_array_equal(dx, dy)


def _ctx():
    return InferContext(width=32, classes=3)


ID_EQUIVALENT = {  # each id case and the same network written without id
    "id - conv1(2)": "conv1(2)",
    "conv1(2) - id": "conv1(2)",
    "( conv1(3) - id + id - id )": "( conv1(3) + id )",
}


def _check_identity(case: Case, rng):
    """``id`` adds no node; its shape rule is the identity; a network is unchanged by it."""
    ident = registry()["id"]
    model = compile_case(case)
    assert not any(model.graph.nodes[n]["layer"] is not None
                   and model.graph.nodes[n]["layer"].type.name == "id" for n in model.graph.nodes)
    shape = cnnc.compiler.parse_shape(case.input)
    assert ident.infer(ident.make_config({}), [shape], _ctx()).out_shape == shape
    assert ident.infer(ident.make_config({}), [(7,)], _ctx()).out_shape == (7,)
    plain = ID_EQUIVALENT[case.snippet]
    with_id = cnnc.compile(f"{case.snippet} - fc", input=case.input, classes=3).network(seed=0, dtype="float64")
    without = cnnc.compile(f"{plain} - fc", input=case.input, classes=3).network(seed=0, dtype="float64")
    assert len(with_id.plan.steps) == len(without.plan.steps)
    x = rng.standard_normal((2, *shape))
    labels = np.array([0, 2])
    np.testing.assert_array_equal(with_id.forward(x), without.forward(x))
    l1, g1 = with_id.loss_and_grads(x, labels, input_grad=True)
    l2, g2 = without.loss_and_grads(x, labels, input_grad=True)
    assert l1 == l2
    np.testing.assert_array_equal(g1[INPUT], g2[INPUT])
    np.testing.assert_array_equal(with_id.grad, without.grad)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_softmax(case: Case, rng):
    """A final softmax has no op: it is fused into the cross-entropy loss (not applied twice)."""
    sm = registry()["softmax"]
    a = compile_case(case).analysis
    node = a.output
    assert a.layer(node).type.name == "softmax"
    in_shape = a.shapes[a.inputs(node)[0]]
    assert a.info[node].out_shape == in_shape
    assert sm.infer(sm.make_config({}), [(5,)], _ctx()).out_shape == (5,)
    classes = in_shape[0]
    body = case.snippet.rsplit(" - softmax", 1)[0]
    with_sm = cnnc.compile(case.snippet, input=case.input, classes=classes).network(seed=0, dtype="float64")
    without = cnnc.compile(body, input=case.input, classes=classes).network(seed=0, dtype="float64")
    shape = cnnc.compiler.parse_shape(case.input)
    x = rng.standard_normal((3, *shape))
    labels = rng.integers(0, classes, 3)
    logits = with_sm.forward(x)
    np.testing.assert_array_equal(logits, without.forward(x))
    np.testing.assert_allclose(with_sm.predict_proba(x), _softmax(logits), rtol=1e-12, atol=1e-15)
    loss, grads = with_sm.loss_and_grads(x, labels, input_grad=True)
    ref_loss = -np.mean(np.log(_softmax(logits)[np.arange(3), labels]))
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    loss2, grads2 = without.loss_and_grads(x, labels, input_grad=True)
    assert loss == loss2
    np.testing.assert_array_equal(grads[INPUT], grads2[INPUT])
    np.testing.assert_array_equal(with_sm.grad, without.grad)


# ---------------------------------------------------------------------------------------
# fused ReLU: every op whose type ``absorbs_relu``, with op.relu = True (what the lowering sets)
# ---------------------------------------------------------------------------------------


def _fused_family():
    out = []
    for t in layer_types():
        if t.absorbs_relu:
            for i, case in enumerate(CASES.get(t.name, [])):
                out.append(pytest.param(case, id=f"{t.name}-{i}-{case}"))
    return out


def test_fusing_types_are_the_expected_ones():
    assert {t.name for t in layer_types() if t.absorbs_relu} == {"conv", "fc", "bn", "add"}


@pytest.mark.parametrize("case", _fused_family())
def test_fused_relu_op(case: Case):
    """relu(layer(x)) and its gradient, for every case of every type that absorbs a ReLU, in
    the case's mode (training-mode batch norm too)."""
    for attempt in range(20):  # the first draw whose pre-ReLU output has both signs
        rng = np.random.default_rng(zlib.crc32(f"{case}:{attempt}".encode()))
        b = bind_case(case, rng)
        if b.kind == "bn" and not case.training:  # running statistics away from the batch's
            b.buffers["running_mean"] += 0.5
        before = {k: v.copy() for k, v in b.buffers.items()}
        ref = np.maximum(b.reference(case.training, buffers={k: v.copy() for k, v in before.items()}), 0)
        if 0 < (ref > 0).mean() < 1:
            break
    assert 0 < (ref > 0).mean() < 1, "no draw gave both signs before the ReLU"
    b.op.relu = True
    y = b.forward(case.training)
    assert np.isfinite(y).all() and np.isnan(b.y_flat[-GUARD:]).all()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    check_backward_fd(b, case.training, rng)


# ---------------------------------------------------------------------------------------
# whole networks: lowering (fusions, fan-out gradient sums) vs finite differences
# ---------------------------------------------------------------------------------------


def make_net(text: str, input: str, classes: int = 3, seed: int = 0, training: bool = False):
    net = cnnc.compile(text, input=input, classes=classes).network(seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 100)
    for layer, d in net.params.items():  # biases and BN affine away from their initial values
        for name, v in d.items():
            v += 0.2 * rng.standard_normal(v.shape)
    for layer, d in net.buffers.items():
        d["running_mean"][...] = rng.standard_normal(d["running_mean"].shape) * 0.3
        d["running_var"][...] = rng.uniform(0.5, 2.0, d["running_var"].shape)
    return net


def check_network_fd(net, x, labels, training: bool, rng, limit=40):
    """The network's loss gradients (parameters and input) vs central differences."""
    n = x.shape[0]
    loss, grads = net.loss_and_grads(x, labels, training=training, input_grad=True)
    loss_p, grads_p = net.loss_and_grads(x, labels, training=training)
    assert loss == pytest.approx(loss_p, rel=1e-12)
    for layer in grads_p:
        for name in grads_p[layer]:
            np.testing.assert_allclose(grads_p[layer][name], grads[layer][name], rtol=1e-10, atol=1e-12)
    prog = net.executor(n)
    xx = x.copy()

    def f():
        prog.input[...] = xx
        prog.labels[...] = labels
        prog.forward(training)
        return prog.loss()

    assert f() == pytest.approx(loss, rel=1e-12)
    idx, est = numgrad(f, xx, rng, limit)
    assert_grad_close(grads[INPUT], idx, est, "d loss/d input")
    for layer, d in net.params.items():
        for name, v in d.items():
            idx, est = numgrad(f, v, rng, limit)
            assert_grad_close(grads[layer][name], idx, est, f"d loss/d {layer}.{name}")
    return loss, grads


NETWORKS = [
    # fan-out of the network input (input gradient summed over 3 consumers)
    ("( conv3(4) | id | id ) - fc", "2x4x4", False),
    # fan-out of an inner value: residual, ( id | id ), ( id + id ), 3-way branches
    ("conv1(4) - ( conv3(4) + id ) - relu - fc", "3x4x4", False),
    ("conv1(3) - relu - ( id | id ) - fc", "2x4x4", False),
    ("conv1(3) - ( id + id ) - tanh - fc", "2x4x4", False),
    ("conv1(4) - ( conv1(2) | conv3(2) - relu | maxpool3(stride=1, pad=1) ) - gap - fc", "3x4x4", False),
    ("conv1(4) - ( ( conv1(4) + id ) | id ) - relu - ( id + conv1(8) ) - fc", "2x3x3", False),
    ("fc(6) - relu - ( fc(4) | id | fc(2) ) - fc", "2x3x3", False),
    ("conv1(3) - ( id + conv1(3) + conv3(3) - relu ) - fc", "2x3x3", False),
    # a conv whose output feeds a ReLU and something else: the ReLU must not be fused
    ("conv3(4) - ( relu | id ) - fc", "2x4x4", False),
    ("fc(6) - ( relu + id ) - fc", "2x3x3", False),
    # batch norm in both modes, inside a residual with a projection shortcut
    ("conv3(4) - bn - relu - ( conv3(4) - bn + conv1(4) - bn ) - relu - gap - fc", "2x5x5", True),
    ("conv3(4) - bn - relu - ( conv3(4) - bn + conv1(4) - bn ) - relu - gap - fc", "2x5x5", False),
    ("fc(6) - bn - leaky(0.1) - dropout(0.3) - fc", "2x2x2", False),
    # the whole zoo in one network
    ("conv3(4, bias=false) - maxpool3(stride=1, pad=1) - sigmoid - avgpool3(stride=2, pad=1, round=ceil) "
     "- conv3(6, groups=2, dilation=2) - maxout(2) - flatten - fc(6) - relu - fc - softmax", "2x6x6", False),
]


@pytest.mark.parametrize("text, input, training", NETWORKS, ids=[f"{t}@{i}{'-train' if tr else ''}"
                                                                 for t, i, tr in NETWORKS])
def test_network_gradients(text, input, training):
    rng = np.random.default_rng(5)
    net = make_net(text, input)
    shape = cnnc.compiler.parse_shape(input)
    x = rng.standard_normal((3, *shape))
    labels = rng.integers(0, net.classes, 3)
    check_network_fd(net, x, labels, training, rng)


@pytest.mark.parametrize("text", ["conv3(4) - relu - fc", "fc(6) - relu - fc(5) - relu - fc",
                                  "conv3(4) - relu - ( conv1(4) - relu + id ) - fc",
                                  "conv1(4) - bn - relu - ( conv3(4) - bn - relu + id ) - relu - fc",
                                  "bn - relu - fc(5) - bn - relu - fc"])
def test_relu_fusion_matches_unfused_math(text):
    """conv - relu, fc - relu, bn - relu and ( a + b ) - relu run as one fused op; outputs
    and gradients are the unfused math (NumPy reference of the whole network; finite
    differences, in training mode)."""
    net = make_net(text, "2x4x4")
    a = cnnc.compile(text, input="2x4x4", classes=3).analysis
    relu_inputs = {a.inputs(n)[0] for n in a.order if a.layer(n).type.name == "relu"}
    assert net.plan.fused_relu == frozenset(relu_inputs)
    scheduled = {s.node for s in net.plan.steps}
    assert not any(a.layer(n).type.name == "relu" for n in scheduled)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 4, 4))
    # the unfused math, node by node
    vals = {INPUT: x}
    for n in a.order:
        layer = a.layer(n)
        xs = [vals[s] for s in a.inputs(n)]
        p = {k: net.get(n, k) for k in net.params.get(n, {})}
        bufs = {k: v.copy() for k, v in net.buffers.get(n, {}).items()}
        vals[n] = layer.type.reference(layer.config, xs, p, bufs, False)
    np.testing.assert_allclose(net.forward(x), vals[a.output], rtol=1e-10, atol=1e-10)
    check_network_fd(net, x, rng.integers(0, 3, 3), True, rng)


def test_forward_in_chunks_and_modes_agree():
    """forward() in chunks of ``batch`` equals one pass; inference logits equal those of
    loss_and_grads(training=False); training-mode BN differs from inference-mode BN."""
    net = make_net("conv3(4) - bn - relu - pool - fc(6) - bn - fc", "2x4x4")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 4, 4))
    whole = net.forward(x)
    np.testing.assert_allclose(net.forward(x, batch=2), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([net.forward(x[i]) for i in range(5)]), whole,
                               rtol=1e-12, atol=1e-12)
    net.loss_and_grads(x, rng.integers(0, 3, 5), training=False)
    np.testing.assert_allclose(net.executor(5, need_input_grad=False).logits, whole, rtol=1e-12, atol=1e-12)
    assert not np.allclose(net.forward(x, training=True), whole)
