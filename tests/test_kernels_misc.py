"""Pooling, elementwise, batch-norm, loss and optimizer kernels against naive NumPy
references, central finite differences (float64) and, where installed, PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numgrad_full, pool_out

from cnnc.kernels import elementwise as ew
from cnnc.kernels import loss, norm, optim, pool

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


def torch_or_skip():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def distinct(rng, shape, dtype=np.float64):
    """Values without ties (spacing 1e-2), shuffled, centred on zero."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 1e-2).reshape(shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------




def window(o, s, p, k, length):
    start = o * s - p
    return max(start, 0), min(start + k, length)


def ref_pool(x, kh, kw, sh, sw, ph, pw, oh_n, ow_n):
    n_img, n_ch, h_in, w_in = x.shape
    ymax = np.empty((n_img, n_ch, oh_n, ow_n), x.dtype)
    yavg = np.empty_like(ymax)
    arg = np.empty(ymax.shape, np.int32)
    for oh in range(oh_n):
        h0, h1 = window(oh, sh, ph, kh, h_in)
        for ow in range(ow_n):
            w0, w1 = window(ow, sw, pw, kw, w_in)
            win = x[:, :, h0:h1, w0:w1].reshape(n_img, n_ch, -1)
            ymax[:, :, oh, ow] = win.max(-1)
            yavg[:, :, oh, ow] = win.astype(np.float64).mean(-1)
            i = win.argmax(-1)
            arg[:, :, oh, ow] = (h0 + i // (w1 - w0)) * w_in + w0 + i % (w1 - w0)
    return ymax, arg, yavg


def ref_avgpool_backward(dy, x_shape, kh, kw, sh, sw, ph, pw):
    dx = np.zeros(x_shape, np.float64)
    h_in, w_in = x_shape[2:]
    for oh in range(dy.shape[2]):
        h0, h1 = window(oh, sh, ph, kh, h_in)
        for ow in range(dy.shape[3]):
            w0, w1 = window(ow, sw, pw, kw, w_in)
            dx[:, :, h0:h1, w0:w1] += dy[:, :, oh:oh + 1, ow:ow + 1] / ((h1 - h0) * (w1 - w0))
    return dx


def ref_maxpool_backward(dy, arg, x_shape):
    n_img, n_ch, h_in, w_in = x_shape
    dx = np.zeros((n_img, n_ch, h_in * w_in), np.float64)
    for n in range(n_img):
        for c in range(n_ch):
            np.add.at(dx[n, c], arg[n, c].reshape(-1), dy[n, c].reshape(-1))
    return dx.reshape(x_shape)


# (H, W, (kh, kw), (sh, sw), (ph, pw), ceil)
POOL_CASES = [
    (7, 7, (3, 3), (2, 2), (0, 0), False),
    (7, 7, (3, 3), (2, 2), (0, 0), True),
    (8, 8, (3, 3), (2, 2), (0, 0), False),
    (8, 8, (3, 3), (2, 2), (0, 0), True),
    (7, 7, (3, 3), (2, 2), (1, 1), False),
    (7, 7, (3, 3), (2, 2), (1, 1), True),
    (8, 8, (3, 3), (2, 2), (1, 1), False),
    (8, 8, (3, 3), (2, 2), (1, 1), True),
    (8, 8, (2, 2), (2, 2), (0, 0), False),
    (5, 6, (2, 2), (1, 1), (0, 0), False),
    (9, 8, (3, 2), (2, 1), (1, 0), True),
    (6, 7, (3, 3), (3, 3), (1, 1), True),
    # windows inside the input: the unrolled 2x2 / 3x3 kernels (and the 2x2 stride-2 backward)
    (7, 9, (2, 2), (2, 2), (0, 0), False),
    (6, 6, (2, 2), (3, 3), (0, 0), False),
    (9, 9, (3, 3), (1, 1), (0, 0), False),
    (11, 10, (3, 3), (2, 2), (0, 0), False),
    (10, 10, (3, 3), (3, 3), (0, 0), False),
]


def pool_geometry(case):
    h, w, (kh, kw), (sh, sw), (ph, pw), ceil = case
    oh = pool_out(h, kh, sh, ph, ceil)
    ow = pool_out(w, kw, sw, pw, ceil)
    return h, w, kh, kw, sh, sw, ph, pw, ceil, oh, ow


def test_out_size_ceil_differs():
    assert pool_out(8, 3, 2, 0, False) == 3 and pool_out(8, 3, 2, 0, True) == 4
    assert pool_out(7, 3, 2, 0, False) == 3 and pool_out(7, 3, 2, 0, True) == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_avgpool_vs_numpy(case, dtype):
    h, w, kh, kw, sh, sw, ph, pw, _, oh, ow = pool_geometry(case)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    ymax_ref, arg_ref, yavg_ref = ref_pool(x, kh, kw, sh, sw, ph, pw, oh, ow)
    y = np.empty((2, 3, oh, ow), dtype)
    arg = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, arg, kh, kw, sh, sw, ph, pw)
    np.testing.assert_array_equal(y, ymax_ref)
    np.testing.assert_array_equal(arg, arg_ref)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full(x.shape, 7.0, dtype)  # overwritten, not accumulated
    pool.maxpool2d_backward(dy, arg, dx, (kh, kw, sh, sw, ph, pw))
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, arg_ref, x.shape), **tol(dtype))
    dx[...] = 7.0  # the general scatter too (no window given)
    pool.maxpool2d_backward(dy, arg, dx)
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, arg_ref, x.shape), **tol(dtype))

    pool.avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw)
    np.testing.assert_allclose(y, yavg_ref, **tol(dtype))
    dx[...] = 7.0
    pool.avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw)
    ref = ref_avgpool_backward(dy.astype(np.float64), x.shape, kh, kw, sh, sw, ph, pw)
    np.testing.assert_allclose(dx, ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_vs_torch(case, dtype):
    torch = torch_or_skip()
    F = torch.nn.functional
    h, w, kh, kw, sh, sw, ph, pw, ceil, oh, ow = pool_geometry(case)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    dy = rng.standard_normal((2, 3, oh, ow)).astype(dtype)

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt, it = F.max_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, return_indices=True)
    yt.backward(torch.from_numpy(dy))
    assert tuple(yt.shape) == (2, 3, oh, ow)
    y = np.empty((2, 3, oh, ow), dtype)
    arg = np.empty(y.shape, np.int32)
    dx = np.empty_like(x)
    pool.maxpool2d_forward(x, y, arg, kh, kw, sh, sw, ph, pw)
    pool.maxpool2d_backward(dy, arg, dx, (kh, kw, sh, sw, ph, pw))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(arg, it.numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = F.avg_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), ceil_mode=ceil, count_include_pad=False)
    yt.backward(torch.from_numpy(dy))
    pool.avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw)
    pool.avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("case", [POOL_CASES[3], POOL_CASES[7], POOL_CASES[10], POOL_CASES[12],
                                  POOL_CASES[15]])
