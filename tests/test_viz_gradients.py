"""Gradient views against independent computations: central finite differences in float64,
and PyTorch autograd (with a guided-ReLU autograd function) on a hand-built torch copy."""
from __future__ import annotations

import numpy as np
import pytest

import cnnc
from cnnc import viz
from cnnc.errors import UsageError

SMALL = "conv3(4) - bn - relu - maxpool - conv3(5) - relu - fc(7) - relu - fc"


def small_net(dtype="float64", seed=1):
    m = cnnc.compile(SMALL, input="2x8x8", classes=3)
    net = m.network(seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    net.set("bn_1", "running_mean", rng.normal(0, 0.3, 4))
    net.set("bn_1", "running_var", rng.uniform(0.5, 2.0, 4))
    net.set("bn_1", "gamma", rng.uniform(0.5, 1.5, 4))
    net.set("bn_1", "beta", rng.normal(0, 0.2, 4))
    for layer in ("conv_1", "conv_2", "fc_1", "fc_2"):
        net.set(layer, "b", rng.normal(0, 0.1, net.get(layer, "b").shape))
    return net


def finite_diff(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def test_saliency_matches_finite_differences():
    net = small_net()
    x = np.random.default_rng(2).standard_normal((2, 2, 8, 8))
    grad, cls = viz.saliency(net, x, classes=[0, 2])
    for i, c in enumerate(cls):
        fd = finite_diff(lambda z: net.forward(z[None])[0, c], x[i])
        err = np.abs(grad[i] - fd).max() / np.abs(fd).max()
        assert err < 1e-6, err


def test_gradient_from_an_intermediate_layer_matches_finite_differences():
    net = small_net()
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 8))
    from cnnc.viz.core import objective, unit_gradient

    for layer, ch in (("relu_2", 3), ("conv_1", 1), ("fc_1", 5)):
        value, g = unit_gradient(net, x, layer, ch)
        f = lambda z: objective(net.layer_outputs(z[None], [layer])[layer], ch)[0]  # noqa: E731
        fd = finite_diff(f, x[0])
        assert np.abs(fd).max() > 1e-4
        assert np.abs(g[0] - fd).max() / np.abs(fd).max() < 1e-6, layer


def test_intermediate_value_is_pre_relu_for_conv():
    net = small_net()
    x = np.random.default_rng(4).standard_normal((3, 2, 8, 8))
    out = net.layer_outputs(x, ["conv_2", "relu_2"])
    assert (out["conv_2"] < 0).any()  # unfused: the conv's own output, negatives kept
    np.testing.assert_array_equal(out["relu_2"], np.maximum(out["conv_2"], 0))


def test_training_gradients_untouched_by_viz():
    net = small_net()
    x = np.random.default_rng(5).standard_normal((2, 2, 8, 8))
    net.loss_and_grads(x, np.array([0, 1]))
    before = net.grad.copy()
    viz.saliency(net, x)
    np.testing.assert_array_equal(net.grad, before)


torch = None


def torch_copy(net):
    t = pytest.importorskip("torch")
    nn = t.nn

    class Guided(t.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.clamp(min=0)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (y > 0) * (g > 0)

    class Net(nn.Module):
        def __init__(self, guided):
            super().__init__()
            self.guided = guided
            self.c1, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.c2 = nn.Conv2d(4, 5, 3, padding=1)
            self.f1, self.f2 = nn.Linear(5 * 4 * 4, 7), nn.Linear(7, 3)

        def relu(self, x):
            return Guided.apply(x) if self.guided else t.relu(x)

        def forward(self, x):
            x = t.nn.functional.max_pool2d(self.relu(self.bn(self.c1(x))), 2)
            x = self.relu(self.c2(x))
            return self.f2(self.relu(self.f1(x.flatten(1))))

    def make(guided):
        m = Net(guided).double().eval()
        with t.no_grad():
            for mod, name in ((m.c1, "conv_1"), (m.c2, "conv_2"), (m.f1, "fc_1"), (m.f2, "fc_2")):
                mod.weight.copy_(t.from_numpy(net.get(name, "w")))
                mod.bias.copy_(t.from_numpy(net.get(name, "b")))
            m.bn.weight.copy_(t.from_numpy(net.get("bn_1", "gamma")))
            m.bn.bias.copy_(t.from_numpy(net.get("bn_1", "beta")))
            m.bn.running_mean.copy_(t.from_numpy(net.get("bn_1", "running_mean")))
            m.bn.running_var.copy_(t.from_numpy(net.get("bn_1", "running_var")))
        return m

    return t, make


@pytest.mark.parametrize("guided", [False, True])
def test_gradients_match_torch_autograd(guided):
    net = small_net()
    t, make = torch_copy(net)
    x = np.random.default_rng(6).standard_normal((4, 2, 8, 8))
    model = make(guided)
    xt = t.from_numpy(x).requires_grad_(True)
    logits = model(xt)
    np.testing.assert_allclose(logits.detach().numpy(), net.forward(x), rtol=1e-9, atol=1e-9)
    cls = logits.argmax(1)
    logits.gather(1, cls[:, None]).sum().backward()
    ref = xt.grad.numpy()
    fn = viz.guided_backprop if guided else viz.saliency
    got, used = fn(net, x)
    np.testing.assert_array_equal(used, cls.numpy())
    assert np.abs(ref).max() > 1e-3
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-9
    if guided:  # the guided rule changes the result: the check can tell the two apart
        plain, _ = viz.saliency(net, x)
        assert np.abs(plain - ref).max() / np.abs(ref).max() > 1e-2


def test_smoothgrad_is_the_mean_of_noisy_gradients():
    net = small_net()
    x = np.random.default_rng(7).standard_normal((2, 2, 8, 8))
    got, cls = viz.smoothgrad(net, x, samples=4, noise=0.1, seed=3)
    rng = np.random.default_rng(3)
    sigma = 0.1 * (x.max() - x.min())
    ref = np.mean([viz.saliency(net, x + rng.normal(0, sigma, x.shape), cls)[0] for _ in range(4)], axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_float32_saliency_close_to_float64():
    n64 = small_net("float64")
    n32 = small_net("float32")
    x = np.random.default_rng(8).standard_normal((2, 2, 8, 8))
    g64, c = viz.saliency(n64, x)
    g32, _ = viz.saliency(n32, x.astype(np.float32), c)
    assert np.abs(g32 - g64).max() / np.abs(g64).max() < 1e-4


def test_bad_layer_and_class_and_shape():
    net = small_net()
    with pytest.raises(UsageError, match="did you mean conv_1"):
        viz.activations(net, np.zeros((1, 2, 8, 8)), "conv1")
    with pytest.raises(UsageError, match="maxpool_1 is a maxpool layer"):
        viz.filters(net, "maxpool_1")
    with pytest.raises(UsageError, match="fc_1 outputs 7"):
        viz.activations(net, np.zeros((1, 2, 8, 8)), "fc_1")
    with pytest.raises(UsageError, match="the model takes 2x8x8"):
        viz.saliency(net, np.zeros((1, 2, 9, 8)))
    with pytest.raises(UsageError, match="out of range"):
        viz.saliency(net, np.zeros((1, 2, 8, 8)), classes=3)
