"""How the executor sums the gradient of a value read by several layers: the backward order
(each step after all readers of its output; of the ready steps, the one scheduled first) and
adding in place by kernels that can (Op.adds_dx), against the scratch-and-add path."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS_DIR as MODELS

import cnnc

RESNET_SMALL = ("conv3(8, bias=false) - bn - relu - (conv3(8, bias=false) - bn - relu - "
                "conv3(8, bias=false) - bn + id) - relu - (conv3(16, stride=2, pad=1, bias=false) - bn - "
                "relu - conv3(16, bias=false) - bn + conv1(16, stride=2, bias=false) - bn) - relu - gap - fc")
INCEPTION_LIKE = ("conv3(8) - relu - (conv1(4) - relu | conv3(4) - relu - conv3(6) - relu | "
                  "maxpool3(stride=1, pad=1) - conv1(4) - relu) - conv3(8, stride=2, pad=1) - relu - "
                  "gap - fc")


def _grads(model, x, labels, adds: bool, dtype="float64"):
    net = model.network(seed=1, dtype=dtype)
    ex = net.executor(x.shape[0])
    calls = []
    if not adds:
        for op in ex.ops.values():
            op.adds_dx = lambda slot: False  # every sum through a scratch buffer
    inner = ex._accumulate
    ex._accumulate = lambda g, b: (calls.append(g.size), inner(g, b))
    ex.input[...] = x
    ex.labels[...] = labels
    net.step(ex)
    return net.grad.copy(), calls, ex


@pytest.mark.parametrize("text,input", [(RESNET_SMALL, "3x16x16"), (INCEPTION_LIKE, "3x12x12")],
                         ids=["resnet", "inception"])
def test_in_place_sums_match_scratch_sums(text, input):
    model = cnnc.compile(text, input=input, classes=5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, *model.input_shape))
    labels = rng.integers(0, 5, 4)
    g_add, calls_add, _ = _grads(model, x, labels, adds=True)
    g_ref, calls_ref, _ = _grads(model, x, labels, adds=False)
    assert calls_ref  # the reference path really sums through scratch buffers
    assert len(calls_add) < len(calls_ref)
    np.testing.assert_allclose(g_add, g_ref, rtol=1e-12, atol=1e-12)


def test_resnet8_sums_every_shared_gradient_in_place():
    """ResNet-8 at batch 128: the identity block's conv and both projection shortcuts add
    to the shared gradient; no scratch buffer is summed."""
    model = cnnc.compile_file(MODELS / "resnet8.cnn")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *model.input_shape)).astype(np.float32)
    _, calls, ex = _grads(model, x, rng.integers(0, 10, 8), adds=True, dtype="float32")
    assert calls == []
    order = [s.node for s in ex._backward_order(ex.plan.steps)]
    # each projection shortcut's backward runs after its block's main path
    assert order.index("conv_6") > order.index("conv_4")
    assert order.index("conv_9") > order.index("conv_7")


def test_backward_order_is_reverse_topological():
    model = cnnc.compile(INCEPTION_LIKE, input="3x12x12", classes=5)
    ex = model.network(seed=0).executor(2)
    steps = ex.plan.steps
    order = ex._backward_order(steps)
    assert sorted(s.node for s in order) == sorted(s.node for s in steps)
    done = set()
    for s in order:
        readers = [r.node for r in steps if s.output in r.inputs]
        assert all(r in done for r in readers), (s.node, readers)
        done.add(s.node)
