"""Convolution path selection and the Python-level entry points (NCHW, forward and backward).

Entry points (geometry: a :class:`~cnnc.kernels.conv.geometry.ConvGeometry`, built once per
layer)::

    conv2d_workspace_size(x_shape, w_shape, y_shape, geom) -> int
    conv2d_forward(x, w, b, y, ws, geom, has_bias, relu)
    conv2d_backward(x, w, y, dy, dx, dwt, db, ws, geom, has_bias, relu, need_dx, add_dx=False)
    conv2d_backward_adds(x_shape, w_shape, y_shape, geom, ws_size, relu) -> bool

Three families of kernels (docs/kernels.md), chosen per call from the layer's shapes, the
thread count and the workspace size (the chosen path, hence the result, is the same at
every call of a layer):

* direct convolution on the register-blocked micro-kernel (:mod:`cnnc.kernels.conv.direct`):
  stride 1 or 2 on both axes, dilation 1, one group, a window larger than 1x1 -- forward,
  weight gradient and (stride 1) data gradient;
* Winograd F(4x4,3x3) (:mod:`cnnc.kernels.conv.winograd`): 3x3, stride 1, dilation 1, one
  group, padding <= 2, with enough channels and work per image; it takes precedence over the
  direct kernels from :data:`DIRECT_WINO_CH` channels (forward: in and out; backward: on one
  side);
* im2col / col2im + GEMM (:mod:`cnnc.kernels.conv.im2col`): everything else, the data
  gradient of stride-2 layers (on the phase planes), strided 1x1 gradients.

Batches smaller than the thread count split each image's work instead of the batch (direct:
output rows; Winograd: tile rows; im2col: channels and GEMM columns).  The workspace is sized
for every path a layer's shapes allow.

Tunables are module constants (measurements in the comments beside them).  One environment
variable is read, at import:

==================  ========  ===========================================================
variable            default   meaning
==================  ========  ===========================================================
``CNNC_CONV_PATH``  ``auto``  force one path (:data:`FORCE_PATH`) for tests and benchmarks:
                              ``auto`` (0), ``compact`` (1: compact im2col), ``wide`` (2:
                              the contiguous im2col layouts), ``wino`` (3: Winograd where it
                              applies), ``direct`` (4: the micro-kernel where it applies);
                              a name or its number.  Tests set :data:`FORCE_PATH` itself.
==================  ========  ===========================================================
"""

from __future__ import annotations

import os

import numpy as np

from cnnc.kernels.conv import direct, im2col, winograd
from cnnc.kernels.conv.im2col import (BWD_TARGET_COLS, FWD_TARGET_COLS, dx_phase,
                                      im2col_backward, im2col_conv, im2col_conv_split,
                                      pointwise_strided_backward, pointwise_strided_sizes)
from cnnc.kernels.conv.geometry import (PATH_AUTO, PATH_COMPACT, PATH_DIRECT, PATH_NAMES,
                                        PATH_WIDE, PATH_WINO, ConvGeometry)
from cnnc.kernels.host import host
from cnnc.kernels.threads import work_chunks

__all__ = ["ConvGeometry", "conv2d_workspace_size", "conv2d_forward", "conv2d_forward_call",
           "conv2d_backward",
           "conv2d_backward_adds", "dummy", "FORCE_PATH", "PATH_AUTO", "PATH_COMPACT",
           "PATH_WIDE", "PATH_WINO", "PATH_DIRECT"]


def parse_path(text: str) -> int:
    """``CNNC_CONV_PATH``: a path name or number."""
    text = text.strip().lower()
    if text in PATH_NAMES:
        return PATH_NAMES.index(text)
    if text.isdigit() and int(text) < len(PATH_NAMES):
        return int(text)
    raise ValueError(f"CNNC_CONV_PATH={text!r}: expected one of {', '.join(PATH_NAMES)} "
                     f"or 0-{len(PATH_NAMES) - 1}")


FORCE_PATH = parse_path(os.environ.get("CNNC_CONV_PATH", "auto"))

