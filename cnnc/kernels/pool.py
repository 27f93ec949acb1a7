"""Pooling kernels: max / average 2-D pooling, global average pooling, channel (maxout) pooling.

All tensors are NCHW, C-contiguous, one float dtype per call. Every kernel runs ``prange``
over the N*C (or N*C_out) planes: each iteration reads and writes its own plane only.

Window geometry (max and avg pooling): output position ``(oh, ow)`` covers input rows
``oh*sh - ph .. oh*sh - ph + kh - 1`` and columns ``ow*sw - pw .. ow*sw - pw + kw - 1``,
clipped to the input. The output size is taken from ``y.shape`` (the caller applies floor or
ceil rounding), so a ceil-mode window may start in range and run past the end: it is clipped.
Padding never takes part: max pooling pads with -inf, average pooling divides by the number
of real input elements in the clipped window (PyTorch ``count_include_pad=False``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "global_avgpool_forward",
    "global_avgpool_backward",
    "channel_maxpool_forward",
    "channel_maxpool_backward",
]


@njit(cache=True, parallel=True, error_model="numpy")
def maxpool2d_forward(x, y, argmax, kh, kw, sh, sw, ph, pw):
    """Max pooling. x: (N, C, H, W) -> y: (N, C, OH, OW), argmax: int32 (N, C, OH, OW).

    ``argmax`` holds the flat index ``h*W + w`` of the maximum in the input plane (first
    maximum on ties; a NaN wins, like PyTorch). A window with no input element (only possible
    with inconsistent geometry) gives ``-inf`` and argmax ``-1``.
    """
    n_img, n_ch, h_in, w_in = x.shape
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h_in)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w_in)
                w0 = max(w0, 0)
                if h0 >= h1 or w0 >= w1:
                    y[n, c, oh, ow] = -np.inf
                    argmax[n, c, oh, ow] = -1
                    continue
                best = x[n, c, h0, w0]
                best_i = h0 * w_in + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = x[n, c, h, w]
                        if v > best or v != v:
                            best = v
                            best_i = h * w_in + w
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_i


@njit(cache=True, parallel=True, error_model="numpy")
def maxpool2d_backward(dy, argmax, dx):
    """Max pooling backward. dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W), overwritten.

    Scatter-adds each ``dy`` into the input position recorded in ``argmax`` (overlapping
    windows accumulate); entries with argmax < 0 are skipped.
    """
    n_img, n_ch, h_in, w_in = dx.shape
    oh_n = dy.shape[2]
    ow_n = dy.shape[3]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        for h in range(h_in):
            for w in range(w_in):
                dx[n, c, h, w] = 0
        for oh in range(oh_n):
            for ow in range(ow_n):
                i = argmax[n, c, oh, ow]
                if i >= 0:
                    h = i // w_in
                    w = i - h * w_in
                    dx[n, c, h, w] += dy[n, c, oh, ow]


@njit(cache=True, parallel=True, error_model="numpy")
def avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw):
    """Average pooling. x: (N, C, H, W) -> y: (N, C, OH, OW).

    Divisor = number of real input elements in the clipped window (count_include_pad=False).
    An empty window gives 0.
    """
    n_img, n_ch, h_in, w_in = x.shape
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h_in)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w_in)
                w0 = max(w0, 0)
                count = (h1 - h0) * (w1 - w0)
                if h0 >= h1 or w0 >= w1:
                    y[n, c, oh, ow] = 0
                    continue
                s = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s += x[n, c, h, w]
                y[n, c, oh, ow] = s / count


@njit(cache=True, parallel=True, error_model="numpy")
def avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """Average pooling backward. dy: (N, C, OH, OW) -> dx: (N, C, H, W), overwritten."""
    n_img, n_ch, h_in, w_in = dx.shape
    oh_n = dy.shape[2]
    ow_n = dy.shape[3]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        for h in range(h_in):
            for w in range(w_in):
                dx[n, c, h, w] = 0
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h_in)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w_in)
                w0 = max(w0, 0)
                if h0 >= h1 or w0 >= w1:
                    continue
                g = dy[n, c, oh, ow] / ((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dx[n, c, h, w] += g


@njit(cache=True, parallel=True, error_model="numpy")
def global_avgpool_forward(x, y):
    """Global average pooling. x: (N, C, H, W) -> y: (N, C). float64 accumulation."""
    n_img, n_ch, h_in, w_in = x.shape
    inv = 1.0 / (h_in * w_in)
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        s = 0.0
        for h in range(h_in):
            for w in range(w_in):
                s += x[n, c, h, w]
        y[n, c] = s * inv


@njit(cache=True, parallel=True, error_model="numpy")
def global_avgpool_backward(dy, dx):
    """Global average pooling backward. dy: (N, C) -> dx: (N, C, H, W), overwritten."""
    n_img, n_ch, h_in, w_in = dx.shape
    inv = 1.0 / (h_in * w_in)
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        g = dy[n, c] * inv
        for h in range(h_in):
            for w in range(w_in):
                dx[n, c, h, w] = g


@njit(cache=True, parallel=True, error_model="numpy")
def channel_maxpool_forward(x, y, argmax, k):
    """Cross-channel (maxout) pooling. x: (N, C, H, W) -> y: (N, C//k, H, W).

    ``y[n, j] = max(x[n, j*k : j*k + k])`` per pixel; argmax: int32 (N, C//k, H, W) holds
    which of the k channels (0..k-1) won (first on ties; a NaN wins). Input channels past
    ``(C//k)*k`` are ignored.
    """
    n_img = x.shape[0]
    h_in = x.shape[2]
    w_in = x.shape[3]
    n_out = y.shape[1]
    for plane in prange(n_img * n_out):
        n = plane // n_out
        j = plane - n * n_out
        c0 = j * k
        for h in range(h_in):
            for w in range(w_in):
                best = x[n, c0, h, w]
                best_i = 0
                for i in range(1, k):
                    v = x[n, c0 + i, h, w]
                    if v > best or v != v:
                        best = v
                        best_i = i
                y[n, j, h, w] = best
                argmax[n, j, h, w] = best_i


@njit(cache=True, parallel=True, error_model="numpy")
def channel_maxpool_backward(dy, argmax, dx, k):
    """Maxout backward. dy, argmax: (N, C//k, H, W) -> dx: (N, C, H, W), overwritten.

    Input channels past ``(C//k)*k`` get zero gradient.
    """
    n_img, n_ch, h_in, w_in = dx.shape
    n_out = dy.shape[1]
    for plane in prange(n_img * n_ch):
        n = plane // n_ch
        c = plane - n * n_ch
        j = c // k
        i = c - j * k
        if j >= n_out:
            for h in range(h_in):
                for w in range(w_in):
                    dx[n, c, h, w] = 0
            continue
        for h in range(h_in):
            for w in range(w_in):
                if argmax[n, j, h, w] == i:
                    dx[n, c, h, w] = dy[n, j, h, w]
                else:
                    dx[n, c, h, w] = 0
