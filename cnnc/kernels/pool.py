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

from cnnc.kernels.blas import uidx as _u
from cnnc.kernels.serial import pick
from cnnc.kernels.threads import work_chunks

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


def maxpool2d_forward(x, y, argmax, kh, kw, sh, sw, ph, pw):
    """Max pooling. x: (N, C, H, W) -> y: (N, C, OH, OW), argmax: int32 (N, C, OH, OW).

    ``argmax`` holds the flat index ``h*W + w`` of the maximum in the input plane (first
    maximum on ties; a NaN wins, like PyTorch). A window with no input element (only possible
    with inconsistent geometry) gives ``-inf`` and argmax ``-1``.

    2x2 and 3x3 windows with stride 2 that lie inside the input (no padding, floor rounding)
    take unrolled kernels, 3-9x faster than the general one (whose short variable-length loops
    do not vectorize); everything else takes :func:`_maxpool_general`.
    """
    kernel, args = maxpool2d_forward_call(x, y, argmax, kh, kw, sh, sw, ph, pw)
    kernel(*args)


def maxpool2d_forward_call(x, y, argmax, kh, kw, sh, sw, ph, pw):
    """:func:`maxpool2d_forward` as ``(kernel, args)``, the kernel chosen now (its serial
    twin for one image of little work: :mod:`cnnc.kernels.serial`)."""
    oh_n, ow_n = y.shape[2], y.shape[3]
    inside = (ph == 0 and pw == 0 and (oh_n - 1) * sh + kh <= x.shape[2]
              and (ow_n - 1) * sw + kw <= x.shape[3])
    n = x.shape[0]
    if inside and sh == 2 and sw == 2 and kh == kw and kh in (2, 3):
        if kh == 2:
            return pick(_maxpool_2x2s2, n, x.size), (x, y, argmax, work_chunks())
        return pick(_maxpool_3x3s2, n, x.size), (x, y, argmax)
    return pick(_maxpool_general, n, x.size), (x, y, argmax, kh, kw, sh, sw, ph, pw)


@njit(cache=True, inline="always")
def _take(v, i, best, best_i):
    """The running maximum after seeing ``v`` at index ``i``: strictly greater (the first
    maximum wins ties) or NaN (a NaN wins), written without branches so loops vectorize."""
    k = (v > best) | (v != v)
    return (v if k else best), (i if k else best_i)


# The stride-2 kernels below keep the stride a constant and the argmax as an int32 offset
# within the window: LLVM then vectorizes the row loop (2x2: 1.8 -> 0.5 ms at 128x32x32x32).

@njit(cache=True, inline="always")
def _row_len(r, r_hi, ow_n, ow_up):
    """Outputs to compute in output row ``r`` of a thread's rows ``[.., r_hi)``: a whole
    number of vectors (``ow_up``) where the extra ones land on rows this thread computes
    later (they rewrite them), else exactly ``ow_n``. Rows of 14 (LeNet) otherwise spend
    most of their time in the loop's scalar remainder: 0.178 -> 0.056 ms at 64x6x28x28."""
    return ow_up if (r_hi - 1 - r) * ow_n >= ow_up - ow_n else ow_n


@njit(cache=True, parallel=True)
def _maxpool_2x2s2(x, y, argmax, T):
    n_img, n_ch, h_in, w_in = x.shape
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    af = argmax.reshape(argmax.size)
    w1 = np.int32(w_in)
    one = np.int32(1)
    zero = np.int32(0)
    rows = n_img * n_ch * oh_n
    ow_up = (ow_n + 7) // 8 * 8
    for t in prange(T):
        r_hi = (t + 1) * rows // T
        for r in range(t * rows // T, r_hi):
            plane = r // oh_n
            oh = r - plane * oh_n
            r0 = _u(plane * h_in * w_in + 2 * oh * w_in)
            r1 = r0 + _u(w_in)
            d = _u(r * ow_n)
            base = np.int32(2 * oh * w_in)
            for ow in range(_row_len(r, r_hi, ow_n, ow_up)):
                j = _u(2 * ow)
                best, o = _take(xf[r0 + j + _u(1)], one, xf[r0 + j], zero)
                best, o = _take(xf[r1 + j], w1, best, o)
                best, o = _take(xf[r1 + j + _u(1)], w1 + one, best, o)
                yf[d + _u(ow)] = best
                af[d + _u(ow)] = base + np.int32(2 * ow) + o


@njit(cache=True, parallel=True)
def _maxpool_3x3s2(x, y, argmax):
    n_img, n_ch, h_in, w_in = x.shape
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    af = argmax.reshape(argmax.size)
    w1 = np.int32(w_in)
    w2 = np.int32(2 * w_in)
    one = np.int32(1)
    two = np.int32(2)
    zero = np.int32(0)
    for plane in prange(n_img * n_ch):
        xo = plane * h_in * w_in
        for oh in range(oh_n):
            r0 = _u(xo + 2 * oh * w_in)
            r1 = r0 + _u(w_in)
            r2 = r1 + _u(w_in)
            d = _u((plane * oh_n + oh) * ow_n)
            base = np.int32(2 * oh * w_in)
            for ow in range(ow_n):
                j = _u(2 * ow)
                best, o = _take(xf[r0 + j + _u(1)], one, xf[r0 + j], zero)
                best, o = _take(xf[r0 + j + _u(2)], two, best, o)
                best, o = _take(xf[r1 + j], w1, best, o)
                best, o = _take(xf[r1 + j + _u(1)], w1 + one, best, o)
                best, o = _take(xf[r1 + j + _u(2)], w1 + two, best, o)
                best, o = _take(xf[r2 + j], w2, best, o)
                best, o = _take(xf[r2 + j + _u(1)], w2 + one, best, o)
                best, o = _take(xf[r2 + j + _u(2)], w2 + two, best, o)
                yf[d + _u(ow)] = best
                af[d + _u(ow)] = base + np.int32(2 * ow) + o


@njit(cache=True, parallel=True)
def _maxpool_general(x, y, argmax, kh, kw, sh, sw, ph, pw):
    n_img, n_ch, h_in, w_in = x.shape
    oh_n = y.shape[2]
    ow_n = y.shape[3]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    af = argmax.reshape(argmax.size)
    for plane in prange(n_img * n_ch):
        xo = plane * h_in * w_in
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, h_in)
            h0 = max(h0, 0)
            d = _u((plane * oh_n + oh) * ow_n)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, w_in)
                w0 = max(w0, 0)
                if h0 >= h1 or w0 >= w1:
                    yf[d + _u(ow)] = -np.inf
                    af[d + _u(ow)] = -1
                    continue
                best_i = h0 * w_in + w0
                best = xf[_u(xo + best_i)]
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        i = h * w_in + w
                        best, best_i = _take(xf[_u(xo + i)], i, best, best_i)
                yf[d + _u(ow)] = best
                af[d + _u(ow)] = best_i