def test_pool_backward_finite_differences(case):
    h, w, kh, kw, sh, sw, ph, pw, _, oh, ow = pool_geometry(case)
    rng = np.random.default_rng(2)
    x = distinct(rng, (2, 2, h, w))
    wts = rng.standard_normal((2, 2, oh, ow))
    y = np.empty((2, 2, oh, ow))
    arg = np.empty(y.shape, np.int32)
    dx = np.empty_like(x)

    def f_max():
        pool.maxpool2d_forward(x, y, arg, kh, kw, sh, sw, ph, pw)
        return float((y * wts).sum())

    f_max()
    pool.maxpool2d_backward(wts, arg, dx, (kh, kw, sh, sw, ph, pw))
    np.testing.assert_allclose(dx, numgrad_full(f_max, x), rtol=1e-6, atol=1e-8)

    def f_avg():
        pool.avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw)
        return float((y * wts).sum())

    pool.avgpool2d_backward(wts, dx, kh, kw, sh, sw, ph, pw)
    np.testing.assert_allclose(dx, numgrad_full(f_avg, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [POOL_CASES[8], POOL_CASES[12], POOL_CASES[15], POOL_CASES[4]])
def test_maxpool_nan_wins_like_torch(case):
    """A NaN in a window is its maximum (and its index), in every kernel, as in PyTorch."""
    torch = torch_or_skip()
    h, w, kh, kw, sh, sw, ph, pw, ceil, oh, ow = pool_geometry(case)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, x.size // 5, replace=False)] = np.nan
    y = np.empty((2, 3, oh, ow), np.float32)
    arg = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, arg, kh, kw, sh, sw, ph, pw)
    yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), (kh, kw), (sh, sw), (ph, pw),
                                            ceil_mode=ceil, return_indices=True)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, yt.numpy())  # NaNs compare equal here
    np.testing.assert_array_equal(arg, it.numpy())


def test_maxpool_ties_pick_first():
    x = np.ones((1, 1, 4, 4))
    y = np.empty((1, 1, 2, 2))
    arg = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, arg, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, 10]])
    # with padding 1 the first real element of the clipped window wins
    y = np.empty((1, 1, 3, 3))
    arg = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, arg, 2, 2, 2, 2, 1, 1)
    np.testing.assert_array_equal(arg[0, 0], [[0, 1, 3], [4, 5, 7], [12, 13, 15]])
    np.testing.assert_array_equal(y, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (3, 2, 1, 1), (1, 4, 8, 8)])
