"""Whole networks against PyTorch on the CPU, float32, with the weights copied over.

A generic translator walks the cnnc layer graph (nodes in insertion order, ``inputs``
tuples) and builds an ``nn.Module`` that evaluates the same nodes with ``torch.nn``
layers, so every network below is checked the same way: logits, mean softmax
cross-entropy, every parameter gradient and the input gradient; batch norm in training
mode (batch statistics, running statistics updated) and in inference mode; and three steps
of SGD with momentum and weight decay against ``torch.optim.SGD``.

Layout conventions (cnnc = PyTorch): conv weights (F, C/groups, KH, KW), fc weights
(out, in) on the C-order flattened input, BN gamma/beta = weight/bias; avgpool divides by
the real (unpadded) elements (``count_include_pad=False``); ``round=ceil`` =
``ceil_mode=True``; a final softmax is fused into the loss (logits are pre-softmax).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS_DIR as MODELS
from conftest import conv_padding

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import cnnc  # noqa: E402
from cnnc.lang.graph import INPUT  # noqa: E402
from cnnc.runtime.optim import Optimizer  # noqa: E402



# ---------------------------------------------------------------------------------------
# cnnc graph -> torch module
# ---------------------------------------------------------------------------------------


class TorchNet(nn.Module):
    """Evaluates a cnnc graph node by node with torch layers (weights copied from ``net``)."""

    def __init__(self, analysis, net):
        super().__init__()
        shapes = analysis.shapes
        self.order = []  # (node, kind, inputs)
        self.extra = {}  # per-node settings of functional layers
        self.mods = nn.ModuleDict()
        self.output = analysis.output
        for n in analysis.order:
            layer = analysis.layer(n)
            kind, cfg = layer.type.name, layer.config
            inputs = tuple(analysis.inputs(n))
            in_shape = shapes[inputs[0]]
            out_shape = shapes[n]
            self.order.append((n, kind, inputs))
            if kind == "conv":
                m = nn.Conv2d(in_shape[0], out_shape[0], cfg.size, stride=cfg.stride,
                              padding=conv_padding(cfg), dilation=cfg.dilation, groups=cfg.groups,
                              bias=cfg.bias)
            elif kind == "fc":
                m = nn.Linear(int(np.prod(in_shape)), out_shape[0], bias=cfg.bias)
            elif kind in ("maxpool", "avgpool"):
                stride = cfg.stride if cfg.stride is not None else max(cfg.size)
                ceil = cfg.round == "ceil"
                if kind == "maxpool":
                    m = nn.MaxPool2d(cfg.size, stride, cfg.pad, ceil_mode=ceil)
                else:
                    m = nn.AvgPool2d(cfg.size, stride, cfg.pad, ceil_mode=ceil, count_include_pad=False)
            elif kind == "bn":
                cls = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
                m = cls(in_shape[0], eps=cfg.eps, momentum=cfg.momentum)
            elif kind == "dropout":
                m = nn.Dropout(cfg.p)
            else:
                m = None
                self.extra[n] = cfg
            if m is not None:
                self.mods[n] = m
        self.copy_from(net)

    def copy_from(self, net) -> None:
        with torch.no_grad():
            for n, kind, _ in self.order:
                if kind in ("conv", "fc"):
                    self.mods[n].weight.copy_(torch.from_numpy(net.get(n, "w")))
                    if self.mods[n].bias is not None:
                        self.mods[n].bias.copy_(torch.from_numpy(net.get(n, "b")))
                elif kind == "bn":
                    m = self.mods[n]
                    m.weight.copy_(torch.from_numpy(net.get(n, "gamma")))
                    m.bias.copy_(torch.from_numpy(net.get(n, "beta")))
                    m.running_mean.copy_(torch.from_numpy(net.get(n, "running_mean")))
                    m.running_var.copy_(torch.from_numpy(net.get(n, "running_var")))

    def forward(self, x):
        vals = {INPUT: x}
        for n, kind, inputs in self.order:
            xs = [vals[s] for s in inputs]
            a = xs[0]
            if kind == "fc":
                y = self.mods[n](a.flatten(1))
            elif n in self.mods:
                y = self.mods[n](a)
            elif kind == "relu":
                y = F.relu(a)
            elif kind == "leaky":
                y = F.leaky_relu(a, self.extra[n].alpha)
            elif kind == "elu":
                y = F.elu(a, self.extra[n].alpha)
            elif kind == "tanh":
                y = torch.tanh(a)
            elif kind == "sigmoid":
                y = torch.sigmoid(a)
            elif kind == "softmax":  # fused into the loss: the logits are its input
                assert n == self.output
                y = a
            elif kind == "gap":
                y = a.mean(dim=(2, 3))
            elif kind == "maxout":
                k = self.extra[n].k
                y = a.reshape(a.shape[0], a.shape[1] // k, k, *a.shape[2:]).amax(dim=2)
            elif kind == "flatten":
                y = a.flatten(1)
            elif kind == "concat":
                y = torch.cat(xs, dim=1)
            elif kind == "add":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
            else:
                raise AssertionError(f"no torch mapping for layer type {kind!r}")
            vals[n] = y
        return vals[self.output]

    def grads(self):
        """{node: {cnnc name: gradient}} of the torch parameters."""
        out = {}
        for n, kind, _ in self.order:
            if kind in ("conv", "fc"):
                m = self.mods[n]
                out[n] = {"w": m.weight.grad}
                if m.bias is not None:
                    out[n]["b"] = m.bias.grad
            elif kind == "bn":
                out[n] = {"gamma": self.mods[n].weight.grad, "beta": self.mods[n].bias.grad}
        return out

    def named_cnnc_params(self):
        for n, kind, _ in self.order:
            if kind in ("conv", "fc"):
                yield n, "w", self.mods[n].weight
                if self.mods[n].bias is not None:
                    yield n, "b", self.mods[n].bias
            elif kind == "bn":
                yield n, "gamma", self.mods[n].weight
                yield n, "beta", self.mods[n].bias


def close(ours, theirs, rtol, what, scale=None):
    """max |ours - theirs| <= rtol * max |theirs| (float32 error grows with magnitude);
    ``scale`` overrides max |theirs| (a gradient that is exactly zero in exact arithmetic,
    such as the bias before a training-mode BN, is float32 noise on its layer's scale)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    scale = max(float(np.abs(theirs).max(initial=0.0)), scale or 0.0, 1e-6)
    err = float(np.abs(ours - theirs).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max difference {err:.3g} vs max magnitude {scale:.3g}"


def compare(net, tnet, x, y, training: bool, rtol: float = 2e-4):
    """Logits, loss, every parameter gradient and the input gradient."""
    logits = net.forward(x, training=False) if not training else None
    loss, grads = net.loss_and_grads(x, y, training=training, input_grad=True)
    tnet.train(training)
    tnet.zero_grad()
    tx = torch.from_numpy(x).requires_grad_(True)
    tlogits = tnet(tx)
    tloss = F.cross_entropy(tlogits, torch.from_numpy(y))
    tloss.backward()
    if logits is not None:
        close(logits, tlogits, rtol, "logits")
    prog = net.executor(x.shape[0], need_input_grad=True)
    close(prog.logits, tlogits, rtol, "logits (training step)" if training else "logits (loss step)")
    assert loss == pytest.approx(tloss.item(), rel=rtol, abs=rtol)
    tgrads = tnet.grads()
    assert set(tgrads) == set(net.params)
    for layer, d in tgrads.items():
        assert set(d) == set(grads[layer]), layer
        layer_scale = max(float(g.abs().max()) for g in d.values())
        for name, g in d.items():
            close(grads[layer][name], g, rtol * 5, f"d loss/d {layer}.{name}", scale=layer_scale)
    close(grads[INPUT], tx.grad, rtol * 5, "d loss/d input")
    return loss


def setup(text_or_path, input=None, classes=None, seed=0, batch=4, perturb=0.0):
    if isinstance(text_or_path, Path):
        model = cnnc.compile_file(text_or_path)
    else:
        model = cnnc.compile(text_or_path, input=input, classes=classes)
    net = model.network(seed=seed)
    rng = np.random.default_rng(seed + 1)
    if perturb:  # biases / BN affine away from 0 and 1
        for d in net.params.values():
            for v in d.values():
                v += (perturb * rng.standard_normal(v.shape)).astype(v.dtype)
    tnet = TorchNet(model.analysis, net)
    x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
    y = rng.integers(0, net.classes, batch).astype(np.int64)
    return net, tnet, x, y


@pytest.fixture(autouse=True)
def _torch_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------------------


def test_lenet5():
    net, tnet, x, y = setup(MODELS / "lenet5.cnn", perturb=0.05)
    assert net.num_params == 61_706 == sum(p.numel() for p in tnet.parameters())
    compare(net, tnet, x, y, training=True)
    compare(net, tnet, x, y, training=False)


def test_vgg_cifar():
    net, tnet, x, y = setup(MODELS / "vgg_cifar.cnn", batch=2, perturb=0.02)
    widths = [tnet.mods[n].out_channels for n, k, _ in tnet.order if k == "conv"]
    assert widths == [32, 32, 64, 64, 128, 128]
    assert net.plan.fused_relu  # conv - relu fused: compared against torch's separate ReLU
    compare(net, tnet, x, y, training=True)


RESIDUAL = ("conv3(16) - bn - relu - (conv3(16) - bn - relu - conv3(16) - bn + id) - relu - "
            "(conv3(32, stride=2, pad=1) - bn - relu - conv3(32) - bn + conv1(32, stride=2) - bn) - relu - "
            "gap - fc")


def test_residual_bn_train_then_eval():
    net, tnet, x, y = setup(RESIDUAL, input="3x16x16", classes=10, batch=4, perturb=0.1)
    # training mode: batch statistics, running statistics updated like torch
    compare(net, tnet, x, y, training=True)
    for n, kind, _ in tnet.order:
        if kind == "bn":
            close(net.get(n, "running_mean"), tnet.mods[n].running_mean, 1e-4, f"{n}.running_mean")
            close(net.get(n, "running_var"), tnet.mods[n].running_var, 1e-4, f"{n}.running_var")
    # a few more training forwards on other batches move the running statistics further
    rng = np.random.default_rng(3)
    for _ in range(3):
        xb = (rng.standard_normal(x.shape) * 2 + 0.5).astype(np.float32)
        net.forward(xb, training=True)
        tnet.train(True)
        with torch.no_grad():
            tnet(torch.from_numpy(xb))
    for n, kind, _ in tnet.order:
        if kind == "bn":
            close(net.get(n, "running_mean"), tnet.mods[n].running_mean, 1e-4, f"{n}.running_mean")
            close(net.get(n, "running_var"), tnet.mods[n].running_var, 1e-4, f"{n}.running_var")
    # inference mode: running statistics, in the forward and in the gradients
    compare(net, tnet, x, y, training=False)


INCEPTION_SMALL = """
inception(a, b1, b2, c1, c2, d) =
    ( conv1(a) - relu
    | conv1(b1) - relu - conv3(b2) - relu
    | conv1(c1) - relu - conv5(c2) - relu
    | maxpool3(stride=1, pad=1) - conv1(d) - relu )

conv3(16) - bn - relu -
inception(8, 8, 12, 4, 6, 6) - inception(12, 8, 16, 4, 8, 8) -
maxpool3(stride=2, round=ceil) - gap - fc
"""


def test_inception_small():
    """models/inception.cnn's structure at smaller widths on 3x16x16, with the ceil pool it
    needs: floor rounding would leave the last row unseen (an error)."""
    net, tnet, x, y = setup(INCEPTION_SMALL, input="3x16x16", classes=10, batch=3, perturb=0.05)
    pool = [n for n, k, _ in tnet.order if k == "maxpool"][-1]
    assert net.plan.value_shapes[pool] == (44, 8, 8)
    compare(net, tnet, x, y, training=True)
    compare(net, tnet, x, y, training=False)


def test_inception_model_file_shapes():
    """The shipped model file translates to torch with the same output shapes (forward only)."""
    net, tnet, x, y = setup(MODELS / "inception.cnn", batch=1)
    logits = net.forward(x)
    with torch.no_grad():
        tnet.eval()
        close(logits, tnet(torch.from_numpy(x)), 2e-4, "logits")


ZOO = ("conv3(8, bias=false) - bn - leaky(0.1) - avgpool3(stride=2, pad=1) - "
       "conv3(8, groups=2, dilation=2) - tanh - ( conv1(4) | maxpool3(stride=1, pad=1) | id ) - "
       "maxout(2) - avgpool2(round=ceil) - sigmoid - flatten - dropout(0.3) - fc(12) - bn - relu - "
       "( fc(6) + fc(6) - elu(0.7) ) - fc - softmax")


def test_layer_zoo():
    """Every other layer type in one network: leaky, elu, tanh, sigmoid, groups, dilation, padded
    and ceil average pooling, maxout, flatten, dropout (inference), bn on vectors, merges."""
    net, tnet, x, y = setup(ZOO, input="3x9x9", classes=5, batch=4, perturb=0.1)
    compare(net, tnet, x, y, training=False)
    kinds = {k for _, k, _ in tnet.order} - {"dropout"}
    # training mode too, without dropout (its mask is random)
    net2, tnet2, x2, y2 = setup(ZOO.replace("dropout(0.3) - ", ""), input="3x9x9", classes=5,
                                batch=4, perturb=0.1)
    compare(net2, tnet2, x2, y2, training=True)
    assert kinds == {k for _, k, _ in tnet2.order}


def test_sgd_momentum_matches_torch():
    net, tnet, x, y = setup(MODELS / "lenet5.cnn", batch=8, perturb=0.05)
    opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9, weight_decay=5e-4)
    params = list(tnet.named_cnnc_params())
    topt = torch.optim.SGD([p for _, _, p in params], lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(11)
    for step in range(3):
        xb = rng.standard_normal(x.shape).astype(np.float32)
        yb = rng.integers(0, 10, y.shape[0]).astype(np.int64)
        lr = 0.05 * (1 - 0.2 * step)
        prog = net.executor(xb.shape[0])
        prog.input[...] = xb
        prog.labels[...] = yb
        loss, _ = net.step(prog, training=True)
        opt.step(lr)
        tnet.train(True)
        topt.zero_grad()
        tloss = F.cross_entropy(tnet(torch.from_numpy(xb)), torch.from_numpy(yb))
        tloss.backward()
        for group in topt.param_groups:
            group["lr"] = lr
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=2e-4)
        for n, name, p in params:
            close(net.get(n, name), p, 2e-4, f"step {step + 1}: {n}.{name}")