def maxpool2d_backward(dy, argmax, dx, window=None):
    """Max pooling backward. dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W), overwritten.

    Scatter-adds each ``dy`` into the input position recorded in ``argmax`` (overlapping
    windows accumulate); entries with argmax < 0 are skipped. Given the forward pass's
    ``window`` ``(kh, kw, sh, sw, ph, pw)`` and it is 2x2 with stride 2 and no padding, each
    input element belongs to at most one window and is written once, without a zeroing pass.
    """
    if window is not None and tuple(window) == (2, 2, 2, 2, 0, 0) and \
            dy.shape[2] == dx.shape[2] // 2 and dy.shape[3] == dx.shape[3] // 2:
        _maxpool_2x2s2_backward(dy, argmax, dx, work_chunks())
    else:
        _maxpool_scatter(dy, argmax, dx)


@njit(cache=True, parallel=True)
def _maxpool_2x2s2_backward(dy, argmax, dx, T):
    n_img, n_ch, h_in, w_in = dx.shape
    oh_n = dy.shape[2]
    ow_n = dy.shape[3]
    dyf = dy.reshape(dy.size)
    af = argmax.reshape(argmax.size)
    dxf = dx.reshape(dx.size)
    zero = dx.dtype.type(0)
    w1 = np.int32(w_in)
    rows = n_img * n_ch * oh_n
    for t in prange(T):
        for r in range(t * rows // T, (t + 1) * rows // T):
            plane = r // oh_n
            oh = r - plane * oh_n
            xo = plane * h_in * w_in
            r0 = _u(xo + 2 * oh * w_in)
            r1 = r0 + _u(w_in)
            s = _u(r * ow_n)
            base = np.int32(2 * oh * w_in)
            # a loop over input columns: contiguous stores, each window's dy and argmax
            # read twice (4-5x faster than 4 strided stores per window: LeNet's 28x28
            # 0.38 -> 0.09 ms, 128x32x32x32 4.9 -> 1.0 ms)
            for iw in range(2 * ow_n):
                ow = _u(iw >> 1)
                g = dyf[s + ow]
                o = af[s + ow] - base - np.int32(iw & ~1)  # offset in the window
                e = np.int32(iw & 1)
                dxf[r0 + _u(iw)] = g if o == e else zero
                dxf[r1 + _u(iw)] = g if o == w1 + e else zero
            if w_in & 1:  # the last column is in no window
                dxf[r0 + _u(w_in - 1)] = zero
                dxf[r1 + _u(w_in - 1)] = zero
            if h_in & 1 and oh == oh_n - 1:  # nor is the last row
                rl = _u(xo + (h_in - 1) * w_in)
                for w in range(w_in):
                    dxf[rl + _u(w)] = zero


@njit(cache=True, parallel=True)
def _maxpool_scatter(dy, argmax, dx):
    n_img, n_ch, h_in, w_in = dx.shape
    oh_n = dy.shape[2]
    ow_n = dy.shape[3]
    dyf = dy.reshape(dy.size)
    af = argmax.reshape(argmax.size)
    dxf = dx.reshape(dx.size)
    zero = dx.dtype.type(0)
    for plane in prange(n_img * n_ch):
        xo = _u(plane * h_in * w_in)
        for j in range(h_in * w_in):
            dxf[xo + _u(j)] = zero
        s = _u(plane * oh_n * ow_n)
        for j in range(oh_n * ow_n):
            i = af[s + _u(j)]
            if i >= 0:
                dxf[xo + _u(i)] += dyf[s + _u(j)]


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
