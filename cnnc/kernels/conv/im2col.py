"""im2col / col2im + GEMM convolution kernels (NCHW), forward and backward: the path for
every geometry (any stride, padding, dilation and group count) and the fallback of the
others.

Strategy (docs/performance.md): ``prange`` over ``T`` chunks of images (T = Numba threads), and in
each chunk, per *block* of ``B`` images, an im2col into an L2-resident per-thread buffer
followed by single-threaded sgemm calls (one per group) in the NCHW orientation

    y[n]_g [Fg, P] = W_g [Fg, Cg*KH*KW] . cols_g [Cg*KH*KW, P]          (P = OH*OW)

Blocks of several images (``B*P`` >= a few hundred columns) keep the GEMMs efficient for
small feature maps; the block's GEMM output goes to a buffer and the epilogue (bias, ReLU)
copies it into ``y``.  Backward per block: ``dW_g += dy_g . cols_g^T`` into per-thread
partials (BLAS ``beta = 1``), ``dcols = W_g^T . dy_g`` then col2im into ``dx[n]``; partials are
summed at the end.  1x1 / stride-1 / unpadded convolutions skip im2col when ``B == 1``.

Three column layouts (:func:`_layout`): compact (``OH*OW`` columns per image, any geometry),
wide (stride 1: each column row is one contiguous slice of the zero-padded image) and phase
(stride 2: one contiguous slice of a phase plane).  Also here: the stride-2 data gradient
on the phase planes (:func:`dx_phase`, the columns computed on the direct micro-kernel) and
the gradients of strided 1x1 convolutions (:func:`pointwise_strided_backward`).

BLAS is called through :func:`cnnc.kernels.blas.gemm`, a thin intrinsic over Numba's own
``numba_xxgemm`` helper (the function behind ``np.dot`` in njit code: SciPy's OpenBLAS), which
adds what ``np.dot`` lacks: offsets, leading dimensions, transposes and ``beta``.  It needs
:func:`cnnc.kernels.threads.configure` to have run (one BLAS thread inside ``prange``).

Workspace: per thread :func:`im2col_sizes` elements (im2col block, GEMM output block, dW/db
partials); it does not grow with the batch beyond one block.  The kernels take scalar
geometry arguments; :mod:`cnnc.kernels.conv.dispatch` chooses among them and sizes the
workspace.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cnnc.kernels.blas import TRANS_N as _N
from cnnc.kernels.blas import TRANS_T as _T
from cnnc.kernels.blas import gemm
from cnnc.kernels.blas import uidx as _u
from cnnc.kernels.conv import direct
from cnnc.kernels.conv.direct import phase_image
from cnnc.kernels.conv.geometry import PATH_COMPACT, PATH_WIDE
from cnnc.kernels.conv.microkernel import mk_cols
from cnnc.kernels.conv.winograd import FASTMATH  # no "reassoc": see winograd.py

# Columns (B*P) a block of images should reach.  Measured (2-core AVX-512 Xeon): GEMMs were
# as fast or faster per image than per block of images (B*P >= 512) for LeNet and VGG
# layers, so both default to B = 1; the block machinery stays for other shapes/machines.
FWD_TARGET_COLS = 1
BWD_TARGET_COLS = 1
_MAX_BLOCK_ELEMS = 1 << 19  # cap on the im2col block (elements): 2 MiB in float32

# ---------------------------------------------------------------------------------------
# im2col / col2im on flat arrays
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _ow_range(kw, dw, pw, sw, W, OW):
    """Output columns ``ow`` whose input column ``ow*sw - pw + kw*dw`` is inside [0, W)."""
    off = kw * dw - pw
    lo = 0
    if off < 0:
        lo = (-off + sw - 1) // sw
    top = W - 1 - off
    if top < 0:
        hi = 0
    else:
        hi = top // sw + 1
    if hi > OW:
        hi = OW
    if lo > OW:
        lo = OW
    if hi < lo:
        hi = lo
    return off, lo, hi


@njit(cache=True, fastmath=FASTMATH)
def _im2col(xf, xoff, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, cols, coff, ldc):
    """cols[coff + ((c*KH+kh)*KW+kw)*ldc + oh*OW + ow] = x[c, oh*sh-ph+kh*dh, ow*sw-pw+kw*dw].

    Inner loops index with unsigned integers: Numba then emits no negative-index wraparound
    and LLVM vectorizes the copies (4x faster than signed indexing).
    """
    zero = cols.dtype.type(0)
    usw = _u(sw)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                base = coff + ((c * KH + kh) * KW + kw) * ldc
                off, lo, hi = _ow_range(kw, dw, pw, sw, W, OW)
                for oh in range(OH):
                    ih = oh * sh - ph + kh * dh
                    d = _u(base + oh * OW)
                    if ih < 0 or ih >= H:
                        for ow in range(OW):
                            cols[d + _u(ow)] = zero
                    else:
                        for ow in range(lo):
                            cols[d + _u(ow)] = zero
                        # s + ow*sw >= 0 for ow >= lo
                        s = _u(xoff + (c * H + ih) * W + off + lo * sw)
                        dl = d + _u(lo)
                        if sw == 1:
                            for j in range(hi - lo):
                                cols[dl + _u(j)] = xf[s + _u(j)]
                        else:
                            for j in range(hi - lo):
                                cols[dl + _u(j)] = xf[s + _u(j) * usw]
                        for ow in range(hi, OW):
                            cols[d + _u(ow)] = zero


@njit(cache=True, fastmath=FASTMATH)
def _col2im(cols, coff, ldc, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, dxf, xoff):
    """dx[c, ih, iw] += cols[...]  (adjoint of :func:`_im2col`); dx must be zeroed first."""
    usw = _u(sw)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                base = coff + ((c * KH + kh) * KW + kw) * ldc
                off, lo, hi = _ow_range(kw, dw, pw, sw, W, OW)
                for oh in range(OH):
                    ih = oh * sh - ph + kh * dh
                    if ih < 0 or ih >= H:
                        continue
                    d = _u(base + oh * OW + lo)
                    s = _u(xoff + (c * H + ih) * W + off + lo * sw)
                    if sw == 1:
                        for j in range(hi - lo):
                            dxf[s + _u(j)] += cols[d + _u(j)]
                    else:
                        for j in range(hi - lo):
                            dxf[s + _u(j) * usw] += cols[d + _u(j)]


@njit(cache=True)
def _block(N, C, KK, P, target):
    """Images per block: enough columns for an efficient GEMM, bounded buffer."""
    b = (target + P - 1) // P
    cap = _MAX_BLOCK_ELEMS // max(1, C * KK * P)
    if b > cap:
        b = cap
    if b > N:
        b = N
    if b < 1:
        b = 1
    return b


@njit(cache=True)
def im2col_sizes(N, C, F, KH, KW, CgKK, OH, OW, fwd_cols, bwd_cols):
    """(per-thread workspace elements, forward block, backward block, wide columns/image).

    Sized for the largest of the im2col layouts: compact (P = OH*OW columns per image),
    wide (OH*(OW+KW-1) columns, plus a zero-padded input copy of C*(OH+KH-1)*(OW+KW-1)) and
    phase (stride 2: at most as many columns as wide, plus four phase planes of at most
    C*(OH+(KH+1)//2)*(OW+(KW+1)//2) each).
    """
    KK = KH * KW
    Pw = OH * (OW + KW - 1)
    XP = max(C * (OH + KH - 1) * (OW + KW - 1), 4 * C * (OH + (KH + 1) // 2) * (OW + (KW + 1) // 2))
    Bf = _block(N, C, KK, Pw, fwd_cols)
    Bb = _block(N, C, KK, Pw, bwd_cols)
    fwd = C * KK * Bf * Pw + F * Bf * Pw + XP
    bwd = F * CgKK + F + C * KK * Bb * Pw + F * Bb * Pw + XP
    return max(fwd, bwd), Bf, Bb, Pw


LAYOUT_COMPACT, LAYOUT_WIDE, LAYOUT_PHASE = 0, 1, 2


@njit(cache=True)
def _layout(path, sh, sw, dh, dw, ph, pw, KH, KW, OW):
    """The column layout: compact (any geometry), wide (stride 1, dilation 1, not 1x1
    unpadded) or phase (stride 2, dilation 1, not 1x1: there the compact im2col is a plain
    strided gather and the GEMM writes the output directly). ``PATH_WIDE`` forces the contiguous layout
    that applies (wide or phase), ``PATH_COMPACT`` the compact one."""
    if path == PATH_COMPACT or dh != 1 or dw != 1:
        return LAYOUT_COMPACT
    if sh == 2 and sw == 2 and not (KH == 1 and KW == 1):
        # each (c, kh, kw) row of the columns is one contiguous slice of a phase plane: 2.5x
        # faster im2col than the compact one's strided 16-element rows (ResNet-8's stride-2
        # layers), for (KW-1)//2 extra GEMM columns per output row
        return LAYOUT_PHASE
    if sh != 1 or sw != 1 or (KH == 1 and KW == 1 and ph == 0 and pw == 0):
        return LAYOUT_COMPACT
    if path == PATH_WIDE:
        return LAYOUT_WIDE
    # automatic: the wide layout wastes (KW-1)/OW of the GEMM but makes im2col / col2im
    # plain contiguous copies; short output rows make the compact im2col slow
    if OW <= 16 or (KW - 1) * 8 <= OW:
        return LAYOUT_WIDE
    return LAYOUT_COMPACT


@njit(cache=True)
def _row_pitch(lay, W, pw, OW):
    """Columns per output row in the GEMM: the wide layout's padded width, the phase
    layout's phase-plane width, the output width for compact."""
    if lay == LAYOUT_WIDE:
        return W + 2 * pw
    if lay == LAYOUT_PHASE:
        return (W + 2 * pw + 1) // 2
    return OW


# ---------------------------------------------------------------------------------------
# wide im2col / col2im (stride 1, dilation 1)
# ---------------------------------------------------------------------------------------
# With the output computed on a grid of OH x Wp (Wp = W + 2*pw, the last KW-1 columns of
# each row are garbage), row (c, kh, kw) of the column matrix is ONE contiguous slice of the
# zero-padded image: xp[c, kh:, kw:] flattened.  im2col / col2im become long contiguous
# copies; the epilogue drops the garbage columns; backward packs dy with zeros there.


@njit(cache=True, fastmath=FASTMATH)
def _pad_image(xf, xoff, C, H, W, ph, pw, buf, boff):
    """buf[boff:] = x[c] zero-padded to (H+2ph, W+2pw)."""
    zero = buf.dtype.type(0)
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    for c in range(C):
        cb = boff + c * Hp * Wp
        for j in range(ph * Wp):
            buf[_u(cb + j)] = zero
            buf[_u(cb + (Hp - ph) * Wp + j)] = zero
        for ih in range(H):
            d = _u(cb + (ih + ph) * Wp)
            s = _u(xoff + (c * H + ih) * W)
            for j in range(pw):
                buf[d + _u(j)] = zero
                buf[d + _u(pw + W + j)] = zero
            dp = d + _u(pw)
            for j in range(W):
                buf[dp + _u(j)] = xf[s + _u(j)]


@njit(cache=True, fastmath=FASTMATH)
def _im2col_wide(xf, xoff, C, H, W, KH, KW, ph, pw, OH, OW, cols, coff, ldc, ws, xpoff):
    zero = cols.dtype.type(0)
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    if ph > 0 or pw > 0:
        _pad_image(xf, xoff, C, H, W, ph, pw, ws, xpoff)
        src = ws
        soff = xpoff
    else:
        src = xf
        soff = xoff
    Pc = OH * Wp
    ncopy = (OH - 1) * Wp + OW  # stays inside the padded image
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                d = _u(coff + ((c * KH + kh) * KW + kw) * ldc)
                s = _u(soff + (c * Hp + kh) * Wp + kw)
                for j in range(ncopy):
                    cols[d + _u(j)] = src[s + _u(j)]
                for j in range(ncopy, Pc):
                    cols[d + _u(j)] = zero


@njit(cache=True, fastmath=FASTMATH)
def _col2im_wide(cols, coff, ldc, C, H, W, KH, KW, ph, pw, OH, OW, dxf, dxoff, ws, xpoff):
    """dx[n] = col2im(cols) (overwrites).  Garbage columns of ``cols`` must be zero."""
    zero = cols.dtype.type(0)
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    padded = ph > 0 or pw > 0
    if padded:
        acc = ws
        aoff = xpoff
    else:
        acc = dxf
        aoff = dxoff
    for j in range(C * Hp * Wp):
        acc[_u(aoff + j)] = zero
    ncopy = (OH - 1) * Wp + OW
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                d = _u(coff + ((c * KH + kh) * KW + kw) * ldc)
                s = _u(aoff + (c * Hp + kh) * Wp + kw)
                for j in range(ncopy):
                    acc[s + _u(j)] += cols[d + _u(j)]
    if padded:
        for c in range(C):
            for ih in range(H):
                s = _u(xpoff + (c * Hp + ih + ph) * Wp + pw)
                d = _u(dxoff + (c * H + ih) * W)
                for j in range(W):
                    dxf[d + _u(j)] = ws[s + _u(j)]


# ---------------------------------------------------------------------------------------
# phase im2col / col2im (stride 2, dilation 1)
# ---------------------------------------------------------------------------------------
# The zero-padded image splits into four phase planes q[a][b][c, i, j] = xpad[c, 2i+a, 2j+b]
# of Hq x Wq (Hq = ceil((H+2ph)/2)). Output (oh, ow) of tap (kh, kw) reads
# q[kh%2][kw%2][c, oh + kh//2, ow + kw//2], so with the output computed on a grid of
# OH x Wq, row (c, kh, kw) of the column matrix is ONE contiguous slice of a phase plane,
# as in the wide layout (its last Wq - OW columns per row are garbage).


@njit(cache=True, fastmath=FASTMATH)
def _im2col_phase(xf, xoff, C, H, W, KH, KW, ph, pw, OH, OW, cols, coff, ldc, ws, qoff):
    zero = cols.dtype.type(0)
    Hq = (H + 2 * ph + 1) // 2
    Wq = (W + 2 * pw + 1) // 2
    phase_image(xf, xoff, C, H, W, ph, pw, KH, KW, Hq, Wq, ws, qoff)
    Pc = OH * Wq
    ncopy = (OH - 1) * Wq + OW  # stays inside the phase plane
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                d = _u(coff + ((c * KH + kh) * KW + kw) * ldc)
                s = _u(qoff + (((kh % 2) * 2 + kw % 2) * C + c) * Hq * Wq + (kh // 2) * Wq + kw // 2)
                for j in range(ncopy):
                    cols[d + _u(j)] = ws[s + _u(j)]
                for j in range(ncopy, Pc):
                    cols[d + _u(j)] = zero


@njit(cache=True, fastmath=FASTMATH)
def _col2im_phase(cols, coff, ldc, C, H, W, KH, KW, ph, pw, OH, OW, dxf, dxoff, ws, qoff,
                  rowp, acc):
    """dx[n] = col2im(cols) (overwrites; adds to dx with ``acc``). Output row oh of column
    row k starts at ``cols[coff + k*ldc + oh*rowp]``: ``rowp`` = -1 is the phase grid's
    pitch Wq (garbage columns, which must be zero, included), ``OW`` the compact layout."""
    zero = cols.dtype.type(0)
    Hq = (H + 2 * ph + 1) // 2
    Wq = (W + 2 * pw + 1) // 2
    for j in range(4 * C * Hq * Wq):
        ws[_u(qoff + j)] = zero
    ncopy = (OH - 1) * Wq + OW
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                d = _u(coff + ((c * KH + kh) * KW + kw) * ldc)
                s = _u(qoff + (((kh % 2) * 2 + kw % 2) * C + c) * Hq * Wq + (kh // 2) * Wq + kw // 2)
                if rowp < 0:
                    for j in range(ncopy):
                        ws[s + _u(j)] += cols[d + _u(j)]
                else:
                    for oh in range(OH):
                        so = s + _u(oh * Wq)
                        do = d + _u(oh * rowp)
                        for j in range(OW):
                            ws[so + _u(j)] += cols[do + _u(j)]
    # every input element is one phase element, dx[c, ih, iw] = q[(ih+ph)%2][(iw+pw)%2][...]:
    # an input row at a time, its even and odd elements from the two planes in one loop
    e = pw % 2
    h = pw // 2
    half = W // 2
    plane = Hq * Wq
    for c in range(C):
        for ih in range(H):
            a = (ih + ph) % 2
            i = (ih + ph) // 2
            row = _u(dxoff + (c * H + ih) * W)
            se = _u(qoff + ((a * 2 + e) * C + c) * plane + i * Wq + h)
            so = _u(qoff + ((a * 2 + 1 - e) * C + c) * plane + i * Wq + h + e)
            if acc:
                for k in range(half):
                    dxf[row + _u(2) * _u(k)] += ws[se + _u(k)]
                    dxf[row + _u(2) * _u(k) + _u(1)] += ws[so + _u(k)]
                if W % 2:
                    dxf[row + _u(W - 1)] += ws[se + _u(half)]
            else:
                for k in range(half):
                    dxf[row + _u(2) * _u(k)] = ws[se + _u(k)]
                    dxf[row + _u(2) * _u(k) + _u(1)] = ws[so + _u(k)]
                if W % 2:
                    dxf[row + _u(W - 1)] = ws[se + _u(half)]


# ---------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def im2col_conv(x, w, b, y, ws, sh, sw, ph, pw, dh, dw, G, has_bias, relu, nthreads, fcols,
              bcols, path):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    OH = y.shape[2]
    OW = y.shape[3]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    yf = y.reshape(y.size)
    Fg = F // G
    KK = KH * KW
    CgKK = Cg * KK
    P = OH * OW
    CHW = C * H * W
    per, B, _, Pw = im2col_sizes(N, C, F, KH, KW, CgKK, OH, OW, fcols, bcols)
    T = min(nthreads, N, ws.size // per)
    if T < 1:
        raise ValueError("conv2d_forward: workspace too small")
    lay = _layout(path, sh, sw, dh, dw, ph, pw, KH, KW, OW)
    wide = lay != LAYOUT_COMPACT  # a row pitch other than OW: the epilogue drops the garbage
    pointwise = KH == 1 and KW == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    Wrow = _row_pitch(lay, W, pw, OW)  # row pitch of the GEMM output
    Pc = OH * Wrow  # GEMM columns per image
    zero = y.dtype.type(0)
    for t in prange(T):
        n0 = t * N // T
        n1 = (t + 1) * N // T
        cbuf = t * per
        obuf = cbuf + C * KK * B * Pw
        xpbuf = obuf + F * B * Pw
        for nb in range(n0, n1, B):
            nB = min(B, n1 - nb)
            L = nB * Pc
            if nB == 1 and not wide:
                # GEMM straight into y[n]
                if pointwise:
                    src = xf
                    soff = nb * CHW
                else:
                    _im2col(xf, nb * CHW, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW,
                            ws, cbuf, P)
                    src = ws
                    soff = cbuf
                for g in range(G):
                    gemm(_N, _N, Fg, P, CgKK, 1.0, wf, g * Fg * CgKK, CgKK,
                         src, soff + g * CgKK * P, P, 0.0, yf, nb * F * P + g * Fg * P, P)
                if has_bias or relu:
                    for f in range(F):
                        d = _u((nb * F + f) * P)
                        bf = b[f] if has_bias else zero
                        if relu:
                            for p in range(P):
                                yf[d + _u(p)] = max(yf[d + _u(p)] + bf, zero)
                        else:
                            for p in range(P):
                                yf[d + _u(p)] = yf[d + _u(p)] + bf
            else:
                for i in range(nB):
                    if lay == LAYOUT_WIDE:
                        _im2col_wide(xf, (nb + i) * CHW, C, H, W, KH, KW, ph, pw, OH, OW,
                                     ws, cbuf + i * Pc, L, ws, xpbuf)
                    elif lay == LAYOUT_PHASE:
                        _im2col_phase(xf, (nb + i) * CHW, C, H, W, KH, KW, ph, pw, OH, OW,
                                      ws, cbuf + i * Pc, L, ws, xpbuf)
                    else:
                        _im2col(xf, (nb + i) * CHW, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                                OH, OW, ws, cbuf + i * Pc, L)
                for g in range(G):
                    gemm(_N, _N, Fg, L, CgKK, 1.0, wf, g * Fg * CgKK, CgKK,
                         ws, cbuf + g * CgKK * L, L, 0.0, ws, obuf + g * Fg * L, L)
                nrow = OH if wide else 1
                rlen = OW if wide else P
                for i in range(nB):
                    for f in range(F):
                        bf = b[f] if has_bias else zero
                        for r in range(nrow):
                            s = _u(obuf + f * L + i * Pc + r * Wrow)
                            d = _u(((nb + i) * F + f) * P + r * rlen)
                            if relu:
                                for p in range(rlen):
                                    yf[d + _u(p)] = max(ws[s + _u(p)] + bf, zero)
                            else:
                                for p in range(rlen):
                                    yf[d + _u(p)] = ws[s + _u(p)] + bf


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def im2col_conv_split(x, w, b, y, ws, sh, sw, ph, pw, dh, dw, has_bias, relu, T):
    """The forward pass of a batch smaller than the thread count (batch-1 latency), where
    one image per thread would leave threads idle: per image, the im2col is split over
    channel ranges and the GEMM (and its epilogue) over column ranges. Groups == 1."""
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH = y.shape[2]
    OW = y.shape[3]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    yf = y.reshape(y.size)
    KK = KH * KW
    CKK = C * KK
    P = OH * OW
    CHW = C * H * W
    pointwise = KH == 1 and KW == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    zero = y.dtype.type(0)
    for n in range(N):
        if pointwise:
            src = xf
            soff = n * CHW
        else:
            for t in prange(T):
                c0 = t * C // T
                c1 = (t + 1) * C // T
                if c1 > c0:
                    _im2col(xf, n * CHW + c0 * H * W, c1 - c0, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                            OH, OW, ws, c0 * KK * P, P)
            src = ws
            soff = 0
        for t in prange(T):
            p0 = t * P // T
            p1 = (t + 1) * P // T
            if p1 > p0:
                gemm(_N, _N, F, p1 - p0, CKK, 1.0, wf, 0, CKK, src, soff + p0, P, 0.0, yf,
                     n * F * P + p0, P)
                if has_bias or relu:
                    for f in range(F):
                        d = _u((n * F + f) * P + p0)
                        bf = b[f] if has_bias else zero
                        if relu:
                            for p in range(p1 - p0):
                                yf[d + _u(p)] = max(yf[d + _u(p)] + bf, zero)
                        else:
                            for p in range(p1 - p0):
                                yf[d + _u(p)] = yf[d + _u(p)] + bf


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def im2col_backward(x, w, y, dy, dx, dwt, db, ws, sh, sw, ph, pw, dh, dw, G, has_bias, relu,
              need_dx, need_dw, nthreads, fcols, bcols, path):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    OH = dy.shape[2]
    OW = dy.shape[3]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    yf = y.reshape(y.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    Fg = F // G
    KK = KH * KW
    CgKK = Cg * KK
    P = OH * OW
    CHW = C * H * W
    FCgKK = F * CgKK
    per, _, B, Pw = im2col_sizes(N, C, F, KH, KW, CgKK, OH, OW, fcols, bcols)
    T = min(nthreads, N, ws.size // per)
    if T < 1:
        raise ValueError("conv2d_backward: workspace too small")
    lay = _layout(path, sh, sw, dh, dw, ph, pw, KH, KW, OW)
    wide = lay != LAYOUT_COMPACT
    pointwise = KH == 1 and KW == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    Wrow = _row_pitch(lay, W, pw, OW)
    Pc = OH * Wrow
    nrow = OH if wide else 1
    rlen = OW if wide else P
    zero = dy.dtype.type(0)
    # dW GEMM orientation: cols . dy^T was faster except for very few filters (LeNet conv1)
    dwT = Fg >= 12
    for t in prange(T):
        n0 = t * N // T
        n1 = (t + 1) * N // T
        dwp = t * per
        dbp = dwp + FCgKK
        cbuf = dbp + F
        dyb = cbuf + C * KK * B * Pw
        xpbuf = dyb + F * B * Pw
        for j in range(FCgKK + F):
            ws[_u(dwp + j)] = zero
        for nb in range(n0, n1, B):
            nB = min(B, n1 - nb)
            L = nB * Pc
            # pack (and ReLU-mask) dy of the block into dyb [F, L]; db partials
            for i in range(nB):
                for f in range(F):
                    acc = zero
                    for r in range(nrow):
                        s = _u(((nb + i) * F + f) * P + r * rlen)
                        d = _u(dyb + f * L + i * Pc + r * Wrow)
                        if relu:
                            for p in range(rlen):
                                v = dyf[s + _u(p)]  # both loads unconditional: a select, no branch
                                v = v if yf[s + _u(p)] > zero else zero
                                ws[d + _u(p)] = v
                                acc += v
                        else:
                            for p in range(rlen):
                                v = dyf[s + _u(p)]
                                ws[d + _u(p)] = v
                                acc += v
                        for p in range(rlen, Wrow):
                            ws[d + _u(p)] = zero
                    ws[dbp + f] += acc
            # columns of x for the block (for dW only)
            if (nB == 1 and pointwise) or not need_dw:
                src = xf
                soff = nb * CHW
            else:
                for i in range(nB):
                    if lay == LAYOUT_WIDE:
                        _im2col_wide(xf, (nb + i) * CHW, C, H, W, KH, KW, ph, pw, OH, OW,
                                     ws, cbuf + i * Pc, L, ws, xpbuf)
                    elif lay == LAYOUT_PHASE:
                        _im2col_phase(xf, (nb + i) * CHW, C, H, W, KH, KW, ph, pw, OH, OW,
                                      ws, cbuf + i * Pc, L, ws, xpbuf)
                    else:
                        _im2col(xf, (nb + i) * CHW, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw,
                                OH, OW, ws, cbuf + i * Pc, L)
                src = ws
                soff = cbuf
            for g in range(G if need_dw else 0):
                if dwT:  # dW_g^T [CgKK, Fg] += cols_g [CgKK, L] . dy_g^T [L, Fg]
                    gemm(_N, _T, CgKK, Fg, L, 1.0, src, soff + g * CgKK * L, L,
                         ws, dyb + g * Fg * L, L, 1.0, ws, dwp + g * Fg * CgKK, Fg)
                else:  # dW_g [Fg, CgKK] += dy_g [Fg, L] . cols_g^T [L, CgKK]
                    gemm(_N, _T, Fg, CgKK, L, 1.0, ws, dyb + g * Fg * L, L,
                         src, soff + g * CgKK * L, L, 1.0, ws, dwp + g * Fg * CgKK, CgKK)
            if need_dx:
                for i in range(nB):
                    n = nb + i
                    if pointwise:
                        for g in range(G):
                            gemm(_T, _N, Cg, P, Fg, 1.0, wf, g * Fg * CgKK, CgKK,
                                 ws, dyb + g * Fg * L + i * P, L, 0.0,
                                 dxf, n * CHW + g * Cg * P, P)
                    else:
                        for g in range(G):
                            gemm(_T, _N, CgKK, Pc, Fg, 1.0, wf, g * Fg * CgKK, CgKK,
                                 ws, dyb + g * Fg * L + i * Pc, L, 0.0,
                                 ws, cbuf + g * CgKK * Pc, Pc)
                        if lay == LAYOUT_WIDE:
                            _col2im_wide(ws, cbuf, Pc, C, H, W, KH, KW, ph, pw, OH, OW,
                                         dxf, n * CHW, ws, xpbuf)
                        elif lay == LAYOUT_PHASE:
                            _col2im_phase(ws, cbuf, Pc, C, H, W, KH, KW, ph, pw, OH, OW,
                                          dxf, n * CHW, ws, xpbuf, -1, False)
                        else:
                            dx0 = _u(n * CHW)
                            for j in range(CHW):
                                dxf[dx0 + _u(j)] = zero
                            _col2im(ws, cbuf, P, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, OH,
                                    OW, dxf, n * CHW)
    # reduce the per-thread partials
    dwf = dwt.reshape(dwt.size)
    for j in range(FCgKK if need_dw else 0):
        if dwT:  # partial holds, per group, [CgKK, Fg]
            g = j // (Fg * CgKK)
            r = j - g * Fg * CgKK
            f = r // CgKK
            k = r - f * CgKK
            jj = g * Fg * CgKK + k * Fg + f
        else:
            jj = j
        acc = zero
        for t in range(T):
            acc += ws[t * per + jj]
        dwf[j] = acc
    if has_bias and need_dw:
        for f in range(F):
            acc = zero
            for t in range(T):
                acc += ws[t * per + FCgKK + f]
            db[f] = acc


@njit(cache=True)
def dx_phase_sizes(C, F, KH, KW, H, W, OH, OW, ph, pw):
    """(shared, per-thread) workspace elements of :func:`dx_phase`: the transposed
    filters; per thread the columns (C*KH*KW x OH*OW), the four phase planes, and a
    zero-padded copy of dy's last column block."""
    CKK = C * KH * KW
    Hq = (H + 2 * ph + 1) // 2
    Wq = (W + 2 * pw + 1) // 2
    return CKK * F, CKK * OH * OW + 4 * C * Hq * Wq + F * direct.NR_MAX


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dx_phase(w, dy, dx, ws, ph, pw, T, acc):
    """The data gradient of a stride-2, undilated, one-group convolution without a fused
    ReLU: per image the columns ``cols = W^T . dy``, reading dy where it lies (the compact
    layout: no packed copy, no garbage columns), on the micro-kernel (up to 6 rows of W^T
    per call, as the weight gradient's), then the phase-plane col2im. ``acc`` adds to dx
    instead of overwriting it. A block of W^T rows runs against all of dy's columns (row
    blocks outermost: with column blocks outermost the scattered rows of ``cols`` made it 1.5x
    slower). Against OpenBLAS for the same GEMMs (K = the filter count), alternating in one
    process: 16 -> 32 filters at 32x32 the same (3.44 vs 3.41 ms at batch 128), 32 -> 64 at
    16x16 1.15x faster (2.63 vs 3.02 ms)."""
    N, C, H, W = dx.shape
    F, _, KH, KW = w.shape
    OH = dy.shape[2]
    OW = dy.shape[3]
    P = OH * OW
    CKK = C * KH * KW
    CHW = C * H * W
    Hq = (H + 2 * ph + 1) // 2
    Wq = (W + 2 * pw + 1) // 2
    shared, per = dx_phase_sizes(C, F, KH, KW, H, W, OH, OW, ph, pw)
    T = min(T, N, (ws.size - shared) // per)
    if T < 1:
        raise ValueError("conv2d_backward: workspace too small")
    nr = mk_cols(ws)
    zero = ws.dtype.type(0)
    wf = w.reshape(w.size)
    for r in range(CKK):  # W^T at ws[0:], row r = (c, kh, kw) at r * F
        for f in range(F):
            ws[_u(r * F + f)] = wf[_u(f * CKK + r)]
    arow = np.empty(CKK, np.int64)
    for r in range(CKK):
        arow[r] = r * F
    nbr = (CKK + direct.MR_DW - 1) // direct.MR_DW  # row blocks as even as they come
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    for t in prange(T):
        cb = shared + t * per
        tail = cb + CKK * P + 4 * C * Hq * Wq
        for n in range(t * N // T, (t + 1) * N // T):
            full = P // nr * nr
            if full < P:  # the micro-kernel reads nr columns: past dy's end in the last block
                for f in range(F):
                    for j in range(nr):
                        q = full + j
                        ws[_u(tail + f * nr + j)] = dyf[_u(n * F * P + f * P + q)] if q < P else zero
            for i in range(nbr):  # a block of W^T rows against all of dy (in L1 / L2)
                r0 = i * CKK // nbr
                mr = (i + 1) * CKK // nbr - r0
                for q0 in range(0, full, nr):
                    direct.rows_strided(mr, ws, np.intp(0), arow, r0, dyf, n * F * P + q0, P, F,
                                          ws, cb + r0 * P + q0, P, nr, np.intp(0), ws, np.intp(0))
                if full < P:
                    direct.rows_strided(mr, ws, np.intp(0), arow, r0, ws, tail, nr, F, ws,
                                          cb + r0 * P + full, P, P - full, np.intp(0), ws,
                                          np.intp(0))
            _col2im_phase(ws, cb, P, C, H, W, KH, KW, ph, pw, OH, OW, dxf, n * CHW, ws,
                          cb + CKK * P, OW, acc)


@njit(cache=True)
def pointwise_strided_sizes(C, F, OH, OW):
    """(per-thread workspace elements of :func:`pointwise_strided_backward`, offsets of its
    gathered input, columns and masked-dy buffers)."""
    P = OH * OW
    part = F * C + F
    return part + (2 * C + F) * P, part, part + C * P, part + 2 * C * P


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_strided_backward(x, w, y, dy, dx, dwt, db, ws, st, has_bias, relu, need_dx, T,
                                add_dx):
    """Gradients of an unpadded 1x1 convolution at stride ``st`` > 1 (ResNet's projection
    shortcuts), one group. Per image: the input gathered at the strided positions (C x P),
    dW += dy . xs^T and db in per-thread partials, and with ``need_dx`` one GEMM
    ``W^T . dy`` whose rows land on dx's strided positions in the same pass that writes
    the zeros between them (or, with ``add_dx``, added there alone: the other positions
    keep what dx holds). dy is ReLU-masked into a copy with ``relu``."""
    N, C, H, W = x.shape
    F = w.shape[0]
    OH = dy.shape[2]
    OW = dy.shape[3]
    P = OH * OW
    CHW = C * H * W
    FP = F * P
    per, xs0, cols0, dym0 = pointwise_strided_sizes(C, F, OH, OW)
    T = min(T, N, ws.size // per)
    if T < 1:
        raise ValueError("conv2d_backward: workspace too small")
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    yf = y.reshape(y.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    zero = dy.dtype.type(0)
    for t in prange(T):
        base = t * per
        for j in range(F * C + F):
            ws[_u(base + j)] = zero
        xs = base + xs0
        cols = base + cols0
        for n in range(t * N // T, (t + 1) * N // T):
            if relu:
                src = ws
                soff = base + dym0
                for j in range(FP):
                    v = dyf[_u(n * FP + j)]  # loaded either way: a select, no branch
                    ws[_u(soff + j)] = v if yf[_u(n * FP + j)] > zero else zero
            else:
                src = dyf
                soff = n * FP
            for f in range(F):
                acc = zero
                for j in range(P):
                    acc += src[_u(soff + f * P + j)]
                ws[_u(base + F * C + f)] += acc
            for c in range(C):
                for oh in range(OH):
                    r = _u(n * CHW + (c * H + st * oh) * W)
                    d = _u(xs + (c * OH + oh) * OW)
                    for ow in range(OW):
                        ws[d + _u(ow)] = xf[r + _u(st * ow)]
            # dW [F, C] += dy [F, P] . xs^T [P, C]
            gemm(_N, _T, F, C, P, 1.0, src, soff, P, ws, xs, P, 1.0, ws, base, C)
            if need_dx:
                gemm(_T, _N, C, P, F, 1.0, wf, 0, C, src, soff, P, 0.0, ws, cols, P)
                for c in range(C):
                    for ih in range(H):
                        row = _u(n * CHW + (c * H + ih) * W)
                        oh = ih // st
                        hit = ih % st == 0 and oh < OH
                        if add_dx:
                            if hit:
                                s = _u(cols + (c * OH + oh) * OW)
                                for ow in range(OW):
                                    dxf[row + _u(st * ow)] += ws[s + _u(ow)]
                        elif hit:
                            s = _u(cols + (c * OH + oh) * OW)
                            for iw in range(W):
                                dxf[row + _u(iw)] = zero
                            for ow in range(OW):
                                dxf[row + _u(st * ow)] = ws[s + _u(ow)]
                        else:
                            for iw in range(W):
                                dxf[row + _u(iw)] = zero
    dwf = dwt.reshape(dwt.size)
    for j in range(F * C):
        acc = zero
        for t in range(T):
            acc += ws[t * per + j]
        dwf[j] = acc
    if has_bias:
        for f in range(F):
            acc = zero
            for t in range(T):
                acc += ws[t * per + F * C + f]
            db[f] = acc


