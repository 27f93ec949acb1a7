"""Local response normalization (issue 11) and the models that use it: Caffe's AlexNet
(bvlc_alexnet, groups=2) and ZFNet.

LRN is checked against torch.nn.LocalResponseNorm (which, like Caffe, divides alpha by the
size) and finite differences in float64; the parameter counts are summed here layer by
layer from the published architectures.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS_DIR, conv_out, numgrad, pool_out

import cnnc
from cnnc.errors import SourceError
from cnnc.lang.graph import INPUT


def _lrn_net(text, shape, classes=3):
    return cnnc.compile(text, input=shape, classes=classes).network(seed=0, dtype="float64")


@pytest.mark.parametrize("size, alpha, beta, k, shape", [
    (5, 1e-4, 0.75, 2.0, (2, 7, 4, 4)),
    (3, 0.8, 0.75, 1.0, (3, 6, 3, 5)),
    (5, 2.0, 0.5, 1.0, (2, 3, 2, 2)),  # a window wider than the channels
    (7, 1.5, 1.2, 0.5, (2, 9, 11)),  # a sequence (N, C, L)
    (3, 1.0, 0.75, 1.0, (4, 6)),  # vectors
])
def test_lrn_matches_torch_forward_and_backward(size, alpha, beta, k, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(size)
    x = rng.standard_normal(shape) * 2.0
    text = f"lrn({size}, alpha={alpha}, beta={beta}, k={k})"
    if len(shape) == 2:  # vectors: after a flatten
        a = cnnc.compile("flatten - " + text, input=f"{shape[1]}x1x1").analysis
    else:
        a = cnnc.compile(text, input="x".join(map(str, shape[1:]))).analysis
    layer = a.layer(a.output)
    op = layer.type.make_op(layer.config, a.info[a.output], [shape[1:]])
    op.bind(shape[0], np.float64, {}, {}, {}, rng)
    y = np.empty(shape)
    op.forward([x], y, False)
    xt = torch.tensor(x, requires_grad=True)
    mod = torch.nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)
    yt = mod(xt if xt.ndim > 2 else xt[:, :, None])
    yt = yt.reshape(shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    dy = rng.standard_normal(shape)
    (yt * torch.tensor(dy)).sum().backward()
    dx = np.empty(shape)
    op.backward([x], y, dy, [dx])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)

    def loss():
        out = np.empty(shape)
        op.forward([x], out, False)
        return float((out * dy).sum())

    idx, est = numgrad(loss, x, rng, 40)
    np.testing.assert_allclose(dx.reshape(-1)[idx], est, rtol=1e-6, atol=1e-7)


def test_lrn_in_a_network_against_finite_differences():
    net = _lrn_net("conv3(6) - relu - lrn(3, alpha=1, k=1) - pool - fc", "2x6x6")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 6))
    labels = np.array([0, 2])
    loss, grads = net.loss_and_grads(x, labels, input_grad=True)
    ex = net.executor(2)

    def f():
        ex.input[...] = x
        ex.labels[...] = labels
        ex.forward(True)
        return ex.loss()

    idx, est = numgrad(f, x, rng, 30)
    np.testing.assert_allclose(grads[INPUT].reshape(-1)[idx], est, rtol=1e-6, atol=1e-8)
    w = net.params["conv_1"]["w"]
    idx, est = numgrad(f, w, rng, 30)
    np.testing.assert_allclose(grads["conv_1"]["w"].reshape(-1)[idx], est, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("text, col, needle", [
    ("conv3 - lrn(4)", 13, "lrn needs an odd size"),
    ("conv3 - lrn(size=2, alpha=0.1)", 13, "got 2"),
    ("conv3 - lrn(5, k=0)", 16, "divides by zero"),
])
def test_lrn_argument_errors_are_positioned(text, col, needle):
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x8x8")
    assert needle in info.value.message and info.value.column == col, str(info.value)
    assert info.value.kind == "argument"


def test_lrn_defaults_are_the_issue_signature():
    cfg = cnnc.compile("lrn", input="4x2x2").analysis.layer("lrn_1").config
    assert (cfg.size, cfg.alpha, cfg.beta, cfg.k) == (5, 1e-4, 0.75, 2.0)


def _conv(c_in, f, k, groups=1):
    return f * (c_in // groups) * k * k + f


def test_caffe_alexnet_has_bvlc_alexnets_parameter_count():
    m = cnnc.compile_file(MODELS_DIR / "alexnet_caffe.cnn")
    s1 = conv_out(227, 11, 4, 0)
    p1 = pool_out(s1, 3, 2, 0, False)
    p2 = pool_out(conv_out(p1, 5, 1, 2), 3, 2, 0, False)
    p5 = pool_out(p2, 3, 2, 0, False)
    assert (s1, p1, p2, p5) == (55, 27, 13, 6)
    expected = (_conv(3, 96, 11) + _conv(96, 256, 5, 2) + _conv(256, 384, 3) + _conv(384, 384, 3, 2)
                + _conv(384, 256, 3, 2) + (256 * p5 * p5 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000)
    assert expected == 60_965_224
    assert m.summary.total_params == expected
    assert sum(r.type == "lrn" for r in m.summary.rows) == 2
    assert m.analysis.shapes[m.analysis.order[-1]] == (1000,)


def test_zfnet_sizes_and_parameters():
    m = cnnc.compile_file(MODELS_DIR / "zfnet.cnn")
    a = m.analysis
    convs = [n for n in a.order if a.layer(n).type.name == "conv"]
    pools = [n for n in a.order if a.layer(n).type.name == "maxpool"]
    assert a.layer(convs[0]).config.size == (7, 7) and a.layer(convs[0]).config.stride == 2
    assert [a.shapes[n][1] for n in convs] == [110, 26, 13, 13, 13]  # the paper's figure 3
    assert [a.shapes[n][1] for n in pools] == [55, 13, 6]
    expected = (_conv(3, 96, 7) + _conv(96, 256, 5) + _conv(256, 384, 3) + _conv(384, 384, 3)
                + _conv(384, 256, 3) + (256 * 6 * 6 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000)
    assert m.summary.total_params == expected