def test_global_avgpool(shape, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    y = np.empty(shape[:2], dtype)
    pool.global_avgpool_forward(x, y)
    np.testing.assert_allclose(y, x.astype(np.float64).mean((2, 3)), **tol(dtype))
    dy = rng.standard_normal(shape[:2]).astype(dtype)
    dx = np.full_like(x, 5.0)
    pool.global_avgpool_backward(dy, dx)
    ref = np.broadcast_to(dy[:, :, None, None] / (shape[2] * shape[3]), shape)
    np.testing.assert_allclose(dx, ref, **tol(dtype))
    if dtype == np.float64:
        wts = rng.standard_normal(shape[:2])

        def f():
            pool.global_avgpool_forward(x, y)
            return float((y * wts).sum())

        pool.global_avgpool_backward(wts, dx)
        np.testing.assert_allclose(dx, numgrad_full(f, x), rtol=1e-6, atol=1e-8)


def ref_channel_maxpool(x, k):
    n_img, n_ch, h, w = x.shape
    c_out = n_ch // k
    g = x[:, :c_out * k].reshape(n_img, c_out, k, h, w)
    return g.max(2), g.argmax(2).astype(np.int32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_ch,k,hw", [(6, 2, (4, 5)), (7, 3, (3, 3)), (8, 4, (1, 1)), (4, 1, (2, 2))])
def test_channel_maxpool(n_ch, k, hw, dtype):
    rng = np.random.default_rng(4)
    x = distinct(rng, (2, n_ch) + hw, dtype)
    c_out = n_ch // k
    y = np.empty((2, c_out) + hw, dtype)
    arg = np.empty(y.shape, np.int32)
    pool.channel_maxpool_forward(x, y, arg, k)
    y_ref, arg_ref = ref_channel_maxpool(x, k)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full_like(x, 3.0)
    pool.channel_maxpool_backward(dy, arg, dx, k)
    ref = np.zeros(x.shape, dtype)
    for i in range(k):
        ref[:, i:c_out * k:k] = np.where(arg == i, dy, 0)
    np.testing.assert_array_equal(dx, ref)

    if dtype == np.float64:
        def f():
            pool.channel_maxpool_forward(x, y, arg, k)
            return float((y * dy).sum())

        f()
        pool.channel_maxpool_backward(dy, arg, dx, k)
        np.testing.assert_allclose(dx, numgrad_full(f, x), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------
# elementwise
# ---------------------------------------------------------------------------------------

SIZES = [0, 1, 37, 40005]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_activations_vs_numpy(n, dtype):
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal(n)).astype(dtype)
    x[: n // 10] = 0.0
    dy = rng.standard_normal(n).astype(dtype)
    y = np.empty_like(x)
    dx = np.full_like(x, 9.0)
    t = tol(dtype)

    ew.relu_forward(x, y)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    ew.relu_backward(dy, y, dx)
    np.testing.assert_array_equal(dx, dy * (y > 0))

    alpha = 0.1
    ew.leaky_relu_forward(x, y, alpha)
    np.testing.assert_allclose(y, np.where(x > 0, x, alpha * x), **t)
    ref = np.where(x > 0, dy, alpha * dy)
    ew.leaky_relu_backward(dy, y, dx, alpha)
    np.testing.assert_allclose(dx, ref, **t)
    ew.leaky_relu_backward(dy, x, dx, alpha)
    np.testing.assert_allclose(dx, ref, **t)

    ew.tanh_forward(x, y)
    np.testing.assert_allclose(y, np.tanh(x), **t)
    ew.tanh_backward(dy, y, dx)
    np.testing.assert_allclose(dx, dy * (1 - y.astype(np.float64) ** 2), **t)

    ew.sigmoid_forward(x, y)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))), **t)
    ew.sigmoid_backward(dy, y, dx)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(dx, dy * y64 * (1 - y64), **t)


