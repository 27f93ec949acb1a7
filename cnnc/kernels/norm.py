"""Spatial batch normalization kernels: statistics over (N, H, W) per channel.

x: (N, C, H, W), NCHW C-contiguous; an (N, C) input is passed as an (N, C, 1, 1) view.
gamma, beta, mean, invstd, running_mean, running_var, dgamma, dbeta: (C,), same float dtype
as x. Sums are accumulated in float64 whatever the dtype. Training and backward kernels run
``prange`` over channels; inference runs ``prange`` over the N*C planes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from cnnc.kernels.blas import uidx as _u

__all__ = [
    "batchnorm_forward_train",
    "batchnorm_forward_infer",
    "batchnorm_backward",
]


# Reductions may be reassociated (vectorized float64 sums: 3-5x faster than the strict
# order); no other fast-math assumption, so NaN and inf propagate as they should.
_FM = {"reassoc", "contract"}


def batchnorm_forward_train(x, gamma, beta, y, mean, invstd, running_mean, running_var,
                            momentum, eps, relu=False, res=None):
    """Training-mode batch norm. x: (N, C, H, W) -> y: (N, C, H, W) (then ReLU, with
    ``relu``: the lowering fuses a following ReLU here). With ``res`` (same shape as x), y =
    bn(x) + res (then ReLU): a residual block's end, ``( ... - bn + shortcut ) - relu``, in
    the same pass; bn(x) is rounded to the dtype before the sum, as the unfused add has it.

    Writes the batch mean and ``invstd = 1/sqrt(var + eps)`` (biased variance) to ``mean``
    and ``invstd`` for the backward pass, and updates the running statistics in place like
    PyTorch: ``running = (1 - momentum)*running + momentum*batch``, where the running
    variance takes the unbiased batch variance ``var * m/(m - 1)`` (m = N*H*W; the biased
    one when m == 1). The variance is one pass of float64 sums shifted by the channel's first
    element, which keeps it exact for data far from zero (as two passes would).
    """
    if res is None:
        _bn_train(x, gamma, beta, y, mean, invstd, running_mean, running_var, float(momentum),
                  float(eps), bool(relu))
    else:
        _bn_train_res(x, gamma, beta, y, mean, invstd, running_mean, running_var,
                      float(momentum), float(eps), bool(relu), res)


@njit(cache=True, fastmath=_FM, inline="always")
def _channel_stats(xf, c, n_img, n_ch, hw, momentum, eps, mean, invstd, running_mean,
                   running_var):
    """Channel c's batch mean and 1/sqrt(var + eps) (float64 sums shifted by its first
    element), stored in mean/invstd, and the running statistics updated; returns both."""
    m = n_img * hw
    k = np.float64(xf[c * hw])
    s = 0.0
    ss = 0.0
    for n in range(n_img):
        o = _u((n * n_ch + c) * hw)
        for j in range(hw):
            d = np.float64(xf[o + _u(j)]) - k
            s += d
            ss += d * d
    shift = s / m
    var = max(ss / m - shift * shift, 0.0)
    mu = k + shift
    inv = 1.0 / math.sqrt(var + eps)
    mean[c] = mu
    invstd[c] = inv
    unbiased = var * m / (m - 1) if m > 1 else var
    running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mu
    running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased
    return mu, inv


@njit(cache=True, parallel=True, fastmath=_FM)
def _bn_train(x, gamma, beta, y, mean, invstd, running_mean, running_var, momentum, eps, relu):
    n_img, n_ch, h_in, w_in = x.shape
    hw = h_in * w_in
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    for c in prange(n_ch):
        mu, inv = _channel_stats(xf, c, n_img, n_ch, hw, momentum, eps, mean, invstd,
                                 running_mean, running_var)
        a = gamma[c] * inv
        b = np.float64(beta[c])
        # (x - mean) in float64: no cancellation for data far from zero
        for n in range(n_img):
            o = _u((n * n_ch + c) * hw)
            if relu:
                for j in range(hw):
                    yf[o + _u(j)] = max((np.float64(xf[o + _u(j)]) - mu) * a + b, 0.0)
            else:
                for j in range(hw):
                    yf[o + _u(j)] = (np.float64(xf[o + _u(j)]) - mu) * a + b


@njit(cache=True, parallel=True, fastmath=_FM)
def _bn_train_res(x, gamma, beta, y, mean, invstd, running_mean, running_var, momentum, eps,
                  relu, res):
    """:func:`_bn_train` with the residual sum (a kernel of its own: networks without
    residual blocks never compile it)."""
    n_img, n_ch, h_in, w_in = x.shape
    hw = h_in * w_in
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    rf = res.reshape(res.size)
    zero = y.dtype.type(0)
    for c in prange(n_ch):
        mu, inv = _channel_stats(xf, c, n_img, n_ch, hw, momentum, eps, mean, invstd,
                                 running_mean, running_var)
        a = gamma[c] * inv
        b = np.float64(beta[c])
        for n in range(n_img):
            o = _u((n * n_ch + c) * hw)
            for j in range(hw):
                v = y.dtype.type((np.float64(xf[o + _u(j)]) - mu) * a + b) + rf[o + _u(j)]
                yf[o + _u(j)] = max(v, zero) if relu else v


def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps, y, relu=False):
    """Inference-mode batch norm with the running statistics. x: (N, C, H, W) -> y (then
    ReLU, with ``relu``)."""
    _bn_infer(x, gamma, beta, running_mean, running_var, float(eps), y, bool(relu))


@njit(cache=True, parallel=True, fastmath=_FM)
def _bn_infer(x, gamma, beta, running_mean, running_var, eps, y, relu):
    n_img, n_ch, h_in, w_in = x.shape
    hw = h_in * w_in
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    zero = y.dtype.type(0)
    for plane in prange(n_img * n_ch):
        c = plane % n_ch
        inv = 1.0 / math.sqrt(running_var[c] + eps)
        a = y.dtype.type(gamma[c] * inv)
        b = y.dtype.type(beta[c] - running_mean[c] * gamma[c] * inv)
        o = _u(plane * hw)
        if relu:
            for j in range(hw):
                yf[o + _u(j)] = max(xf[o + _u(j)] * a + b, zero)
        else:
            for j in range(hw):
                yf[o + _u(j)] = xf[o + _u(j)] * a + b


def batchnorm_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, need_dx, y=None,
                       relu=False, dres=None, add_res=False):
    """Training-mode batch norm backward. x, dy: (N, C, H, W) -> dx (if ``need_dx``),
    dgamma, dbeta: (C,). All outputs are overwritten; dx is untouched when not needed (it
    may be ``dy`` itself). With ``relu`` (a fused ReLU), ``dy`` is the gradient of the
    post-ReLU output ``y`` and is taken where ``y > 0`` only. With ``dres`` (a fused
    residual sum, :func:`batchnorm_forward_train`'s ``res``), the residual's gradient -- dy,
    masked with the ReLU -- is written there in the first pass (added with ``add_res``);
    when written, the second pass reads it back instead of dy and y.

    With xhat = (x - mean)*invstd and m = N*H*W:
    dbeta = sum(dy), dgamma = sum(dy*xhat),
    dx = gamma*invstd/m * (m*dy - dbeta - xhat*dgamma).
    """
    if dres is None:
        _bn_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, bool(need_dx),
                     dy if y is None else y, bool(relu) and y is not None)
    else:
        _bn_backward_res(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, bool(need_dx),
                         dy if y is None else y, bool(relu) and y is not None, dres,
                         bool(add_res))


@njit(cache=True, fastmath=_FM, inline="always")
def _param_grads(c, sdy, sdyx, inv, m, gamma, dgamma, dbeta):
    """Store channel c's dbeta = sum(dy) and dgamma = sum(dy*xhat) from the sums ``sdy``,
    ``sdyx`` (= sum(dy*(x - mean))); return :func:`_dx_pass`'s scale, mean of dy and xhat
    coefficient."""
    dbeta[c] = sdy
    dgamma[c] = sdyx * inv
    return gamma[c] * inv, sdy / m, sdyx * inv * inv / m


@njit(cache=True, fastmath=_FM, inline="always")
def _dx_pass(src, mask, use_mask, xf, dxf, o, hw, k, mean_dy, mu, coef):
    """dx = k*(g - mean(g) - xhat*coef) over one plane, g = src (where mask > 0 with
    ``use_mask``); the test sits outside the loops (inside, LLVM kept a branch per element:
    1.9 ms against 1.25 ms for 128x16x32x32 on 2 threads)."""
    zero = src.dtype.type(0)
    if use_mask:
        for j in range(hw):
            v = src[o + _u(j)]  # loaded either way: a select, not a branch
            g = np.float64(v if mask[o + _u(j)] > zero else zero)
            dxf[o + _u(j)] = k * (g - mean_dy - (np.float64(xf[o + _u(j)]) - mu) * coef)
    else:
        for j in range(hw):
            dxf[o + _u(j)] = k * (np.float64(src[o + _u(j)]) - mean_dy
                                  - (np.float64(xf[o + _u(j)]) - mu) * coef)


@njit(cache=True, parallel=True, fastmath=_FM)
def _bn_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, need_dx, y, relu):
    n_img, n_ch, h_in, w_in = x.shape
    hw = h_in * w_in
    m = n_img * hw
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    yf = y.reshape(y.size)
    zero = dy.dtype.type(0)
    for c in prange(n_ch):
        mu = np.float64(mean[c])
        inv = invstd[c]
        sdy = 0.0
        sdyx = 0.0
        for n in range(n_img):
            o = _u((n * n_ch + c) * hw)
            if relu:
                for j in range(hw):
                    v = dyf[o + _u(j)]  # loaded either way: a select, not a branch
                    g = np.float64(v if yf[o + _u(j)] > zero else zero)
                    sdy += g
                    sdyx += g * (np.float64(xf[o + _u(j)]) - mu)
            else:
                for j in range(hw):
                    g = np.float64(dyf[o + _u(j)])
                    sdy += g
                    sdyx += g * (np.float64(xf[o + _u(j)]) - mu)
        k, mean_dy, coef = _param_grads(c, sdy, sdyx, inv, m, gamma, dgamma, dbeta)
        if need_dx:
            for n in range(n_img):
                _dx_pass(dyf, yf, relu, xf, dxf, _u((n * n_ch + c) * hw), hw, k, mean_dy, mu,
                         coef)


@njit(cache=True, parallel=True, fastmath=_FM)
def _bn_backward_res(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, need_dx, y, relu, dres,
                     add_res):
    """:func:`_bn_backward` of the residual sum: the first pass also writes (or, with
    ``add_res``, adds) the shortcut's gradient, dy masked by the ReLU, which the second
    pass then reads back when it was written. A kernel of its own: networks without
    residual blocks never compile it."""
    n_img, n_ch, h_in, w_in = x.shape
    hw = h_in * w_in
    m = n_img * hw
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    yf = y.reshape(y.size)
    rf = dres.reshape(dres.size)
    zero = dy.dtype.type(0)
    for c in prange(n_ch):
        mu = np.float64(mean[c])
        inv = invstd[c]
        sdy = 0.0
        sdyx = 0.0
        for n in range(n_img):
            o = _u((n * n_ch + c) * hw)
            # plus what dres holds with add_res (a select: the old value is loaded either
            # way, never used when overwriting)
            for j in range(hw):
                v = dyf[o + _u(j)]
                v = v if (not relu or yf[o + _u(j)] > zero) else zero
                old = rf[o + _u(j)]
                rf[o + _u(j)] = v + old if add_res else v
                sdy += np.float64(v)
                sdyx += np.float64(v) * (np.float64(xf[o + _u(j)]) - mu)
        k, mean_dy, coef = _param_grads(c, sdy, sdyx, inv, m, gamma, dgamma, dbeta)
        if need_dx:
            for n in range(n_img):
                o = _u((n * n_ch + c) * hw)
                if add_res:  # dres holds more than this gradient: dy and the mask again
                    _dx_pass(dyf, yf, relu, xf, dxf, o, hw, k, mean_dy, mu, coef)
                else:
                    _dx_pass(rf, rf, np.bool_(False), xf, dxf, o, hw, k, mean_dy, mu, coef)


@njit(cache=True, error_model="numpy")
def fold_batchnorm(w, b, has_bias, gamma, beta, running_mean, running_var, eps, wf, bf):
    """Fold an inference-mode batch norm into the layer before it. w, wf: (F, K) (a conv's
    (F, C, KH, KW) weights or an fc's (F, K) as a 2-D view); b, bf, gamma, ...: (F,).

    With a = gamma / sqrt(running_var + eps): ``wf = a * w`` (row-wise) and
    ``bf = a * (b - running_mean) + beta`` (b taken as 0 without ``has_bias``), so that
    ``bn(layer(x; w, b)) = layer(x; wf, bf)``.
    """
    n_out, k = w.shape
    for f in range(n_out):
        a = gamma[f] / math.sqrt(running_var[f] + eps)
        b0 = b[f] if has_bias else 0.0
        bf[f] = a * (b0 - running_mean[f]) + beta[f]
        for j in range(k):
            wf[f, j] = w[f, j] * a
