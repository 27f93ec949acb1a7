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


def test_plan_runs_the_residual_add_inside_its_bn():
    """``( ... - bn + shortcut ) - relu``: the bn step reads the shortcut too and applies the
    ReLU; the add and the ReLU have no step of their own. Not in inference plans (the bn
    folds into its conv there), not without fusion (the views need every buffer), not where
    the bn's output has another reader."""
    from cnnc.runtime.lower import lower

    model = cnnc.compile(RESNET_SMALL, input="3x16x16", classes=5)
    plan = lower(model.analysis)
    by_node = {s.node: s for s in plan.steps}
    adds = [s for s in plan.steps if s.fused_add]
    assert [(s.node, s.fused_add, s.fused_relu) for s in adds] == [("bn_3", "add_1", True),
                                                                  ("bn_5", "add_2", True)]
    assert by_node["bn_3"].inputs == ("conv_3", "bn_1")
    assert by_node["bn_5"].inputs == ("conv_5", "bn_6")  # after the shortcut's bn in the schedule
    order = [s.node for s in plan.steps]
    assert order.index("bn_6") < order.index("bn_5")
    assert "add_1" not in by_node and plan.alias["add_1"] == "bn_3"
    assert not any(s.fused_add for s in lower(model.analysis, inference=True).steps)
    assert not any(s.fused_add for s in lower(model.analysis, fuse_relu=False).steps)
    shared = cnnc.compile("conv3(4) - (conv3(4) - bn + id) - relu - gap - fc", input="3x8x8",
                          classes=5)
    assert any(s.fused_add for s in lower(shared.analysis).steps)
    two_readers = cnnc.compile("conv3(4) - bn - (conv3(4) - bn + id) - relu - gap - fc",
                               input="3x8x8", classes=5)
    steps = {s.node: s for s in lower(two_readers.analysis).steps}
    assert steps["bn_1"].fused_add is None and steps["bn_2"].fused_add == "add_1"


def test_fused_residual_matches_unfused_network():
    """Forward, loss and every gradient of a residual network with the fusion equal those of
    the plan that runs bn, add and ReLU as steps of their own (float64)."""
    from cnnc.runtime.executor import Executor
    from cnnc.runtime.lower import lower

    model = cnnc.compile(RESNET_SMALL, input="3x16x16", classes=5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, *model.input_shape))
    labels = rng.integers(0, 5, 4)
    results = []
    for fuse in (True, False):
        net = model.network(seed=2, dtype="float64")
        plan = lower(model.analysis, fuse_relu=fuse)
        ex = Executor(plan, 4, net.dtype, net.params, net.grads, net.buffers, net.rng)
        ex.input[...] = x
        ex.labels[...] = labels
        logits = ex.forward(True).copy()
        loss = ex.loss()
        ex.backward()
        results.append((logits, loss, net.grad.copy()))
    (l1, s1, g1), (l2, s2, g2) = results
    np.testing.assert_allclose(l1, l2, rtol=1e-12, atol=1e-12)
    assert abs(s1 - s2) < 1e-12
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