def test_sigmoid_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    y = np.empty_like(x)
    with np.errstate(all="raise"):
        ew.sigmoid_forward(x, y)
    assert np.all(np.isfinite(y)) and y[0] == 0.0 and y[2] == 0.5 and y[-1] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_sigmoid_accuracy(dtype):
    """tanh and sigmoid are built from exp/expm1: within a few ulp over the whole range."""
    x = np.concatenate([np.linspace(-20, 20, 20001), np.geomspace(1e-30, 1, 301),
                        -np.geomspace(1e-30, 1, 301), [0.55, -0.55, 1e4, -1e4]]).astype(dtype)
    y = np.empty_like(x)
    x64 = x.astype(np.float64)
    ulp = np.spacing(np.ones(1, dtype))[0]
    ew.tanh_forward(x, y)
    ref = np.tanh(x64)
    assert np.all(np.abs(y - ref) <= 4 * ulp * np.abs(ref) + np.finfo(dtype).tiny)
    ew.sigmoid_forward(x, y)
    with np.errstate(over="ignore"):
        ref = 1 / (1 + np.exp(-x64))
    assert np.all(np.abs(y - ref) <= 4 * ulp * np.abs(ref) + np.finfo(dtype).tiny)
    xs = np.array([np.inf, -np.inf, np.nan], dtype)
    ys = np.empty_like(xs)
    ew.tanh_forward(xs, ys)
    assert ys[0] == 1 and ys[1] == -1 and np.isnan(ys[2])
    ew.sigmoid_forward(xs, ys)
    assert ys[0] == 1 and ys[1] == 0 and np.isnan(ys[2])


