"""The inference plan (lower(..., inference=True)): batch norms folded into the conv or fc
before them, ReLUs fused after the fold, dropout skipped. Checked against the unfused
training executor in inference mode (float64, 1e-10), against PyTorch's eval mode, and for
staleness after parameters change."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS_DIR as MODELS

import cnnc
from cnnc.errors import UsageError
from cnnc.runtime.lower import lower
from cnnc.runtime.optim import Optimizer

# every folding situation: conv with and without bias, fc - bn - relu, a bn after an add
# (not foldable), a conv with two consumers (not foldable), dropout, bn on a vector
MIXED = ("conv3(6) - bn - relu - conv3(8, bias=false) - bn - relu - "
         "(conv3(8, bias=false) - bn + id) - bn - relu - "
         "(conv1(8) | conv1(4)) - bn - pool - dropout(0.3) - fc(12) - bn - relu - fc")


def perturbed(text, input="3x8x8", classes=5, dtype="float64", seed=0):
    model = cnnc.compile(text, input=input, classes=classes)
    net = model.network(seed=seed, dtype=dtype) if dtype != "float32" else model.network(seed=seed)
    rng = np.random.default_rng(seed + 7)
    for layer in net.layer_names():
        for name, view in {**net.params.get(layer, {}), **net.buffers.get(layer, {})}.items():
            if name == "running_var":
                view[...] = rng.uniform(0.3, 2.0, view.shape)
            elif name in ("gamma", "running_mean", "beta", "b"):
                view[...] = rng.standard_normal(view.shape) * 0.5 + (1.0 if name == "gamma" else 0.0)
    return model, net, rng


def unfused_logits(net, x):
    ex = net.executor(x.shape[0])
    ex.input[...] = x
    return ex.forward(False).copy()


def test_plan_folds_where_bn_is_the_only_consumer():
    model = cnnc.compile(MIXED, input="3x8x8", classes=5)
    plan = lower(model.analysis, inference=True)
    train = lower(model.analysis)
    kinds = {n: model.analysis.layer(n).type.name for n in model.analysis.order}
    folded = {s.node: s.folded_bn for s in plan.steps if s.folded_bn}
    # conv_1, conv_2, conv_3 (inside the residual branch) and fc_1 absorb their bn
    assert sorted(kinds[n] for n in folded) == ["conv", "conv", "conv", "fc"]
    assert all(kinds[b] == "bn" for b in folded.values())
    # the bn after the add and the bn after the concat stay steps of their own
    step_kinds = [kinds[s.node] for s in plan.steps]
    assert step_kinds.count("bn") == 2
    assert "dropout" not in step_kinds and "dropout" in [kinds[s.node] for s in train.steps]
    # conv - bn - relu: the relu runs inside the conv after the fold
    assert {n for n in folded if kinds[n] in ("conv", "fc")} - {"conv_3"} <= plan.fused_relu
    assert not any(s.folded_bn for s in train.steps)
    assert plan.params == train.params and plan.buffers == train.buffers


@pytest.mark.parametrize("text,input", [(MIXED, "3x8x8"),
                                        ((MODELS / "resnet8.cnn").read_text(), None)])
def test_folded_matches_unfused_float64(text, input):
    model = cnnc.compile(text, input=input, classes=None if input is None else 5)
    net = model.network(seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    for layer in net.layer_names():
        for name, view in {**net.params.get(layer, {}), **net.buffers.get(layer, {})}.items():
            if name == "running_var":
                view[...] = rng.uniform(0.3, 2.0, view.shape)
            elif name in ("gamma", "running_mean", "beta", "b"):
                view[...] = rng.standard_normal(view.shape) * 0.5 + (1.0 if name == "gamma" else 0.0)
    x = rng.standard_normal((3, *model.input_shape))
    ours = net.forward(x)
    assert net.inference_executor(3).plan.inference
    ref = unfused_logits(net, x)
    assert np.abs(ours - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max())
    probs = net.predict_proba(x)
    e = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-10, atol=1e-12)


def test_refolds_after_parameters_change():
    """set(), load_state() and optimizer steps (in place on the flat array) all show up."""
    model, net, rng = perturbed(MIXED)
    x = rng.standard_normal((4, *model.input_shape))
    before = net.forward(x)
    net.set("bn_1", "gamma", net.get("bn_1", "gamma") * 1.5)
    net.set("bn_1", "running_var", net.get("bn_1", "running_var") * 0.5)
    after_set = net.forward(x)
    assert np.abs(after_set - before).max() > 1e-3
    np.testing.assert_allclose(after_set, unfused_logits(net, x), rtol=0, atol=1e-10)
    state = net.state()
    y = rng.integers(0, net.classes, 4)
    opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9)
    for _ in range(2):
        net.loss_and_grads(x, y)  # training mode: running statistics move too
        opt.step(0.05)
    stepped = net.forward(x)
    np.testing.assert_allclose(stepped, unfused_logits(net, x), rtol=0, atol=1e-10)
    assert np.abs(stepped - after_set).max() > 1e-3
    net.load_state(state)
    np.testing.assert_allclose(net.forward(x), after_set, rtol=0, atol=1e-12)


def test_inference_executor_has_no_backward():
    model, net, rng = perturbed(MIXED)
    ex = net.inference_executor(2)
    with pytest.raises(UsageError):
        ex.backward()
    with pytest.raises(UsageError):
        ex.forward(True)


def test_network_without_bn_reuses_training_executor():
    net = cnnc.compile_file(MODELS / "lenet5.cnn").network(seed=0)
    assert net.inference_executor(2) is net.executor(2)


def test_resnet8_eval_mode_against_torch():
    torch = pytest.importorskip("torch")
    from test_vs_torch import TorchNet, close

    model = cnnc.compile_file(MODELS / "resnet8.cnn")
    net = model.network(seed=0)
    rng = np.random.default_rng(5)
    for layer in net.layer_names():
        for name, view in {**net.params.get(layer, {}), **net.buffers.get(layer, {})}.items():
            if name == "running_var":
                view[...] = rng.uniform(0.3, 2.0, view.shape)
            elif name in ("gamma", "running_mean", "beta", "b"):
                view[...] = rng.standard_normal(view.shape) * 0.2 + (1.0 if name == "gamma" else 0.0)
    tnet = TorchNet(model.analysis, net)
    x = rng.standard_normal((3, *model.input_shape)).astype(np.float32)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tnet.eval()
        with torch.no_grad():
            theirs = tnet(torch.from_numpy(x))
    finally:
        torch.set_num_threads(old)
    assert any(s.folded_bn for s in net.inference_executor(3).plan.steps)
    close(net.forward(x), theirs, 2e-4, "logits (eval mode, folded batch norm)")


@pytest.mark.parametrize("text, input", [
    ("[[conv3-relu]*2 - pool]*2 - fc", "3x32x32"),  # Winograd layers (32 and 64 channels)
    ("conv3(16) - bn - relu - conv3(32, stride=2, pad=1) - bn - relu - gap - fc", "3x16x16"),
])
def test_single_images_match_the_batch(text, input):
    """A batch smaller than the thread count takes the kernels that split each image over
    the threads (Winograd by tile rows, im2col by channels and columns); image by image
    the logits equal those of one batch."""
    net = cnnc.compile(text, input=input, classes=10).network(seed=1, dtype="float64")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, *net.input_shape))
    whole = net.forward(x)
    one_by_one = np.concatenate([net.forward(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("text, shape", [
    ("conv5(6) - relu - pool - conv5(16) - relu - pool - fc(32) - relu - fc", "1x20x20"),
    ("conv3(4) - tanh - maxpool3(stride=2) - conv3(6) - leaky(0.1) - gap - fc", "2x11x11"),
    ("conv3(16, bias=false) - bn - relu - (conv3(16, bias=false) - bn - relu - conv3(16) - bn + id)"
     " - relu - conv3(32, stride=2, pad=1) - bn - relu - avgpool - gap - fc", "3x12x12"),
])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_bound_inference_calls_compute_what_each_op_forward_computes(text, shape, batch):
    """An inference-mode forward runs the steps as kernel calls bound once per executor
    (Op.inference_call): the same numbers as calling every op's forward, step by step."""
    model = cnnc.compile(text, input=shape, classes=7)
    net = model.network(seed=3)
    for d in net.buffers.values():  # running statistics other than 0 and 1
        for v in d.values():
            v[...] = np.random.default_rng(1).uniform(0.5, 1.5, v.shape)
    x = np.random.default_rng(0).standard_normal((batch, *model.input_shape)).astype(np.float32)
    got = net.forward(x)
    ex = net.inference_executor(batch)
    assert ex._calls is not None and len(ex._calls) == len(ex.plan.steps)
    ex.input[...] = x
    if ex.plan.inference:
        ex.refold()
    for step in ex.plan.steps:
        ex.ops[step.node].forward([ex.values[s] for s in step.inputs], ex.values[step.output], False)
    np.testing.assert_array_equal(got, ex.logits)
    again = net.forward(x)  # the bound calls read the buffers anew at every call
    np.testing.assert_array_equal(again, got)
    other = net.forward(x[::-1].copy())
    np.testing.assert_allclose(other, got[::-1], rtol=1e-5, atol=1e-6)
