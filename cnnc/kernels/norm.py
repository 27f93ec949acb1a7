"""Spatial batch normalization kernels: statistics over (N, H, W) per channel.

x: (N, C, H, W), NCHW C-contiguous; an (N, C) input is passed as an (N, C, 1, 1) view.
gamma, beta, mean, invstd, running_mean, running_var, dgamma, dbeta: (C,), same float dtype
as x. Sums are accumulated in float64 whatever the dtype. Training and backward kernels run
``prange`` over channels; inference runs ``prange`` over the N*C planes.
"""

from __future__ import annotations

import math

from numba import njit, prange

__all__ = [
    "batchnorm_forward_train",
    "batchnorm_forward_infer",
    "batchnorm_backward",
]


@njit(cache=True, parallel=True, error_model="numpy")
def batchnorm_forward_train(x, gamma, beta, y, mean, invstd, running_mean, running_var,
                            momentum, eps):
    """Training-mode batch norm. x: (N, C, H, W) -> y: (N, C, H, W).

    Writes the batch mean and ``invstd = 1/sqrt(var + eps)`` (biased variance, two-pass) to
    ``mean`` and ``invstd`` for the backward pass, and updates the running statistics in
    place like PyTorch: ``running = (1 - momentum)*running + momentum*batch``, where the
    running variance takes the unbiased batch variance ``var * m/(m - 1)`` (m = N*H*W; the
    biased one when m == 1).
    """
    n_img, n_ch, h_in, w_in = x.shape
    m = n_img * h_in * w_in
    for c in prange(n_ch):
        s = 0.0
        for n in range(n_img):
            for h in range(h_in):
                for w in range(w_in):
                    s += x[n, c, h, w]
        mu = s / m
        ss = 0.0
        for n in range(n_img):
            for h in range(h_in):
                for w in range(w_in):
                    d = x[n, c, h, w] - mu
                    ss += d * d
        var = ss / m
        inv = 1.0 / math.sqrt(var + eps)
        mean[c] = mu
        invstd[c] = inv
        unbiased = ss / (m - 1) if m > 1 else var
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mu
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased
        a = gamma[c] * inv
        b = beta[c] - mu * a
        for n in range(n_img):
            for h in range(h_in):
                for w in range(w_in):
                    y[n, c, h, w] = x[n, c, h, w] * a + b


@njit(cache=True, parallel=True, error_model="numpy")
def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps, y):
    """Inference-mode batch norm with the running statistics. x: (N, C, H, W) -> y."""
    n_img, n_ch, h_in, w_in = x.shape
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        a = gamma[c] / math.sqrt(running_var[c] + eps)
        b = beta[c] - running_mean[c] * a
        for h in range(h_in):
            for w in range(w_in):
                y[n, c, h, w] = x[n, c, h, w] * a + b


@njit(cache=True, parallel=True, error_model="numpy")
def batchnorm_backward(x, gamma, dy, mean, invstd, dx, dgamma, dbeta, need_dx):
    """Training-mode batch norm backward. x, dy: (N, C, H, W) -> dx (if ``need_dx``),
    dgamma, dbeta: (C,). All outputs are overwritten; dx is untouched when not needed.

    With xhat = (x - mean)*invstd and m = N*H*W:
    dbeta = sum(dy), dgamma = sum(dy*xhat),
    dx = gamma*invstd/m * (m*dy - dbeta - xhat*dgamma).
    """
    n_img, n_ch, h_in, w_in = x.shape
    m = n_img * h_in * w_in
    for c in prange(n_ch):
        mu = mean[c]
        inv = invstd[c]
        sdy = 0.0
        sdyx = 0.0
        for n in range(n_img):
            for h in range(h_in):
                for w in range(w_in):
                    g = dy[n, c, h, w]
                    sdy += g
                    sdyx += g * (x[n, c, h, w] - mu)
        db = sdy
        dg = sdyx * inv
        dbeta[c] = db
        dgamma[c] = dg
        if need_dx:
            k = gamma[c] * inv
            mean_dy = db / m
            coef = dg * inv / m
            for n in range(n_img):
                for h in range(h_in):
                    for w in range(w_in):
                        dx[n, c, h, w] = k * (dy[n, c, h, w] - mean_dy
                                              - (x[n, c, h, w] - mu) * coef)


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