# Direct convolution on the register-blocked micro-kernel (cnnc.kernels.conv.direct) for stride-1
# and stride-2, undilated, ungrouped layers with windows larger than 1x1. Measured on the
# 2-core AVX2 EPYC, batch 128, 2 threads, ms forward / backward (dx + dW), direct against
# the path chosen before (Winograd or im2col + OpenBLAS): 16->16 at 32x32 3.9 / 9.0 against
# 7.2 / 13.7; 32->32 at 32x32 14.9 / 33.5 against 17.7 / 33.1; 64->64 at 16x16 14.8 / 34
# against 10.6 / 22.3; ResNet-8's stride-2 16->32 forward 3.1 against 4.2; LeNet-5's
# 5x5 layers at batch 64 0.34 and 0.29 forward against 0.63 and 0.69. Winograd keeps the
# layers where it has enough channels: forward from 64 in and out, backward from 64 on one
# side (32 -> 32 at 16x16: direct 8.3 ms, Winograd 9.0; 32 -> 64 at 16x16: 22 and 16 ms).
DIRECT_WINO_CH = 64
# Winograd: 4x4-output tiles per GEMM block, and the channel thresholds.  Measured on the
# 2-core AVX-512 Xeon (VGG-ish layers, batch 128, vs im2col): forward 1.8-2.6x, dx 1.4-2.4x,
# dW 1.7-2.3x on every 3x3 layer with C, F >= 32; 32 tiles per block was best (16-128 tried).
WINO_TILES = 32
WINO_MIN_CH = 32
# The forward pass alone gains from 16 channels on: ResNet-8's 16 -> 16 layers at 32x32,
# batch 128, 2 threads: 6.25 -> 4.1 ms (im2col -> Winograd), while dx via Winograd there
# was slightly slower (8.4 -> 8.7 ms), so backward keeps WINO_MIN_CH.
WINO_FWD_MIN_CH = 16
WINO_DW_MIN_CH = 32
# ... and only for layers with at least this much work per image (MACs): Winograd's
# transforms cost a fixed amount per tile, and its kernel takes about 5 s to compile on
# first use. Below it the gain is microseconds per call: 16 -> 16 channels at 8x8 (0.15M
# MACs per image), batch 32: 0.087 ms Winograd vs 0.124 ms im2col, while the first run of
# models/digits.cnn compiles 7 s less.
WINO_MIN_IMAGE_MACS = 1 << 19

_chunks = work_chunks  # fixed per process: the same partial sums whatever runs them
_dummies: dict = {}


def dummy(dtype, ndim):
    """A cached (1,)*ndim zero array standing for an absent argument of a kernel (bias, dx)."""
    key = (np.dtype(dtype), ndim)
    a = _dummies.get(key)
    if a is None:
        a = _dummies[key] = np.zeros((1,) * ndim, dtype=dtype)
    return a


# ---------------------------------------------------------------------------------------
# path selection
# ---------------------------------------------------------------------------------------


def _wino_worth(C, F, OH, OW, path):
    """Enough work per image for Winograd (or it is forced)?"""
    return path == PATH_WINO or C * F * 9 * OH * OW >= WINO_MIN_IMAGE_MACS


def _wino_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, path, min_ch=None):
    """Winograd F(4x4,3x3) applies (and is chosen) for this layer? (``min_ch``: the
    channel threshold, default ``WINO_MIN_CH``; the forward pass uses ``WINO_FWD_MIN_CH``)"""
    if min_ch is None:
        min_ch = WINO_MIN_CH
    if path == PATH_COMPACT or path == PATH_WIDE or path == PATH_DIRECT:
        return False
    if not (KH == 3 and KW == 3 and sh == 1 and sw == 1 and dh == 1 and dw == 1
            and groups == 1 and 0 <= ph <= 2 and 0 <= pw <= 2):
        return False
    return path == PATH_WINO or (C >= min_ch and F >= min_ch)