def test_activations_in_place():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    y = x.copy()
    ew.relu_forward(y, y)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    y = x.copy()
    ew.tanh_forward(y, y)
    np.testing.assert_allclose(y, np.tanh(x))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_activation_finite_differences(name):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(50)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    wts = rng.standard_normal(50)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    fwd = getattr(ew, name + "_forward")
    bwd = getattr(ew, name + "_backward")
    extra = (0.2,) if name == "leaky_relu" else ()

    def f():
        fwd(x, y, *extra)
        return float((y * wts).sum())

    f()
    bwd(wts, y, dx, *extra)
    np.testing.assert_allclose(dx, numgrad_full(f, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_vs_torch(dtype):
    torch = torch_or_skip()
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    x = (3 * rng.standard_normal(1000)).astype(dtype)
    dy = rng.standard_normal(1000).astype(dtype)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    for name, tf, extra in [("relu", F.relu, ()), ("leaky_relu", lambda t: F.leaky_relu(t, 0.01), (0.01,)),
                            ("tanh", torch.tanh, ()), ("sigmoid", torch.sigmoid, ())]:
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = tf(xt)
        yt.backward(torch.from_numpy(dy))
        getattr(ew, name + "_forward")(x, y, *extra)
        getattr(ew, name + "_backward")(dy, y, dx, *extra)
        np.testing.assert_allclose(y, yt.detach().numpy(), **tol(dtype), err_msg=name)
        np.testing.assert_allclose(dx, xt.grad.numpy(), **tol(dtype), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_add_accumulate_copy_scale_fill(n, dtype):
    rng = np.random.default_rng(8)
    a = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    y = np.empty_like(a)
    ew.add_forward(a, b, y)
    np.testing.assert_array_equal(y, a + b)
    d = b.copy()
    ew.accumulate(d, a)
    np.testing.assert_array_equal(d, b + a)
    ew.copy(y, a)
    np.testing.assert_array_equal(y, a)
    ew.scale(y, b, 0.5)
    np.testing.assert_allclose(y, 0.5 * b, **tol(dtype))
    ew.scale(y, y, 2.0)
    np.testing.assert_allclose(y, b, **tol(dtype))
    ew.fill(y, 3.5)
    assert np.all(y == 3.5)
    ew.fill_zero(y)
    assert np.all(y == 0)


def test_flat_views_of_4d_tensors():
    x = np.arange(-12.0, 12.0).reshape(2, 3, 2, 2)
    y = np.empty_like(x)
    ew.relu_forward(x.reshape(-1), y.reshape(-1))
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout(p, dtype):
    n = 20100
    rng = np.random.default_rng(9)
    x = rng.standard_normal(n).astype(dtype)
    u = np.empty(n)
    rng.random(out=u)
    y = np.empty_like(x)
    mask = np.empty(n, np.uint8)
    ew.dropout_forward(x, u, y, mask, p)
    keep = u >= p if p < 1 else np.zeros(n, bool)
    np.testing.assert_array_equal(mask, keep.astype(np.uint8))
    ref = np.where(keep, x / (1 - p), 0) if p < 1 else np.zeros(n)
    np.testing.assert_allclose(y, ref, **tol(dtype))
    dy = rng.standard_normal(n).astype(dtype)
    dx = np.full_like(x, 4.0)
    ew.dropout_backward(dy, mask, dx, p)
    ref = np.where(keep, dy / (1 - p), 0) if p < 1 else np.zeros(n)
    np.testing.assert_allclose(dx, ref, **tol(dtype))
    if p == 0.0:
        np.testing.assert_array_equal(y, x)
    if 0 < p < 1:
        assert abs(mask.mean() - (1 - p)) < 0.02


def test_dropout_float32_uniforms():
    rng = np.random.default_rng(10)
    u = np.empty(100, np.float32)
    rng.random(out=u, dtype=np.float32)
    x = np.ones(100, np.float32)
    y = np.empty_like(x)
    mask = np.empty(100, np.uint8)
    ew.dropout_forward(x, u, y, mask, 0.5)
    np.testing.assert_array_equal(mask, (u >= 0.5).astype(np.uint8))
    np.testing.assert_allclose(y, 2.0 * mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_concat_channels(dtype):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    b = rng.standard_normal((2, 2, 4, 5)).astype(dtype)
    y = np.empty((2, 5, 4, 5), dtype)
    ew.concat_channels_forward(a, y, 0)
    ew.concat_channels_forward(b, y, 3)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=1))
    dy = rng.standard_normal(y.shape).astype(dtype)
    da = np.empty_like(a)
    db = np.empty_like(b)
    ew.concat_channels_backward(dy, da, 0)
    ew.concat_channels_backward(dy, db, 3)
    np.testing.assert_array_equal(da, dy[:, :3])
    np.testing.assert_array_equal(db, dy[:, 3:])


# ---------------------------------------------------------------------------------------
# batch norm
# ---------------------------------------------------------------------------------------

def ref_bn_train(x, gamma, beta, rm, rv, momentum, eps):
    x64 = x.astype(np.float64)
    mu = x64.mean((0, 2, 3))
    var = x64.var((0, 2, 3))
    m = x.size // x.shape[1]
    inv = 1 / np.sqrt(var + eps)
    y = (x64 - mu[:, None, None]) * inv[:, None, None] * gamma[:, None, None] + beta[:, None, None]
    rm = (1 - momentum) * rm + momentum * mu
    rv = (1 - momentum) * rv + momentum * var * m / (m - 1)
    return y, mu, inv, rm, rv


def bn_args(rng, shape, dtype, offset=0.0):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    gamma = (1 + 0.3 * rng.standard_normal(c)).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = (1 + rng.random(c)).astype(dtype)
    return x, gamma, beta, rm, rv


BN_SHAPES = [(4, 3, 5, 5), (8, 5, 1, 1), (2, 4, 3, 7), (3, 2, 2, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_vs_numpy(shape, dtype):
    rng = np.random.default_rng(12)
    x, gamma, beta, rm, rv = bn_args(rng, shape, dtype)
    momentum, eps = 0.1, 1e-5
    y_ref, mu_ref, inv_ref, rm_ref, rv_ref = ref_bn_train(x, gamma, beta, rm, rv, momentum, eps)
    y = np.empty_like(x)
    mean = np.empty_like(gamma)
    invstd = np.empty_like(gamma)
    norm.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, momentum, eps)
    t = tol(dtype)
    np.testing.assert_allclose(y, y_ref, **t)
    np.testing.assert_allclose(mean, mu_ref, **t)
    np.testing.assert_allclose(invstd, inv_ref, **t)
    np.testing.assert_allclose(rm, rm_ref, **t)
    np.testing.assert_allclose(rv, rv_ref, **t)

    norm.batchnorm_forward_infer(x, gamma, beta, rm, rv, eps, y)
    ref = (x - rm_ref[:, None, None]) / np.sqrt(rv_ref[:, None, None] + eps) * gamma[:, None, None] \
        + beta[:, None, None]
    np.testing.assert_allclose(y, ref, **t)

    dy = rng.standard_normal(shape).astype(dtype)
    dx = np.full_like(x, 8.0)
    dgamma = np.full_like(gamma, 8.0)
    dbeta = np.full_like(gamma, 8.0)
    norm.batchnorm_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, True)
    xhat = (x.astype(np.float64) - mu_ref[:, None, None]) * inv_ref[:, None, None]
    db_ref = dy.sum((0, 2, 3), dtype=np.float64)
    dg_ref = (dy * xhat).sum((0, 2, 3))
    m = x.size // shape[1]
    dx_ref = (gamma * inv_ref)[:, None, None] / m * (
        m * dy - db_ref[:, None, None] - xhat * dg_ref[:, None, None])
    np.testing.assert_allclose(dbeta, db_ref, rtol=t["rtol"], atol=10 * t["atol"])
    np.testing.assert_allclose(dgamma, dg_ref, rtol=t["rtol"], atol=10 * t["atol"])
    np.testing.assert_allclose(dx, dx_ref, rtol=t["rtol"], atol=10 * t["atol"])

    dx[...] = 8.0
    norm.batchnorm_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, False)
    assert np.all(dx == 8.0)
    np.testing.assert_allclose(dgamma, dg_ref, rtol=t["rtol"], atol=10 * t["atol"])


def test_batchnorm_large_offset_variance():
    """Two-pass variance: an offset of 1e4 with unit spread must not lose the variance."""
    rng = np.random.default_rng(13)
    x, gamma, beta, rm, rv = bn_args(rng, (16, 2, 8, 8), np.float32, offset=1e4)
    y = np.empty_like(x)
    mean = np.empty_like(gamma)
    invstd = np.empty_like(gamma)
    norm.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, 0.1, 1e-5)
    var = x.astype(np.float64).var((0, 2, 3))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var + 1e-5), rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (5, 3, 1, 1)])
