"""Direct convolution (NCHW, stride 1 or 2, dilation 1, one group) on the register-blocked
micro-kernel of :mod:`cnnc.kernels.conv.microkernel`: forward, data gradient, weight gradient.

No im2col and no BLAS. Per image, the input is zero-padded into a per-thread buffer ``xp``
of ``C x Hp x Wp`` (stride 2: split into four phase planes, :func:`phase_image`, so that
every tap again reads a contiguous shifted slice); output row ``oh``, columns
``ow0 .. ow0+NR`` of filters ``f0 .. f0+MR`` are then one micro-kernel call, a GEMM over
``k = (c, kh, kw)`` whose B rows are shifted slices of ``xp``::

    y[n, f, oh, ow0 + j] = sum_k w[f, k] * xp[koff[k] + oh*Wp + ow0 + j],
    koff[(c, kh, kw)] = c*Hp*Wp + kh*Wp + kw          (stride 1)

Bias and ReLU are applied as the micro-kernel stores. Output rows narrower than ``NR``
(16 float32 columns with AVX2) are computed on the "wide" grid of ``OH x Wp`` columns
instead (each row then carries ``Wp - OW`` garbage columns), into a buffer copied out.
Batches smaller than the thread count split one image's rows (:func:`direct_conv_rows`).

Backward (:func:`direct_backward`), per image, reading ``dy`` (masked by ``y > 0`` after a
fused ReLU) from memory once, into a copy padded by ``K - 1 - p``:

* data gradient (stride 1): the forward computation on that copy with the filters flipped
  and transposed;
* weight gradient: ``dW^T[k, f] += sum_q xp[koff[k] + q] * dyT[q, f]`` over the wide grid
  ``q = oh*Wp + ow`` (``dyT`` is ``dy`` transposed, zero in the garbage columns), per-thread
  partials summed at the end; db is the same GEMM's row of ones.

Measured on the 2-core AVX2 EPYC, batch 128, 2 threads (ResNet-8's 16 -> 16 layer at 32x32):
forward 3.9 ms (the micro-kernel alone 3.5 ms, 172 GFLOP/s) against 7.2-7.8 ms for Winograd
+ OpenBLAS; dx + dW 9.0 ms against 13.7 ms for im2col + OpenBLAS. Fast-math without
reassociation, as in :mod:`cnnc.kernels.conv.winograd`: compiled and cached kernels agree bitwise.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cnnc.kernels.blas import uidx as _u
from cnnc.kernels.conv.microkernel import (COLS_F32, mk1, mk2, mk3, mk4, mk_cols, mks1, mks2, mks3,
                                     mks4, mks5, mks6, tr_block, tr_size)
from cnnc.kernels.conv.winograd import FASTMATH
from cnnc.kernels.conv.winograd import wino_pad as _pad

NR_MAX = COLS_F32  # micro-kernel columns of the widest case (float32): sizes use it
MR = 4  # filter rows per micro-kernel call (forward, data gradient)
# taps per call of the weight gradient: up to 6 rows x 2 vectors (12 accumulators: more
# slack over the FMA latency than 8), in blocks as even as they come. ResNet-8's 16 -> 16
# layer, dW alone at batch 128: 4.4 -> 3.9-4.1 ms; its training step 85.3-87.2 ms against
# 87.8-88.5 with 4 (alternating runs). The forward keeps 4 rows: 6 was faster alone on 16
# filters but slower in the training step on 32.
MR_DW = 6
_DW_COLS = 256  # wide-grid columns per weight-gradient pass: dyT's slice stays in L1


@njit(cache=True, fastmath=FASTMATH)
def phase_image(xf, xoff, C, H, W, ph, pw, KH, KW, Hq, Wq, buf, boff):
    """buf[boff + ((a*2 + b)*C + c)*Hq*Wq + i*Wq + j] = xpad[c, 2i+a, 2j+b] (zero outside the
    image). A 1x1 window needs phase (0, 0) only; otherwise all four planes are written,
    an input row at a time: its even and odd elements go to the two planes of its row
    phase in one loop (an interleaved load LLVM vectorizes; one strided loop per plane
    took 3x longer)."""
    zero = buf.dtype.type(0)
    plane = Hq * Wq
    if KH == 1 and KW == 1:
        for c in range(C):
            base = boff + c * plane
            for i in range(Hq):
                ih = 2 * i - ph
                d = _u(base + i * Wq)
                for j in range(Wq):
                    iw = 2 * j - pw
                    buf[d + _u(j)] = (xf[_u(xoff + (c * H + ih) * W + iw)]
                                      if 0 <= ih < H and 0 <= iw < W else zero)
        return
    for j in range(4 * C * plane):
        buf[_u(boff + j)] = zero
    e = pw % 2  # input column 2k lands in plane b = e, column k + h; 2k+1 in 1 - e, k + h + e
    h = pw // 2
    half = W // 2
    for c in range(C):
        for ih in range(H):
            a = (ih + ph) % 2
            i = (ih + ph) // 2
            row = _u(xoff + (c * H + ih) * W)
            de = _u(boff + ((a * 2 + e) * C + c) * plane + i * Wq + h)
            do = _u(boff + ((a * 2 + 1 - e) * C + c) * plane + i * Wq + h + e)
            for k in range(half):
                buf[de + _u(k)] = xf[row + _u(2) * _u(k)]
                buf[do + _u(k)] = xf[row + _u(2) * _u(k) + _u(1)]
            if W % 2:
                buf[de + _u(half)] = xf[row + _u(W - 1)]



@njit(cache=True)
def _rows(mr, a, a0, arow, ar0, b, b0, btab, kk, c, c0, ldc, nc, beta, bias, bias0, has_bias,
          relu):
    """``mr`` (1-4) rows of the micro-kernel, B rows from ``btab``."""
    if mr >= 4:
        mk4(a, a0, arow, ar0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, bias0, has_bias, relu)
    elif mr == 3:
        mk3(a, a0, arow, ar0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, bias0, has_bias, relu)
    elif mr == 2:
        mk2(a, a0, arow, ar0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, bias0, has_bias, relu)
    else:
        mk1(a, a0, arow, ar0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, bias0, has_bias, relu)


@njit(cache=True)
def rows_strided(mr, a, a0, arow, ar0, b, b0, ldb, kk, c, c0, ldc, nc, beta, bias, has_bias):
    """``mr`` (1-6) rows of the micro-kernel, B rows ``ldb`` apart."""
    if mr >= 6:
        mks6(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)
    elif mr == 5:
        mks5(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)
    elif mr == 4:
        mks4(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)
    elif mr == 3:
        mks3(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)
    elif mr == 2:
        mks2(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)
    else:
        mks1(a, a0, arow, ar0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, 0)


@njit(cache=True, inline="always")
def _planes(H, W, ph, pw, stride):
    """(rows, columns) of the planes the micro-kernel reads: the zero-padded image at stride
    1, its four phase planes (``phase_image``) at stride 2."""
    if stride == 1:
        return H + 2 * ph, W + 2 * pw
    return (H + 2 * ph + 1) // 2, (W + 2 * pw + 1) // 2


@njit(cache=True)
def _tables(C, F, KH, KW, Hp, Wp, stride):
    """(koff: where each (c, kh, kw) starts in the prepared image, arow: filter rows
    f*C*KH*KW). At stride 2, tap (kh, kw) reads phase plane (kh % 2, kw % 2) shifted by
    (kh // 2, kw // 2)."""
    K = C * KH * KW
    koff = np.empty(K, np.int64)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                if stride == 1:
                    o = c * Hp * Wp + kh * Wp + kw
                else:
                    o = (((kh % 2) * 2 + kw % 2) * C + c) * Hp * Wp + (kh // 2) * Wp + kw // 2
                koff[(c * KH + kh) * KW + kw] = o
    arow = np.empty(F, np.int64)
    for f in range(F):
        arow[f] = f * K
    return koff, arow


@njit(cache=True, inline="always")
def _prepare_s1(sf, mf, use_mask, soff, C, H, W, ph, pw, KH, KW, Hp, Wp, ws, xp):
    """The image the micro-kernel reads at stride 1, at ws[xp:]: zero-padded (masked)."""
    _pad(sf, mf, use_mask, soff, C, H, W, ph, pw, Hp, Wp, ws, xp)


@njit(cache=True, inline="always")
def _prepare_s2(sf, mf, use_mask, soff, C, H, W, ph, pw, KH, KW, Hp, Wp, ws, xp):
    """The image the micro-kernel reads at stride 2, at ws[xp:]: its four phase planes."""
    phase_image(sf, soff, C, H, W, ph, pw, KH, KW, Hp, Wp, ws, xp)


@njit(cache=True)
def sizes(N, C, H, W, F, KH, KW, ph, pw, T, stride=1):
    """(shared, per-thread) workspace elements for the forward pass and for the backward
    pass (weight and data gradients, one image at a time, both buffers at once)."""
    Hp, Wp = _planes(H, W, ph, pw, stride)
    OH, OW = (H + 2 * ph - KH) // stride + 1, (W + 2 * pw - KW) // stride + 1
    qh, qw = KH - 1 - ph, KW - 1 - pw
    Hq, Wq = OH + 2 * qh, OW + 2 * qw
    R = NR_MAX
    K = C * KH * KW
    Fp = (F + R - 1) // R * R
    img = C * Hp * Wp * (1 if stride == 1 else 4) + R
    fwd = img + F * ((OH * Wp + R - 1) // R * R)
    dx = F * Hq * Wq + R + C * ((H * Wq + R - 1) // R * R)
    dw = img + OH * Wp * (1 + Fp) + (K + 1) * Fp
    return F * K, max(fwd, dx + dw)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _image(prepare, sf, mf, use_mask, soff, C, H, W, ph, pw, stride, wf, arow, koff, F, KH, KW,
           out, ooff, OH, OW, bias, has_bias, relu, ws, xp, ob, nr):
    """out[ooff:] (F x OH x OW) = conv(src * mask, w) + bias (ReLU) for one image, the
    prepared image at ws[xp:], the wide-grid buffer (rows narrower than nr) at ws[ob:]."""
    Hp, Wp = _planes(H, W, ph, pw, stride)
    prepare(sf, mf, use_mask, soff, C, H, W, ph, pw, KH, KW, Hp, Wp, ws, xp)
    _compute(C, Wp, wf, arow, koff, F, KH, KW, out, ooff, OH, OW, bias, has_bias, relu, ws, xp,
             ob, nr, np.intp(0), OH, np.intp(0))


@njit(cache=True, fastmath=FASTMATH)
def _compute(C, Wp, wf, arow, koff, F, KH, KW, out, ooff, OH, OW, bias, has_bias, relu, ws, xp,
             ob, nr, r0, r1, beta):
    """The micro-kernel calls of :func:`_image` for output rows r0 .. r1 of an image
    prepared at ws[xp:] with row pitch Wp (the wide grid, for rows narrower than nr, in
    ws[ob:]). ``beta`` = 1 adds to ``out`` (no bias or ReLU then).

    A constant passed straight from one kernel to another is typed as a literal, and each
    literal value compiles a specialization of its own: callers here and of the helpers
    below pass ``np.intp(0)`` / ``np.bool_(False)`` where their siblings pass variables, so
    that all share one compiled copy (digits: 38 -> 31 s of compilation in one process)."""
    K = C * KH * KW
    zero_i = np.intp(0)
    if OW >= nr:
        for oh in range(r0, r1):
            for ow0 in range(0, OW, nr):
                nc = min(nr, OW - ow0)
                for f0 in range(0, F, MR):
                    _rows(min(MR, F - f0), wf, zero_i, arow, f0, ws, xp + oh * Wp + ow0, koff,
                          K, out, ooff + (f0 * OH + oh) * OW + ow0, OH * OW, nc, beta, bias, f0,
                          has_bias, relu)
    elif r1 > r0:
        Q = (r1 - r0) * Wp
        Qp = (Q + nr - 1) // nr * nr
        for q0 in range(0, Qp, nr):
            for f0 in range(0, F, MR):
                _rows(min(MR, F - f0), wf, zero_i, arow, f0, ws, xp + r0 * Wp + q0, koff, K, ws,
                      ob + f0 * Qp + q0, Qp, nr, zero_i, bias, f0, has_bias, relu)
        for f in range(F):
            for oh in range(r0, r1):
                s = _u(ob + f * Qp + (oh - r0) * Wp)
                d = _u(ooff + (f * OH + oh) * OW)
                if beta:
                    for j in range(OW):
                        out[d + _u(j)] += ws[s + _u(j)]
                else:
                    for j in range(OW):
                        out[d + _u(j)] = ws[s + _u(j)]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _conv_batch(prepare, stride, x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """y = relu(conv(x, w) + b) at ``stride``, images prepared by ``prepare``; the body of
    :func:`direct_conv` and :func:`direct_conv_s2`."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Hp, Wp = _planes(H, W, ph, pw, stride)
    nr = mk_cols(ws)
    shared, per = sizes(N, C, H, W, F, KH, KW, ph, pw, T, stride)
    koff, arow = _tables(C, F, KH, KW, Hp, Wp, stride)
    wf = w.reshape(w.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    CHW = C * H * W
    FHW = F * OH * OW
    T = min(T, N)
    hb = 1 if has_bias else 0
    rl = 1 if relu else 0
    for t in prange(T):
        xp = shared + t * per
        ob = xp + C * Hp * Wp * (1 if stride == 1 else 4) + NR_MAX
        for n in range(t * N // T, (t + 1) * N // T):
            _image(prepare, xf, xf, np.bool_(False), n * CHW, C, H, W, ph, pw, stride, wf, arow,
                   koff, F, KH, KW, yf, n * FHW, OH, OW, b, hb, rl, ws, xp, ob, nr)


# Each kernel below exists once per stride, compiled from one body: a model whose
# convolutions all have stride 1 (the digits example, LeNet-5) never compiles the phase-plane
# code, which was a quarter of the forward kernel's compile time (5.4-5.9 -> 4.1-4.4 s).

@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_conv(x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """y = relu(conv(x, w) + b), stride 1. x: (N, C, H, W), y: (N, F, OH, OW)."""
    _conv_batch(_prepare_s1, np.intp(1), x, w, b, has_bias, relu, y, ws, ph, pw, T)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_conv_s2(x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """:func:`direct_conv` at stride 2."""
    _conv_batch(_prepare_s2, np.intp(2), x, w, b, has_bias, relu, y, ws, ph, pw, T)


@njit(cache=True)
def small_size(C, H, W, F, KH, KW, ph, pw, stride, T):
    """Workspace elements of :func:`direct_conv_rows` with T threads."""
    Hp, Wp = _planes(H, W, ph, pw, stride)
    OH = (H + 2 * ph - KH) // stride + 1
    R = NR_MAX
    rows = (OH + T - 1) // T
    return C * Hp * Wp * (1 if stride == 1 else 4) + R + T * F * ((rows * Wp + R - 1) // R + 1) * R


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _conv_rows(prepare, stride, x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """The forward pass of a batch smaller than the thread count (batch-1 latency): per
    image, one prepared image, and the threads split its output rows."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Hp, Wp = _planes(H, W, ph, pw, stride)
    nr = mk_cols(ws)
    img = C * Hp * Wp * (1 if stride == 1 else 4) + NR_MAX
    rows = (OH + T - 1) // T
    Qt = ((rows * Wp + NR_MAX - 1) // NR_MAX + 1) * NR_MAX  # a thread's wide-grid columns
    koff, arow = _tables(C, F, KH, KW, Hp, Wp, stride)
    wf = w.reshape(w.size)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    hb = 1 if has_bias else 0
    rl = 1 if relu else 0
    for n in range(N):
        prepare(xf, xf, np.bool_(False), n * C * H * W, C, H, W, ph, pw, KH, KW, Hp, Wp, ws,
                np.intp(0))
        for t in prange(T):
            _compute(C, Wp, wf, arow, koff, F, KH, KW, yf, n * F * OH * OW, OH, OW, b, hb, rl, ws,
                     np.intp(0), img + t * F * Qt, nr, t * OH // T, (t + 1) * OH // T,
                     np.intp(0))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_conv_rows(x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """:func:`direct_conv` (stride 1) for a batch smaller than the thread count: the threads
    split each image's output rows."""
    _conv_rows(_prepare_s1, np.intp(1), x, w, b, has_bias, relu, y, ws, ph, pw, T)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_conv_rows_s2(x, w, b, has_bias, relu, y, ws, ph, pw, T):
    """:func:`direct_conv_rows` at stride 2."""
    _conv_rows(_prepare_s2, np.intp(2), x, w, b, has_bias, relu, y, ws, ph, pw, T)


@njit(cache=True, fastmath=FASTMATH)
def _transpose(src, s0, pitch, fs, mask, use_mask, F, OH, OW, ws, d0, Wp, Fp):
    """dyT for the weight gradient: ws[d0 + (oh*Wp + ow)*Fp + f] = src[s0 + f*fs + oh*pitch +
    ow] (zero where ``use_mask`` and mask, laid out as src, is not > 0), in register-transposed
    blocks (:func:`tr_block`; at 16 x 32 x 32, batch 128: 0.26 ms against 0.92 ms element by
    element) and the ragged edges one element at a time. Not inlined: its two call sites
    share one compiled copy."""
    B = tr_size(ws)
    Fb = F - F % B
    Wb = OW - OW % B
    um = 1 if use_mask else 0
    zero = ws.dtype.type(0)
    for oh in range(OH):
        so = s0 + oh * pitch
        d = d0 + oh * Wp * Fp
        for f0 in range(0, Fb, B):
            for ow0 in range(0, Wb, B):
                o = so + f0 * fs + ow0
                tr_block(src, o, fs, mask, o, um, ws, d + ow0 * Fp + f0, Fp)
        for f in range(F):
            s = _u(so + f * fs)
            for ow in range(Wb if f < Fb else 0, OW):
                v = src[s + _u(ow)]
                if use_mask:
                    v = v if mask[s + _u(ow)] > zero else zero
                ws[_u(d + ow * Fp + f)] = v


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _backward_batch(prepare, stride, x, w, dy, y, relu, dwt, db, has_bias, dx, need_dx, ws, ph,
                    pw, T, add_dx):
    """The body of :func:`direct_backward` and :func:`direct_backward_s2`."""
    N, C, H, W = x.shape
    F, _, KH, KW = dwt.shape
    OH, OW = dy.shape[2], dy.shape[3]
    Hp, Wp = _planes(H, W, ph, pw, stride)
    img = C * Hp * Wp * (1 if stride == 1 else 4)
    K = C * KH * KW
    nr = mk_cols(ws)
    Fp = (F + nr - 1) // nr * nr
    Q = OH * Wp
    shared, per = sizes(N, C, H, W, F, KH, KW, ph, pw, T, stride)
    koff, arow = _tables(C, F, KH, KW, Hp, Wp, stride)
    qh, qw = KH - 1 - ph, KW - 1 - pw  # the data gradient's padding of dy
    Hq, Wq = OH + 2 * qh, OW + 2 * qw
    dyimg = F * Hq * Wq
    if need_dx:  # wt[c, f, kh, kw] = w[f, c, KH-1-kh, KW-1-kw]
        wt = ws[:C * F * KH * KW]
        for c in range(C):
            for f in range(F):
                for kh in range(KH):
                    for kw in range(KW):
                        wt[((c * F + f) * KH + kh) * KW + kw] = w[f, c, KH - 1 - kh, KW - 1 - kw]
        koff_t, arow_t = _tables(F, C, KH, KW, Hq, Wq, np.intp(1))
    else:
        wt = ws[:1]
        koff_t, arow_t = koff, arow
    dxf = dx.reshape(dx.size)
    rows = np.empty(K + 1, np.int64)  # A rows relative to the prepared image: taps, then ones
    for k in range(K):  # (a slice assignment would compile a shape-mismatch error path)
        rows[k] = koff[k]
    rows[K] = img + NR_MAX
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    yf = y.reshape(y.size)
    zero = ws.dtype.type(0)
    one = ws.dtype.type(1)
    CHW = C * H * W
    T = min(T, N)
    nbw = (K + MR_DW) // MR_DW  # tap blocks of the weight gradient's K + 1 rows
    for t in prange(T):
        xp = shared + t * per
        ones = xp + img + NR_MAX
        dyt = ones + Q
        part = dyt + Q * Fp
        dyp = part + (K + 1) * Fp  # padded masked dy, then dx's wide-grid buffer
        obx = dyp + dyimg + NR_MAX
        # the last wide-grid columns read up to KW - 1 elements past the prepared image:
        # zero them (they meet zeros of dyT, and NaN * 0 would not vanish); dyT's garbage
        # columns and padded filters stay zero
        for j in range(img, img + NR_MAX):
            ws[_u(xp + j)] = zero
        for j in range(Q):
            ws[_u(ones + j)] = one
        for j in range(Q * Fp + (K + 1) * Fp):
            ws[_u(dyt + j)] = zero
        for n in range(t * N // T, (t + 1) * N // T):
            prepare(xf, xf, np.bool_(False), n * CHW, C, H, W, ph, pw, KH, KW, Hp, Wp, ws, xp)
            if need_dx:
                _pad(dyf, yf, relu, n * F * OH * OW, F, OH, OW, qh, qw, Hq, Wq, ws, dyp)
                _transpose(ws, dyp + qh * Wq + qw, Wq, Hq * Wq, ws, np.bool_(False), F, OH, OW,
                           ws, dyt, Wp, Fp)
            else:
                _transpose(dyf, n * F * OH * OW, OW, OH * OW, yf, relu, F, OH, OW, ws, dyt, Wp,
                           Fp)
            for q0 in range(0, Q, _DW_COLS):  # dyT[q0:q0+_DW_COLS] stays in L1
                qn = min(_DW_COLS, Q - q0)
                for i in range(nbw):
                    k0 = i * (K + 1) // nbw
                    for f0 in range(0, F, nr):
                        rows_strided((i + 1) * (K + 1) // nbw - k0, ws, xp + q0, rows, k0, ws,
                                      dyt + q0 * Fp + f0, Fp, qn, ws, part + k0 * Fp + f0, Fp,
                                      min(nr, F - f0), 1, ws, 0)
            if need_dx:
                _compute(F, Wq, wt, arow_t, koff_t, C, KH, KW, dxf, n * CHW, H, W, ws,
                         np.intp(0), np.intp(0), ws, dyp, obx, nr, np.intp(0), H,
                         1 if add_dx else 0)
    dwf = dwt.reshape(dwt.size)
    base = img + NR_MAX + Q + Q * Fp
    for f in range(F):
        for k in range(K):
            acc = zero
            for t in range(T):
                acc += ws[shared + t * per + base + k * Fp + f]
            dwf[f * K + k] = acc
    if has_bias:
        for f in range(F):
            acc = zero
            for t in range(T):
                acc += ws[shared + t * per + base + K * Fp + f]
            db[f] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_backward(x, w, dy, y, relu, dwt, db, has_bias, dx, need_dx, ws, ph, pw, T, add_dx):
    """dW (and db) of the convolution ``y = relu(conv(x, w) + b)`` at stride 1, and with
    ``need_dx`` dx, all overwritten (dx added to with ``add_dx``). db is one more row of the
    dW GEMM (a row of ones against dyT). Per image, dy (masked) is read from memory once:
    into the zero-padded copy the data gradient convolves, and from there (L2) into dyT."""
    _backward_batch(_prepare_s1, np.intp(1), x, w, dy, y, relu, dwt, db, has_bias, dx, need_dx, ws, ph,
                    pw, T, add_dx)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def direct_backward_s2(x, w, dy, y, relu, dwt, db, has_bias, ws, ph, pw, T):
    """dW (and db) of the convolution at stride 2 (its dx is
    :func:`cnnc.kernels.conv.im2col.dx_phase`'s)."""
    _backward_batch(_prepare_s2, np.intp(2), x, w, dy, y, relu, dwt, db, has_bias, dy, np.bool_(False),
                    ws, ph, pw, T, np.bool_(False))


CONV = {1: direct_conv, 2: direct_conv_s2}  # by stride
CONV_ROWS = {1: direct_conv_rows, 2: direct_conv_rows_s2}