def _direct_ok(KH, KW, sh, sw, dh, dw, groups, path):
    """The direct micro-kernel convolution applies (stride 1 or 2 on both axes, dilation 1,
    one group, a window larger than 1x1 -- a 1x1 layer's reduction over channels alone is
    too short for it: ResNet-8's 1x1 stride-2 shortcuts ran 10-20% slower -- and no wider
    than the slack after its padded images)?"""
    return (path in (PATH_AUTO, PATH_DIRECT) and sh == sw and sh in (1, 2) and dh == 1
            and dw == 1 and groups == 1 and 1 < KH * KW and KW <= direct.NR_MAX)


def _direct_room(N, C, H, W, F, KH, KW, ph, pw, T, stride):
    """Workspace elements the direct kernels need."""
    shared, per = host(direct.sizes)(N, C, H, W, F, KH, KW, ph, pw, T, stride)
    return shared + min(T, N) * per


def _direct_fits(ws, N, C, H, W, F, KH, KW, ph, pw, T, stride):
    return ws.size >= _direct_room(N, C, H, W, F, KH, KW, ph, pw, T, stride)


def _wino_dw_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, path):
    """Winograd for the weight gradient?"""
    return _wino_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, path) and (
        path == PATH_WINO or (C >= WINO_DW_MIN_CH and F >= WINO_DW_MIN_CH))


def _wino_small_fits(ws, Ci, Fo, Hi, Wi, Ho, Wo, T):
    """Enough tile rows (one per thread) and tiles (16 per thread) for the tile-split
    Winograd kernel, and a workspace that holds it?"""
    TH, TW = (Ho + 3) // 4, (Wo + 3) // 4
    if TH < T or TH * TW < 16 * T:
        return False
    u, pad, per, _ = host(winograd.wino_small_sizes)(Ci, Fo, Hi, Wi, Ho, Wo, T)
    return ws.size >= u + pad + T * per


def _wino_fits(ws, N, Ci, Fo, Hi, Wi, Ho, Wo):
    """Workspace holds the transformed filters and one thread's Winograd buffers?"""
    u, per, _ = host(winograd.wino_sizes)(N, Ci, Fo, Hi, Wi, Ho, Wo, WINO_TILES)
    return ws.size >= u + per