def test_batchnorm_finite_differences(shape):
    rng = np.random.default_rng(14)
    x, gamma, beta, rm, rv = bn_args(rng, shape, np.float64)
    wts = rng.standard_normal(shape)
    y = np.empty_like(x)
    mean = np.empty_like(gamma)
    invstd = np.empty_like(gamma)

    def f():
        norm.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm.copy(), rv.copy(), 0.1, 1e-5)
        return float((y * wts).sum())

    f()
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    norm.batchnorm_backward(x, gamma, wts, mean, invstd, dx, dgamma, dbeta, True)
    np.testing.assert_allclose(dx, numgrad_full(f, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgamma, numgrad_full(f, gamma), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dbeta, numgrad_full(f, beta), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (8, 5, 1, 1)])
def test_batchnorm_vs_torch(shape, dtype):
    torch = torch_or_skip()
    F = torch.nn.functional
    rng = np.random.default_rng(15)
    x, gamma, beta, rm, rv = bn_args(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    momentum, eps = 0.1, 1e-5
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    gt = torch.from_numpy(gamma.copy()).requires_grad_(True)
    bt = torch.from_numpy(beta.copy()).requires_grad_(True)
    xin = xt if shape[2:] != (1, 1) else xt.reshape(shape[:2])  # the (N, C) case
    yt = F.batch_norm(xin, rm_t, rv_t, gt, bt, training=True, momentum=momentum, eps=eps)
    yt.backward(torch.from_numpy(dy).reshape(yt.shape))

    y = np.empty_like(x)
    mean = np.empty_like(gamma)
    invstd = np.empty_like(gamma)
    norm.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, momentum, eps)
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    norm.batchnorm_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, True)
    t = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(y, yt.detach().numpy().reshape(shape), **t)
    np.testing.assert_allclose(rm, rm_t.numpy(), **t)
    np.testing.assert_allclose(rv, rv_t.numpy(), **t)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **t)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), **t)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), **t)

    yt = F.batch_norm(torch.from_numpy(x), rm_t, rv_t, torch.from_numpy(gamma), torch.from_numpy(beta),
                      training=False, eps=eps)
    norm.batchnorm_forward_infer(x, gamma, beta, rm, rv, eps, y)
    np.testing.assert_allclose(y, yt.numpy(), **t)


# ---------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------

def ref_softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (16, 10), (4, 1000)])
def test_softmax_xent_vs_numpy(n, k, dtype):
    rng = np.random.default_rng(16)
    z = (5 * rng.standard_normal((n, k))).astype(dtype)
    labels = rng.integers(0, k, n).astype(np.int64)
    probs = np.empty_like(z)
    val = loss.softmax_xent_forward(z, labels, probs)
    p_ref = ref_softmax(z)
    np.testing.assert_allclose(probs, p_ref, **tol(dtype))
    ref = -np.mean(np.log(p_ref[np.arange(n), labels]))
    assert val == pytest.approx(ref, rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-6)

    probs2 = np.empty_like(z)
    loss.softmax_forward(z, probs2)
    np.testing.assert_array_equal(probs2, probs)

    dz = np.full_like(z, 6.0)
    loss.softmax_xent_backward(probs, labels, dz)
    onehot = np.eye(k)[labels]
    np.testing.assert_allclose(dz, (p_ref - onehot) / n, **tol(dtype))
    loss.softmax_xent_backward(probs, labels, probs)  # in place
    np.testing.assert_allclose(probs, dz)

    assert loss.count_correct(z, labels) == int((z.argmax(1) == labels).sum())


