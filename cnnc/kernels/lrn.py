"""Local response normalization across channels (AlexNet, Caffe's ACROSS_CHANNELS, PyTorch's
LocalResponseNorm).

x, y, scale, dy, dx: (N, C, P), C-contiguous, one float dtype; images pass (N, C, H*W)
views, sequences (N, C, L), vectors (N, C, 1). For an odd window ``size`` = 2h + 1:

    scale_c = k + alpha/size * sum_{|j - c| <= h} x_j^2,   y_c = x_c * scale_c^(-beta)

(channels outside 0..C-1 count as zeros). ``prange`` runs over images: each writes its own
slice. Sums are accumulated in float64.
"""
from __future__ import annotations

from numba import njit, prange

__all__ = ["lrn_forward", "lrn_backward"]


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_forward(x, y, scale, size, alpha, beta, k):
    """y = x / scale^beta; keeps ``scale`` for the backward pass."""
    n_img, n_ch, n_pos = x.shape
    half = size // 2
    a = alpha / size
    for n in prange(n_img):
        for p in range(n_pos):
            s = 0.0
            for j in range(min(half, n_ch)):  # the window of channel 0 (minus its first entry)
                s += float(x[n, j, p]) * x[n, j, p]
            for c in range(n_ch):
                hi = c + half
                if hi < n_ch:
                    s += float(x[n, hi, p]) * x[n, hi, p]
                lo = c - half - 1
                if lo >= 0:
                    s -= float(x[n, lo, p]) * x[n, lo, p]
                d = k + a * max(s, 0.0)  # max: the running sum may dip below 0 by rounding
                scale[n, c, p] = d
                y[n, c, p] = x[n, c, p] * d ** (-beta)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_backward(x, y, scale, dy, dx, size, alpha, beta):
    """dx_i = dy_i scale_i^(-beta) - 2 alpha beta/size * x_i * sum_{|c - i| <= h} dy_c y_c / scale_c."""
    n_img, n_ch, n_pos = x.shape
    half = size // 2
    coef = 2.0 * alpha * beta / size
    for n in prange(n_img):
        for p in range(n_pos):
            s = 0.0
            for j in range(min(half, n_ch)):
                s += float(dy[n, j, p]) * y[n, j, p] / scale[n, j, p]
            for i in range(n_ch):
                hi = i + half
                if hi < n_ch:
                    s += float(dy[n, hi, p]) * y[n, hi, p] / scale[n, hi, p]
                lo = i - half - 1
                if lo >= 0:
                    s -= float(dy[n, lo, p]) * y[n, lo, p] / scale[n, lo, p]
                dx[n, i, p] = dy[n, i, p] * scale[n, i, p] ** (-beta) - coef * x[n, i, p] * s