def conv2d_workspace_size(x_shape, w_shape, y_shape, geom: ConvGeometry) -> int:
    """Elements of the 1-D workspace (same dtype as the data) that :func:`conv2d_forward`
    and :func:`conv2d_backward` need for ``x: (N, C, H, W)``, ``w: (F, C // groups, KH, KW)``
    and ``y: (N, F, H', W')``.

    ``chunks x per-chunk(...)`` with chunks = :func:`cnnc.kernels.threads.work_chunks`;
    bounded independently of N beyond one block of images.  Room is made for every path
    the shapes allow (strides and paddings inferred from them: of ``geom`` only the group
    count enters).  A smaller workspace still works (fewer threads are used) as long as it
    holds one thread's share.
    """
    N, C, H, W = (int(v) for v in x_shape)
    F, KH, KW = int(w_shape[0]), int(w_shape[2]), int(w_shape[3])
    OH, OW = int(y_shape[2]), int(y_shape[3])
    groups = int(geom.groups)
    per = host(im2col.im2col_sizes)(N, C, F, KH, KW, (C // groups) * KH * KW, OH, OW,
                                    im2col.FWD_TARGET_COLS, im2col.BWD_TARGET_COLS)[0]
    T = max(1, min(work_chunks(), N))
    size = T * per
    if groups == 1:  # the direct kernels, at each stride and padding these shapes allow
        for st in (1, 2):
            pads = [(p, q) for p in range(KH) for q in range(KW)
                    if (H + 2 * p - KH) // st + 1 == OH and (W + 2 * q - KW) // st + 1 == OW]
            if pads:
                p, q = max(pads)
                shared, per_d = host(direct.sizes)(N, C, H, W, F, KH, KW, p, q, T, st)
                size = max(size, shared + T * per_d)
                if st == 2:  # the data gradient on the phase planes
                    shared, per_d = host(im2col.dx_phase_sizes)(C, F, KH, KW, H, W, OH, OW, p,
                                                                q)
                    size = max(size, shared + T * per_d)
                if N < work_chunks():  # the row-split forward of small batches
                    size = max(size, host(direct.small_size)(C, H, W, F, KH, KW, p, q, st,
                                                             2 * work_chunks()))
    dph, dpw = OH - H + 2, OW - W + 2  # 2 * padding if stride 1, dilation 1
    if (KH == 3 and KW == 3 and groups == 1 and dph in (0, 2, 4) and dpw in (0, 2, 4)
            and _wino_ok(C, F, 3, 3, 1, 1, dph // 2, dpw // 2, 1, 1, 1, FORCE_PATH,
                         min(WINO_MIN_CH, WINO_FWD_MIN_CH))):
        # room for Winograd where it may be chosen (stride 1 / dilation 1 inferred from the
        # shapes; a false positive only over-sizes the workspace)
        for ci, fo, ho, wo, hi, wi in ((C, F, OH, OW, H, W), (F, C, H, W, OH, OW)):
            u, pw_, _ = host(winograd.wino_sizes)(N, ci, fo, hi, wi, ho, wo, WINO_TILES)
            size = max(size, u + T * pw_)
        size = max(size, T * host(winograd.wino_dw_sizes)(N, C, F, H, W, OH, OW, WINO_TILES)[0])
        if N < work_chunks():  # the tile-split forward of small batches
            chunks = work_chunks()
            u, pad, per, _ = host(winograd.wino_small_sizes)(C, F, H, W, OH, OW, chunks)
            size = max(size, u + pad + chunks * per)
    return int(size)


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------


def conv2d_forward(x, w, b, y, ws, geom: ConvGeometry, has_bias, relu):
    """y = conv2d(x, w) (+ b) (then ReLU): ``x: (N, C, H, W)``, ``w: (F, C // groups, KH, KW)``
    -> ``y: (N, F, H', W')`` under ``geom``.

    All arrays C-contiguous, one float dtype; ``ws`` 1-D of at least
    :func:`conv2d_workspace_size` elements.  ``y`` is overwritten; ``b`` may be None
    without ``has_bias``.
    """
    kernel, args = conv2d_forward_call(x, w, b, y, ws, geom, has_bias, relu)
    kernel(*args)


def conv2d_forward_call(x, w, b, y, ws, geom: ConvGeometry, has_bias, relu):
    """:func:`conv2d_forward` as ``(kernel, args)``, its path chosen now: ``kernel(*args)``
    computes it on these arrays as often as needed (an inference executor binds its
    convolutions once). The path depends on the shapes, the workspace size, the work
    pieces and :data:`FORCE_PATH` at the time of this call."""
    if b is None:
        b = dummy(y.dtype, 1)
    sh, sw, ph, pw, dh, dw, groups = geom.scalars
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    T = _chunks()
    wino = (_wino_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, FORCE_PATH, WINO_FWD_MIN_CH)
            and _wino_worth(C, F, OH, OW, FORCE_PATH))
    # fewer images than threads: the batch-parallel kernels would leave threads idle, so each
    # image's work is split: the direct kernel by output rows, else Winograd by tile rows where
    # every thread gets >= 16 tiles, else im2col by channels and the GEMM by columns
    small = N < T and groups == 1 and FORCE_PATH == PATH_AUTO
    # batch-1 latency, 2 threads, one process: the direct row split beat Winograd's tile
    # split at every channel count (32 -> 32 at 32x32 0.16 against 0.27 ms, 64 -> 64 at
    # 16x16 0.16 against 0.31, 128 -> 128 at 8x8 0.20 against 0.26)
    pieces = 2 * T if OH >= 8 * T else T
    if (small and _direct_ok(KH, KW, sh, sw, dh, dw, groups, PATH_AUTO)
            and ws.size >= host(direct.small_size)(C, H, W, F, KH, KW, ph, pw, sh, pieces)):
        # two pieces per thread where the rows allow: one image's rows are little work
        # each, and a thread that wakes late then leaves less to the others
        return direct.CONV_ROWS[sh], (x, w, b, bool(has_bias), bool(relu), y, ws, ph, pw, pieces)
    if small and wino and _wino_small_fits(ws, C, F, H, W, OH, OW, T):
        return winograd.wino_conv_small, (x, w, b, bool(has_bias), bool(relu), y, ws, ph, pw, T)
    small = small and ws.size >= C * KH * KW * OH * OW
    tiles = N * ((OH + 3) // 4) * ((OW + 3) // 4)
    # Winograd's batch kernel hands out blocks of WINO_TILES tiles: with less than one block
    # (a few small images: 64 -> 64 at 8x8 has 4 tiles an image) one thread ran it all:
    # 2 images of 64 -> 64 at 8x8 took 162-172 us against the direct kernel's 75 us, and
    # 128 -> 128 520 against 450 (2 threads, random normal data)
    wino_batch = wino and (tiles >= WINO_TILES or FORCE_PATH == PATH_WINO)
    if (not small and _direct_ok(KH, KW, sh, sw, dh, dw, groups, FORCE_PATH)
            and not (wino_batch and min(C, F) >= DIRECT_WINO_CH)
            and _direct_fits(ws, N, C, H, W, F, KH, KW, ph, pw, T, sh)):
        return direct.CONV[sh], (x, w, b, bool(has_bias), bool(relu), y, ws, ph, pw, T)
    if wino and _wino_fits(ws, N, C, F, H, W, OH, OW) and not (small and tiles < T * WINO_TILES):
        return winograd.wino_conv, (x, x, False, w, False, b, bool(has_bias), bool(relu), y, ws, ph,
                                    pw, T, WINO_TILES)
    if small:
        return im2col_conv_split, (x, w, b, y, ws, sh, sw, ph, pw, dh, dw, bool(has_bias),
                                   bool(relu), T)
    return im2col_conv, (x, w, b, y, ws, sh, sw, ph, pw, dh, dw, groups, bool(has_bias), bool(relu),
                         _chunks(), FWD_TARGET_COLS, BWD_TARGET_COLS, FORCE_PATH)


BWD_DIRECT, BWD_DIRECT_PHASE, BWD_DIRECT_IM2COL, BWD_POINTWISE_STRIDED, BWD_OTHER = range(5)
_BWD_ADDS = (BWD_DIRECT, BWD_DIRECT_PHASE, BWD_POINTWISE_STRIDED)  # paths that can add to dx


def _backward_path(N, C, H, W, F, KH, KW, OH, OW, ws_size, sh, sw, ph, pw, dh, dw, groups,
                   relu):
    """Which kernels compute the gradients (the one place that decides it): the direct
    kernels (dx too at stride 1; at stride 2 dx by the phase GEMM, or by im2col after a
    fused ReLU), the strided pointwise kernel, or Winograd / im2col."""
    T = _chunks()
    if (_direct_ok(KH, KW, sh, sw, dh, dw, groups, FORCE_PATH)
            and not (FORCE_PATH == PATH_AUTO and _wino_worth(C, F, OH, OW, FORCE_PATH)
                     and max(C, F) >= DIRECT_WINO_CH
                     and _wino_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, FORCE_PATH))
            and _direct_room(N, C, H, W, F, KH, KW, ph, pw, T, sh) <= ws_size):
        if sh == 1:
            return BWD_DIRECT
        return BWD_DIRECT_IM2COL if relu else BWD_DIRECT_PHASE
    if (FORCE_PATH == PATH_AUTO and KH == 1 and KW == 1 and ph == 0 and pw == 0 and sh == sw
            and sh > 1 and groups == 1
            and ws_size >= host(pointwise_strided_sizes)(C, F, OH, OW)[0]):
        return BWD_POINTWISE_STRIDED
    return BWD_OTHER


def conv2d_backward_adds(x_shape, w_shape, y_shape, geom: ConvGeometry, ws_size, relu) -> bool:
    """Can :func:`conv2d_backward` add its data gradient to what dx holds (``add_dx``), for
    these shapes (as :func:`conv2d_workspace_size`'s), a workspace of ``ws_size`` elements
    and a fused ReLU or not?"""
    N, C, H, W = x_shape
    F, _, KH, KW = w_shape
    return _backward_path(N, C, H, W, F, KH, KW, y_shape[2], y_shape[3], ws_size,
                          *geom.scalars, relu) in _BWD_ADDS


def conv2d_backward(x, w, y, dy, dx, dwt, db, ws, geom: ConvGeometry, has_bias, relu, need_dx,
                    add_dx=False):
    """Gradients of :func:`conv2d_forward` (``dy: (N, F, H', W')``).  Overwrites ``dwt``,
    ``db`` (if has_bias) and ``dx`` (if need_dx; adds to it with ``add_dx``, where
    :func:`conv2d_backward_adds` says so).  With ``relu``, ``dy`` is the gradient w.r.t. the
    post-ReLU ``y`` and is masked by ``y > 0`` (``dy`` itself is left unchanged).  ``y`` is
    only read when ``relu``; ``dx``/``db`` may be None when not needed.
    """
    if db is None:
        db = dummy(dy.dtype, 1)
    if dx is None:
        dx = dummy(dy.dtype, 4)
        need_dx = False
    if y is None:
        y = dy
        relu = False
    sh, sw, ph, pw, dh, dw, groups = geom.scalars
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = dy.shape[2], dy.shape[3]
    T = _chunks()
    path = _backward_path(N, C, H, W, F, KH, KW, OH, OW, ws.size, sh, sw, ph, pw, dh, dw,
                          groups, relu)
    if add_dx and need_dx and path not in _BWD_ADDS:
        raise ValueError("conv2d_backward: this layer's data gradient cannot be added")
    if path == BWD_POINTWISE_STRIDED:
        pointwise_strided_backward(x, w, y, dy, dx, dwt, db, ws, sh, bool(has_bias), bool(relu),
                                   bool(need_dx), T, bool(add_dx))
        return
    if path != BWD_OTHER:
        if sh == 1:
            direct.direct_backward(x, w, dy, y, bool(relu), dwt, db, bool(has_bias), dx,
                                   bool(need_dx), ws, ph, pw, T, bool(add_dx))
        else:
            direct.direct_backward_s2(x, w, dy, y, bool(relu), dwt, db, bool(has_bias), ws, ph,
                                      pw, T)
        if need_dx and path == BWD_DIRECT_PHASE:
            dx_phase(w, dy, dx, ws, ph, pw, T, bool(add_dx))
        elif need_dx and path == BWD_DIRECT_IM2COL:
            im2col_backward(x, w, y, dy, dx, dwt, db, ws, sh, sw, ph, pw, dh, dw, groups,
                            bool(has_bias), bool(relu), True, False, T, FWD_TARGET_COLS,
                            BWD_TARGET_COLS, FORCE_PATH)
        return
    worth = _wino_worth(C, F, OH, OW, FORCE_PATH)
    wino_dx = (need_dx and worth
               and _wino_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, FORCE_PATH)
               and _wino_fits(ws, N, F, C, OH, OW, H, W))
    if ((wino_dx or not need_dx) and worth
            and _wino_dw_ok(C, F, KH, KW, sh, sw, ph, pw, dh, dw, groups, FORCE_PATH)
            and ws.size >= host(winograd.wino_dw_sizes)(N, C, F, H, W, OH, OW, WINO_TILES)[0]):
        winograd.wino_dw(x, dy, y, bool(relu), dwt, db, bool(has_bias), ws, ph, pw,
                         _chunks(), WINO_TILES)
    else:
        im2col_backward(x, w, y, dy, dx, dwt, db, ws, sh, sw, ph, pw, dh, dw, groups,
                        bool(has_bias), bool(relu), bool(need_dx) and not wino_dx, True,
                        _chunks(), FWD_TARGET_COLS, BWD_TARGET_COLS, FORCE_PATH)
    if wino_dx:
        # dx = conv(dy * (y > 0), flipped transposed w) with padding K - 1 - p
        winograd.wino_conv(dy, y, bool(relu), w, True, db, False, False, dx, ws, 2 - ph, 2 - pw,
                           _chunks(), WINO_TILES)