def test_softmax_xent_stable_and_checked():
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0]])
    probs = np.empty_like(z)
    val = loss.softmax_xent_forward(z, np.array([1, 2]), probs)
    assert np.isfinite(val) and val == pytest.approx((1000.0 + np.log(3)) / 2)
    np.testing.assert_allclose(probs[1], 1 / 3)
    with pytest.raises(ValueError):
        loss.softmax_xent_forward(z, np.array([0, 3]), probs)


def test_count_correct_ties_first():
    z = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 1.0, 3.0]])
    assert loss.count_correct(z, np.array([0, 1, 2])) == 2


def test_softmax_xent_finite_differences():
    rng = np.random.default_rng(17)
    z = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6).astype(np.int64)
    probs = np.empty_like(z)
    loss.softmax_xent_forward(z, labels, probs)
    dz = np.empty_like(z)
    loss.softmax_xent_backward(probs, labels, dz)
    g = numgrad_full(lambda: loss.softmax_xent_forward(z, labels, probs), z)
    np.testing.assert_allclose(dz, g, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_vs_torch(dtype):
    torch = torch_or_skip()
    rng = np.random.default_rng(18)
    z = (3 * rng.standard_normal((32, 10))).astype(dtype)
    labels = rng.integers(0, 10, 32).astype(np.int64)
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    lt = torch.nn.functional.cross_entropy(zt, torch.from_numpy(labels))
    lt.backward()
    probs = np.empty_like(z)
    val = loss.softmax_xent_forward(z, labels, probs)
    dz = np.empty_like(z)
    loss.softmax_xent_backward(probs, labels, dz)
    assert val == pytest.approx(lt.item(), rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), **tol(dtype))
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(z), 1).numpy(), **tol(dtype))


# ---------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------

def ref_sgd(p, g, v, lr, momentum, wd, nesterov):
    d = g + wd * p
    if momentum != 0:
        v[...] = momentum * v + d
        d = d + momentum * v if nesterov else v
    p -= lr * d


def ref_adam(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled):
    if decoupled:
        p *= 1 - lr * wd
    else:
        g = g + wd * p
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1 ** step)
    vhat = v / (1 - b2 ** step)
    p -= lr * mhat / (np.sqrt(vhat) + eps)


SGD_SETTINGS = [  # lr, momentum, weight_decay, nesterov
    (0.1, 0.0, 0.0, False),
    (0.05, 0.9, 0.0, False),
    (0.05, 0.9, 5e-4, False),
    (0.05, 0.9, 1e-3, True),
    (0.1, 0.0, 1e-2, False),
]
ADAM_SETTINGS = [  # lr, beta1, beta2, eps, weight_decay, decoupled
    (1e-3, 0.9, 0.999, 1e-8, 0.0, False),
    (1e-2, 0.8, 0.99, 1e-6, 1e-2, False),
    (1e-2, 0.9, 0.999, 1e-8, 5e-2, True),
]
N_PARAMS = 40017


@pytest.mark.parametrize("setting", SGD_SETTINGS)
def test_sgd_vs_numpy(setting):
    lr, momentum, wd, nesterov = setting
    rng = np.random.default_rng(19)
    p = rng.standard_normal(N_PARAMS)
    v = np.zeros_like(p)
    p_ref, v_ref = p.copy(), v.copy()
    for _ in range(4):
        g = rng.standard_normal(N_PARAMS)
        optim.sgd_update(p, g, v, lr, momentum, wd, nesterov)
        ref_sgd(p_ref, g, v_ref, lr, momentum, wd, nesterov)
    np.testing.assert_allclose(p, p_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(v, v_ref, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("setting", ADAM_SETTINGS)
def test_adam_vs_numpy(setting):
    lr, b1, b2, eps, wd, decoupled = setting
    rng = np.random.default_rng(20)
    p = rng.standard_normal(N_PARAMS)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    for step in range(1, 5):
        g = rng.standard_normal(N_PARAMS)
        optim.adam_update(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled)
        ref_adam(p_ref, g, m_ref, v_ref, lr, b1, b2, eps, wd, step, decoupled)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(m, m_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-13)


def run_torch_optimizer(torch, make_opt, update, n_steps=6):
    """Run a torch optimizer and ours side by side on float32 params with the same grads."""
    rng = np.random.default_rng(21)
    p0 = rng.standard_normal(N_PARAMS).astype(np.float32)
    pt = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = make_opt([pt])
    p = p0.copy()
    for step in range(1, n_steps + 1):
        g = rng.standard_normal(N_PARAMS).astype(np.float32)
        pt.grad = torch.from_numpy(g.copy())
        opt.step()
        update(p, g, step)
    np.testing.assert_allclose(p, pt.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting", SGD_SETTINGS)
def test_sgd_vs_torch(setting):
    torch = torch_or_skip()
    lr, momentum, wd, nesterov = setting
    v = np.zeros(N_PARAMS, np.float32)
    run_torch_optimizer(
        torch,
        lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov),
        lambda p, g, step: optim.sgd_update(p, g, v, lr, momentum, wd, nesterov),
    )


@pytest.mark.parametrize("setting", ADAM_SETTINGS)
def test_adam_vs_torch(setting):
    torch = torch_or_skip()
    lr, b1, b2, eps, wd, decoupled = setting
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    m = np.zeros(N_PARAMS, np.float32)
    v = np.zeros(N_PARAMS, np.float32)
    run_torch_optimizer(
        torch,
        lambda ps: cls(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd),
        lambda p, g, step: optim.adam_update(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled),
    )


@pytest.mark.parametrize("T", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (2, 3, 6, 6), (1, 1, 9, 30), (4, 5, 28, 28),
                                   (2, 2, 3, 3), (3, 1, 11, 17), (1, 2, 2, 2), (5, 3, 4, 33)])
def test_maxpool_2x2s2_rows_match_general_kernel(shape, T):
    """The 2x2 stride-2 kernels (the forward computes whole vectors per output row, its
    extra outputs landing on rows computed later; the backward loops over input columns):
    values, argmax and gradients equal the general kernels' for any split of the rows
    over threads, odd sizes included."""
    rng = np.random.default_rng(sum(shape) + T)
    x = rng.standard_normal(shape).astype(np.float32)
    out = (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    y, a = np.full(out, np.nan, np.float32), np.full(out, -7, np.int32)
    y2, a2 = np.full(out, np.nan, np.float32), np.full(out, -7, np.int32)
    pool._maxpool_2x2s2(x, y, a, T)
    pool._maxpool_general(x, y2, a2, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(a, a2)
    dy = rng.standard_normal(out).astype(np.float32)
    dx, dx2 = np.full_like(x, np.nan), np.full_like(x, np.nan)
    pool._maxpool_2x2s2_backward(dy, a, dx, T)
    pool._maxpool_scatter(dy, a2, dx2)
    np.testing.assert_array_equal(dx, dx2)


@pytest.mark.parametrize("add_res", [False, True], ids=["write", "add"])
@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (8, 5, 1, 1)])
def test_batchnorm_with_residual_equals_bn_then_add(shape, dtype, relu, add_res):
    """``( ... - bn + shortcut ) - relu`` in one kernel: the same numbers as bn, then the
    add (and its ReLU) as separate kernels; the shortcut's gradient written or added."""
    rng = np.random.default_rng(21)
    x, gamma, beta, rm, rv = bn_args(rng, shape, dtype)
    r = rng.standard_normal(shape).astype(dtype)
    mean, invstd = np.empty_like(gamma), np.empty_like(gamma)
    z = np.empty_like(x)
    norm.batchnorm_forward_train(x, gamma, beta, z, mean, invstd, rm.copy(), rv.copy(), 0.1, 1e-5)
    y_ref = np.empty_like(x)
    (ew.add_relu_forward if relu else ew.add_forward)(z.reshape(-1), r.reshape(-1), y_ref.reshape(-1))
    y = np.full_like(x, np.nan)
    mean2, invstd2 = np.empty_like(gamma), np.empty_like(gamma)
    norm.batchnorm_forward_train(x, gamma, beta, y, mean2, invstd2, rm.copy(), rv.copy(), 0.1, 1e-5,
                                 relu, res=r)
    np.testing.assert_array_equal(y, y_ref)

    dy = rng.standard_normal(shape).astype(dtype)
    g = np.where(y_ref > 0, dy, 0).astype(dtype) if relu else dy
    dx_ref, dg_ref, db_ref = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    norm.batchnorm_backward(x, gamma, g, mean, invstd, dx_ref, dg_ref, db_ref, True)
    before = rng.standard_normal(shape).astype(dtype)
    dres = before.copy()
    dx, dg, db = np.full_like(x, np.nan), np.empty_like(gamma), np.empty_like(gamma)
    norm.batchnorm_backward(x, gamma, dy, mean2, invstd2, dx, dg, db, True, y, relu, dres, add_res)
    np.testing.assert_array_equal(dres, before + g if add_res else g)
    t = tol(dtype)
    np.testing.assert_allclose(dx, dx_ref, rtol=t["rtol"], atol=10 * t["atol"])
    np.testing.assert_allclose(dg, dg_ref, rtol=t["rtol"], atol=10 * t["atol"])
    np.testing.assert_allclose(db, db_ref, rtol=t["rtol"], atol=10 * t["atol"])
