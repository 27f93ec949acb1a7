"""Tests of the conv and fully-connected kernels (cnnc.kernels.conv / cnnc.kernels.dense).

Three oracles: a naive NumPy reference written here (loops over kernel offsets on the
zero-padded input), central finite differences in float64, and PyTorch (if installed).
Both im2col layouts of the conv kernels (compact and "wide") and the Winograd F(2x2,3x3)
path (forward, dx and dW; forced, and chosen automatically for wide layers) are exercised.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import conv_out

from cnnc.kernels import threads as runtime

runtime.configure()

from cnnc.kernels.conv import dispatch as conv, direct, im2col, winograd  # noqa: E402
from cnnc.kernels.conv import winograd_gen  # noqa: E402
from cnnc.kernels.conv.geometry import ConvGeometry  # noqa: E402
from cnnc.kernels import dense  # noqa: E402

# ---------------------------------------------------------------------------------------
# naive reference (float64)
# ---------------------------------------------------------------------------------------


def ref_forward(x, w, b, s, p, d, groups, relu):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = s, p, d
    OH, OW = conv_out(H, KH, sh, ph, dh), conv_out(W, KW, sw, pw, dw)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((N, F, OH, OW))
    Fg = F // groups
    for g in range(groups):
        for kh in range(KH):
            for kw in range(KW):
                # window of every output pixel for this kernel offset
                win = xp[:, g * Cg:(g + 1) * Cg,
                         kh * dh: kh * dh + sh * (OH - 1) + 1: sh,
                         kw * dw: kw * dw + sw * (OW - 1) + 1: sw]
                y[:, g * Fg:(g + 1) * Fg] += np.einsum(
                    "nchw,fc->nfhw", win, w[g * Fg:(g + 1) * Fg, :, kh, kw].astype(np.float64))
    if b is not None:
        y += b[None, :, None, None]
    if relu:
        y = np.maximum(y, 0.0)
    return y


def ref_backward(x, w, y, dy, s, p, d, groups, relu, has_bias):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = s, p, d
    OH, OW = dy.shape[2:]
    dy = dy.astype(np.float64)
    if relu:
        dy = dy * (y > 0)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dwt = np.zeros(w.shape)
    Fg = F // groups
    for g in range(groups):
        dyg = dy[:, g * Fg:(g + 1) * Fg]
        for kh in range(KH):
            for kw in range(KW):
                hs = slice(kh * dh, kh * dh + sh * (OH - 1) + 1, sh)
                ws_ = slice(kw * dw, kw * dw + sw * (OW - 1) + 1, sw)
                win = xp[:, g * Cg:(g + 1) * Cg, hs, ws_]
                dwt[g * Fg:(g + 1) * Fg, :, kh, kw] = np.einsum("nfhw,nchw->fc", dyg, win)
                dxp[:, g * Cg:(g + 1) * Cg, hs, ws_] += np.einsum(
                    "nfhw,fc->nchw", dyg, w[g * Fg:(g + 1) * Fg, :, kh, kw].astype(np.float64))
    dx = dxp[:, :, ph:ph + H, pw:pw + W]
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dwt, db


# ---------------------------------------------------------------------------------------
# helpers calling the kernels
# ---------------------------------------------------------------------------------------


def geometry(s, p, d, groups):
    return ConvGeometry(s[0], s[1], p[0], p[1], d[0], d[1], groups)


def workspace_size(N, C, H, W, F, KH, KW, OH, OW, G):
    return conv.conv2d_workspace_size((N, C, H, W), (F, C // G, KH, KW), (N, F, OH, OW),
                                      ConvGeometry(groups=G))


def run_conv(x, w, b, s, p, d, groups, has_bias, relu, dy, need_dx=True, ws_scale=1.0):
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    geom = geometry(s, p, d, groups)
    OH, OW = geom.output_hw(H, W, KH, KW)
    assert (OH, OW) == (conv_out(H, KH, s[0], p[0], d[0]), conv_out(W, KW, s[1], p[1], d[1]))
    dt = x.dtype
    n_ws = conv.conv2d_workspace_size(x.shape, w.shape, (N, F, OH, OW), geom)
    ws = np.full(max(1, int(n_ws * ws_scale)), np.nan, dt)  # NaN: catches reads of junk
    y = np.full((N, F, OH, OW), np.nan, dt)
    bb = b if has_bias else np.zeros(F, dt)
    conv.conv2d_forward(x, w, bb, y, ws, geom, has_bias, relu)
    dx = np.full_like(x, np.nan)
    dwt = np.full_like(w, np.nan)
    db = np.full(F, np.nan, dt)
    dy_in = dy.astype(dt).copy()
    conv.conv2d_backward(x, w, y, dy_in, dx, dwt, db, ws, geom, has_bias, relu, need_dx)
    return y, dx, dwt, db


@pytest.fixture(params=[conv.PATH_COMPACT, conv.PATH_WIDE, conv.PATH_AUTO, conv.PATH_WINO,
                        conv.PATH_DIRECT], ids=["compact", "wide", "auto", "wino", "direct"])
def path(request):
    old = conv.FORCE_PATH
    conv.FORCE_PATH = request.param
    yield request.param
    conv.FORCE_PATH = old


def _configs():
    """(N, C, H, W, F, KH, KW, s, p, d, groups, bias, relu) covering the required grid."""
    cfgs = []
    sizes = [1, 2, 3, 5, 7]
    strides = [1, 2, 3]
    pads = [0, 1, 2]
    dils = [1, 2]
    i = 0
    for k, st, pd, dl in itertools.product(sizes, strides, pads, dils):
        H, W = 9 + (i % 3), 8 + (i % 4)  # non-square, varying
        if conv_out(H, k, st, pd, dl) < 1 or conv_out(W, k, st, pd, dl) < 1:
            i += 1
            continue
        groups_kind = i % 3  # 0: groups=1, 1: groups=2, 2: depthwise
        if groups_kind == 0:
            C, F, G = 3, 5, 1
        elif groups_kind == 1:
            C, F, G = 4, 6, 2
        else:
            C, F, G = 4, 8, 4  # depthwise (channel multiplier 2)
        N = 1 if i % 4 == 0 else 3
        cfgs.append((N, C, H, W, F, k, k, (st, st), (pd, pd), (dl, dl), G, i % 2 == 0,
                     i % 5 < 3))
        i += 1
    # mixed per-axis parameters, large-ish channel counts (F >= 12 -> transposed dW GEMM)
    cfgs += [
        (2, 3, 11, 7, 4, 3, 5, (1, 2), (1, 2), (2, 1), 1, True, True),
        (2, 6, 10, 12, 16, 5, 3, (1, 1), (0, 1), (1, 1), 1, True, False),
        (3, 8, 6, 6, 16, 3, 3, (1, 1), (1, 1), (1, 1), 2, False, True),
        (2, 16, 5, 5, 32, 1, 1, (1, 1), (0, 0), (1, 1), 1, True, True),  # pointwise
        (2, 16, 5, 5, 32, 1, 1, (2, 2), (1, 1), (1, 1), 4, True, False),
        (2, 6, 4, 4, 6, 3, 3, (1, 1), (1, 1), (1, 1), 6, True, True),  # depthwise 3x3
        (1, 1, 12, 12, 6, 5, 5, (1, 1), (0, 0), (1, 1), 1, True, True),  # LeNet conv1-like
        (4, 6, 7, 7, 16, 5, 5, (1, 1), (0, 0), (1, 1), 1, True, True),  # LeNet conv2-like
    ]
    return cfgs


CONFIGS = _configs()


def _cfg_id(c):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = c
    return (f"N{N}C{C}x{H}x{W}F{F}k{KH}x{KW}s{s[0]}{s[1]}p{p[0]}{p[1]}d{d[0]}{d[1]}"
            f"g{G}{'b' if bias else ''}{'r' if relu else ''}")


def _make(cfg, dt, seed=0):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    w = (0.5 * rng.standard_normal((F, C // G, KH, KW))).astype(dt)
    b = (0.5 * rng.standard_normal(F)).astype(dt)
    OH, OW = conv_out(H, KH, s[0], p[0], d[0]), conv_out(W, KW, s[1], p[1], d[1])
    dy = rng.standard_normal((N, F, OH, OW)).astype(dt)
    return x, w, b, dy


def test_config_grid_covers_requirements():
    ks = {c[5] for c in CONFIGS}
    ss = {c[7][0] for c in CONFIGS}
    ps = {c[8][0] for c in CONFIGS}
    ds = {c[9][0] for c in CONFIGS}
    gs = {("dw" if c[10] == c[1] else c[10]) for c in CONFIGS}
    assert {1, 2, 3, 5, 7} <= ks and {1, 2, 3} <= ss and {0, 1, 2} <= ps and {1, 2} <= ds
    assert {1, 2, "dw"} <= gs
    assert {True, False} == {c[11] for c in CONFIGS} == {c[12] for c in CONFIGS}
    assert {1} < {c[0] for c in CONFIGS}


# ---------------------------------------------------------------------------------------
# 1. naive reference, float64 (tight) -- every config, every im2col path
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_conv_matches_reference(cfg, path):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float64)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)


# The grid's maps are narrower than the micro-kernel's 16 (float32) / 8 (float64) columns,
# so the direct kernels compute them on the wide grid; these reach its per-row path, a
# partial last block of a row, filter counts that leave 1-3 rows for the last call, and
# stride 2 through the phase planes.
DIRECT_CONFIGS = [
    (3, 3, 20, 37, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (2, 5, 18, 33, 7, 5, 3, (1, 1), (2, 0), (1, 1), 1, False, True),
    (2, 4, 35, 40, 9, 3, 3, (2, 2), (1, 1), (1, 1), 1, True, False),
    (3, 2, 21, 70, 5, 4, 2, (2, 2), (0, 1), (1, 1), 1, True, True),
    (2, 16, 17, 17, 16, 3, 3, (1, 1), (0, 0), (1, 1), 1, False, False),
    # whole transposed blocks of dy (8 x 8 float32, 4 x 4 float64) and ragged edges
    (2, 3, 12, 21, 19, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (2, 6, 19, 34, 20, 3, 3, (2, 2), (1, 1), (1, 1), 1, False, True),
    # stride 2 without a fused ReLU: the data gradient's micro-kernel GEMM on the phase
    # planes, with 45 rows of W^T (blocks of 5 and 6) and 63 columns (a ragged last block)
    (2, 5, 13, 17, 7, 3, 3, (2, 2), (1, 1), (1, 1), 1, True, False),
]


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no-dx"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", DIRECT_CONFIGS, ids=_cfg_id)
def test_direct_conv_wide_maps_match_reference(cfg, dt, need_dx):
    """Without dx (a first layer), dW reads dy (ReLU-masked) straight from memory rather
    than from the padded copy the data gradient uses."""
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, dt, seed=2)
    old = conv.FORCE_PATH
    conv.FORCE_PATH = conv.PATH_DIRECT
    try:
        y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy, need_dx=need_dx)
    finally:
        conv.FORCE_PATH = old
    tol = dict(rtol=1e-10, atol=1e-10) if dt == np.float64 else dict(rtol=1e-4, atol=2e-3)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, **tol)
    # the ReLU mask from the kernel's own y (float32 may round a y near 0 the other way)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y.astype(np.float64), dy, s, p, d, G, relu, bias)
    if need_dx:
        np.testing.assert_allclose(dx, dx_ref, **tol)
    else:
        assert np.isnan(dx).all()  # untouched
    np.testing.assert_allclose(dwt, dw_ref, **tol)
    if bias:
        np.testing.assert_allclose(db, db_ref, **tol)


@pytest.mark.parametrize("cfg", CONFIGS[::4], ids=_cfg_id)
def test_conv_float32_matches_reference(cfg):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float32, seed=1)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy)
    assert y.dtype == np.float32
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    # ReLU mask may differ where y ~ 0: compare where the float32 y agrees on the sign
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-4, atol=1e-3)
    if bias:
        np.testing.assert_allclose(db, db_ref, rtol=1e-4, atol=1e-3)


def test_conv_no_dx_and_small_workspace():
    cfg = (5, 4, 9, 9, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True)
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float64)
    # workspace for a single chunk only: still correct (fewer chunks)
    per_thread = workspace_size(N, C, H, W, F, KH, KW, 9, 9, G) // min(
        N, runtime.work_chunks())
    n_full = workspace_size(N, C, H, W, F, KH, KW, 9, 9, G)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy, need_dx=False,
                              ws_scale=per_thread / n_full)
    y_ref = ref_forward(x, w, b, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    _, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)
    assert np.isnan(dx).all()  # need_dx=False: dx untouched
    with pytest.raises(ValueError):
        run_conv(x, w, b, s, p, d, G, bias, relu, dy, ws_scale=0.5 * per_thread / n_full)


def test_conv_batch_larger_than_threads_and_odd_split():
    cfg = (7, 3, 6, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, False)
    x, w, b, dy = _make(cfg, np.float64, seed=3)
    y, dx, dwt, db = run_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1, True, False, dy)
    y_ref = ref_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1, False)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, (1, 1), (1, 1), (1, 1), 1, False, True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c[10] == 1][::3], ids=_cfg_id)
def test_conv_forward_split_over_threads(cfg, T):
    """The path for batches smaller than the thread count (im2col split over channels, GEMM
    over columns) matches the reference, whatever the number of pieces."""
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, _ = _make(cfg, np.float64, seed=5)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    y = np.full(y_ref.shape, np.nan)
    ws = np.full(C * KH * KW * y.shape[2] * y.shape[3], np.nan)
    im2col.im2col_conv_split(x, w, b, y, ws, s[0], s[1], p[0], p[1], d[0], d[1], bias, relu, T)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("T", [2, 3, 5])
@pytest.mark.parametrize("cfg", [c for c in CONFIGS + DIRECT_CONFIGS
                                 if c[10] == 1 and c[7][0] == c[7][1] and c[7][0] in (1, 2)
                                 and c[9] == (1, 1) and c[5] * c[6] > 1][::2], ids=_cfg_id)
def test_direct_forward_rows_split_over_threads(cfg, T, dt):
    """The direct path for batches smaller than the thread count (one prepared image, output
    rows split over the threads: per row, or on the wide grid) matches the reference,
    whatever the number of pieces, including more pieces than rows."""
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, _ = _make(cfg, dt, seed=6)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    y = np.full(y_ref.shape, np.nan, dt)
    ws = np.full(direct.small_size(C, H, W, F, KH, KW, p[0], p[1], s[0], T), np.nan, dt)
    direct.CONV_ROWS[s[0]](x, w, b, bias, relu, y, ws, p[0], p[1], T)
    tol = dict(rtol=1e-10, atol=1e-10) if dt == np.float64 else dict(rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(y, y_ref, **tol)


# ---------------------------------------------------------------------------------------
# 1b. Winograd F(2x2,3x3): 3x3, stride 1, dilation 1, groups 1, padding 0..2
# ---------------------------------------------------------------------------------------

@pytest.fixture
def wino_path():
    old = conv.FORCE_PATH
    conv.FORCE_PATH = conv.PATH_WINO
    yield
    conv.FORCE_PATH = old


# odd and even sizes (partial 2x2 tiles), batches that split unevenly into threads/blocks,
# channel counts below and above the automatic thresholds
WINO_CONFIGS = [
    (3, 4, 7, 9, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (2, 6, 8, 8, 3, 3, 3, (1, 1), (0, 0), (1, 1), 1, False, False),
    (5, 3, 5, 6, 7, 3, 3, (1, 1), (2, 2), (1, 1), 1, True, False),
    (1, 2, 3, 3, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, False, True),
    (4, 5, 6, 11, 6, 3, 3, (1, 1), (2, 0), (1, 1), 1, True, True),
    (7, 3, 4, 4, 2, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (3, 32, 6, 5, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),  # auto: fwd/dx only
    (3, 64, 5, 4, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),  # auto: fwd/dx/dW
    (2, 64, 9, 7, 96, 3, 3, (1, 1), (1, 1), (1, 1), 1, False, True),  # Fo > 64: row chunks
    (2, 32, 12, 11, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),  # auto, above the work floor
]


@pytest.mark.parametrize("forced", [True, False], ids=["forced", "auto"])
@pytest.mark.parametrize("cfg", WINO_CONFIGS, ids=_cfg_id)
def test_winograd_matches_reference(cfg, forced, request):
    if forced:
        request.getfixturevalue("wino_path")
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float64, seed=5)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)
    # dW / db alone (need_dx=False) leave dx untouched
    _, dx2, dw2, db2 = run_conv(x, w, b, s, p, d, G, bias, relu, dy, need_dx=False)
    assert np.isnan(dx2).all()
    np.testing.assert_allclose(dw2, dw_ref, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(db2, db_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("cfg", [
    (1, 16, 32, 32, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (1, 5, 13, 11, 7, 3, 3, (1, 1), (0, 0), (1, 1), 1, False, False),  # partial tiles
    (2, 3, 18, 17, 70, 3, 3, (1, 1), (2, 2), (1, 1), 1, True, False),  # Fo > 64, 2 images
    (1, 4, 30, 9, 3, 3, 3, (1, 1), (1, 0), (1, 1), 1, True, True),
], ids=_cfg_id)
def test_winograd_tile_split_matches_reference(cfg, T):
    """The forward of batches smaller than the thread count (tile rows split over threads)."""
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, _ = _make(cfg, np.float64, seed=6)
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    y = np.full(y_ref.shape, np.nan)
    u, pad, per, _ = winograd.wino_small_sizes(C, F, H, W, y.shape[2], y.shape[3], T)
    ws = np.full(u + pad + T * per, np.nan)
    winograd.wino_conv_small(x, w, b, bias, relu, y, ws, p[0], p[1], T)
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cfg", WINO_CONFIGS, ids=_cfg_id)
def test_winograd_float32_matches_reference(cfg, wino_path):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float32, seed=6)
    w *= 1.0 / np.sqrt(C)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy)
    assert y.dtype == dx.dtype == dwt.dtype == np.float32
    y_ref = ref_forward(x, w, b if bias else None, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-4, atol=1e-3)
    if bias:
        np.testing.assert_allclose(db, db_ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("share", ["im2col", "wino1"])
def test_winograd_small_workspace(share):
    """A workspace holding one thread's im2col share only: the im2col path runs instead; one
    thread's Winograd share: Winograd runs on one thread."""
    cfg = (4, 64, 6, 6, 48, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True)
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float64, seed=8)
    per_im2col = im2col.im2col_sizes(N, C, F, KH, KW, C * KH * KW, H, W, im2col.FWD_TARGET_COLS,
                                     im2col.BWD_TARGET_COLS)[0]
    tiles = conv.WINO_TILES
    u1, p1, _ = winograd.wino_sizes(N, C, F, H, W, H, W, tiles)
    u2, p2, _ = winograd.wino_sizes(N, F, C, H, W, H, W, tiles)
    p3 = winograd.wino_dw_sizes(N, C, F, H, W, H, W, tiles)[0]
    one_wino = max(u1 + p1, u2 + p2, p3, per_im2col)
    n_full = workspace_size(N, C, H, W, F, KH, KW, H, W, G)
    size = per_im2col if share == "im2col" else one_wino
    assert n_full >= size and (share == "wino1" or n_full > per_im2col)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, dy,
                              ws_scale=(size + 0.5) / n_full)
    y_ref = ref_forward(x, w, b, s, p, d, G, relu)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y_ref, dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dwt, dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------
# 2. central finite differences, float64, loss = sum(y * R)
# ---------------------------------------------------------------------------------------

FD_CONFIGS = [
    (2, 3, 6, 5, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, False),
    (2, 4, 7, 7, 4, 3, 2, (2, 1), (1, 0), (1, 2), 2, True, True),
    (1, 2, 5, 6, 4, 2, 2, (1, 1), (2, 2), (2, 2), 2, False, False),
]


WINO_FD_CONFIGS = [
    (2, 3, 5, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, False),
    (2, 2, 5, 4, 3, 3, 3, (1, 1), (2, 0), (1, 1), 1, False, False),
]


@pytest.mark.parametrize("cfg", FD_CONFIGS + WINO_FD_CONFIGS, ids=_cfg_id)
def test_conv_finite_differences(cfg, request):
    if cfg in WINO_FD_CONFIGS:
        request.getfixturevalue("wino_path")
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, R = _make(cfg, np.float64, seed=7)

    def loss(x_, w_, b_):
        y_ = run_conv(x_, w_, b_, s, p, d, G, bias, relu, R)[0]
        return float((y_ * R).sum())

    _, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, R)
    rng = np.random.default_rng(0)
    eps = 1e-6
    for arr, grad in [(x, dx), (w, dwt)] + ([(b, db)] if bias else []):
        flat = arr.reshape(-1)
        for idx in rng.choice(flat.size, size=min(12, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            lp = loss(x, w, b)
            flat[idx] = old - eps
            lm = loss(x, w, b)
            flat[idx] = old
            num = (lp - lm) / (2 * eps)
            assert abs(num - grad.reshape(-1)[idx]) <= 1e-6 * max(1.0, abs(num)), (idx, num)


# ---------------------------------------------------------------------------------------
# 3. PyTorch (float32, CPU, autograd)
# ---------------------------------------------------------------------------------------

TORCH_CONFIGS = [
    (4, 1, 32, 32, 6, 5, 5, (1, 1), (0, 0), (1, 1), 1, True, True),  # LeNet conv1
    (4, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0), (1, 1), 1, True, True),  # LeNet conv2
    (2, 3, 16, 16, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),  # VGG-ish
    (2, 32, 8, 8, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),
    (2, 8, 9, 10, 8, 3, 3, (2, 2), (1, 1), (1, 1), 8, True, False),  # depthwise stride 2
    (2, 4, 11, 9, 6, 3, 5, (2, 1), (2, 1), (2, 1), 2, False, True),
]


@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=_cfg_id)
def test_conv_matches_torch(cfg):
    torch = pytest.importorskip("torch")
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, R = _make(cfg, np.float32, seed=11)
    y, dx, dwt, db = run_conv(x, w, b, s, p, d, G, bias, relu, R)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt if bias else None, s, p, d, G)
    if relu:
        yt = torch.relu(yt)
    (yt * torch.tensor(R)).sum().backward()
    tol = dict(rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    scale = max(1.0, float(np.abs(wt.grad.numpy()).max()))
    np.testing.assert_allclose(dwt, wt.grad.numpy(), rtol=1e-4, atol=1e-5 * scale * N * 10)
    if bias:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------
# fully connected
# ---------------------------------------------------------------------------------------


def run_fc(x, w, b, has_bias, relu, dy, need_dx=True):
    N, K = x.shape
    M = w.shape[0]
    y = np.full((N, M), np.nan, x.dtype)
    dense.fc_forward(x, w, b if has_bias else np.zeros(M, x.dtype), y, has_bias, relu)
    dx = np.full_like(x, np.nan)
    dwt = np.full_like(w, np.nan)
    db = np.full(M, np.nan, x.dtype)
    dense.fc_backward(x, w, y, dy.copy(), dx, dwt, db, has_bias, relu, need_dx)
    return y, dx, dwt, db


FC_CONFIGS = [(1, 5, 3), (3, 7, 10), (8, 16, 1), (64, 400, 120), (5, 2, 9), (128, 33, 10)]


@pytest.mark.parametrize("N,K,M", FC_CONFIGS)
@pytest.mark.parametrize("has_bias,relu", [(True, True), (True, False), (False, True),
                                           (False, False)])
def test_fc_matches_reference(N, K, M, has_bias, relu):
    rng = np.random.default_rng(N * 100 + K)
    x = rng.standard_normal((N, K))
    w = rng.standard_normal((M, K))
    b = rng.standard_normal(M)
    dy = rng.standard_normal((N, M))
    y, dx, dwt, db = run_fc(x, w, b, has_bias, relu, dy)
    z = x @ w.T + (b if has_bias else 0.0)
    y_ref = np.maximum(z, 0) if relu else z
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    g = dy * (y_ref > 0) if relu else dy
    np.testing.assert_allclose(dx, g @ w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dwt, g.T @ x, rtol=1e-12, atol=1e-12)
    if has_bias:
        np.testing.assert_allclose(db, g.sum(0), rtol=1e-12, atol=1e-12)
    # need_dx=False leaves dx alone
    _, dx2, dw2, _ = run_fc(x, w, b, has_bias, relu, dy, need_dx=False)
    assert np.isnan(dx2).all()
    np.testing.assert_allclose(dw2, dwt, rtol=0, atol=0)


def test_fc_finite_differences():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    R = rng.standard_normal((4, 3))

    def loss():
        return float((run_fc(x, w, b, True, True, R)[0] * R).sum())

    _, dx, dwt, db = run_fc(x, w, b, True, True, R)
    eps = 1e-6
    for arr, grad in [(x, dx), (w, dwt), (b, db)]:
        flat = arr.reshape(-1)
        for idx in range(flat.size):
            old = flat[idx]
            flat[idx] = old + eps
            lp = loss()
            flat[idx] = old - eps
            lm = loss()
            flat[idx] = old
            assert abs((lp - lm) / (2 * eps) - grad.reshape(-1)[idx]) < 1e-6


def test_fc_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 400)).astype(np.float32)
    w = (0.05 * rng.standard_normal((120, 400))).astype(np.float32)
    b = rng.standard_normal(120).astype(np.float32)
    R = rng.standard_normal((64, 120)).astype(np.float32)
    y, dx, dwt, db = run_fc(x, w, b, True, True, R)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.relu(torch.nn.functional.linear(xt, wt, bt))
    (yt * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dwt, wt.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_blas_info_and_configure_idempotent():
    n = runtime.configure()
    assert runtime.configure() == n
    info = runtime.blas_info()
    assert info["configured"] and info["numba_threads"] == n
    assert all(lib["num_threads"] == 1 for lib in info["blas"])


# Kernels that can add their data gradient to what dx holds (a value read by several layers
# gets the sum of their gradients): the direct ones at stride 1 and 2 and the strided 1x1
# (projection shortcut) one, which at stride 2 or 3 writes only the positions it reads.
ADD_CONFIGS = [
    (3, 4, 12, 13, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, True, True),  # direct, stride 1
    (2, 5, 9, 26, 7, 3, 3, (1, 1), (1, 1), (1, 1), 1, False, False),  # direct, wide grid
    (3, 4, 12, 13, 9, 3, 3, (2, 2), (1, 1), (1, 1), 1, False, False),  # direct, stride 2
    (3, 5, 9, 11, 7, 1, 1, (2, 2), (0, 0), (1, 1), 1, True, False),  # strided 1x1
    (2, 6, 10, 13, 4, 1, 1, (3, 3), (0, 0), (1, 1), 1, False, True),  # strided 1x1, ReLU
    (3, 16, 8, 8, 32, 1, 1, (2, 2), (0, 0), (1, 1), 1, False, False),  # ResNet's shortcut
]


@pytest.mark.parametrize("add", [False, True], ids=["overwrite", "add"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", ADD_CONFIGS, ids=_cfg_id)
def test_backward_adds_to_dx(cfg, dt, add):
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, dt, seed=5)
    OH, OW = dy.shape[2:]
    geom = geometry(s, p, d, G)
    ws = np.full(conv.conv2d_workspace_size(x.shape, w.shape, dy.shape, geom), np.nan, dt)
    assert conv.conv2d_backward_adds(x.shape, w.shape, dy.shape, geom, ws.size, relu)
    y = np.full((N, F, OH, OW), np.nan, dt)
    conv.conv2d_forward(x, w, b, y, ws, geom, bias, relu)
    before = np.random.default_rng(6).standard_normal(x.shape).astype(dt)
    dx = before.copy() if add else np.full_like(x, np.nan)
    dwt = np.full_like(w, np.nan)
    db = np.full(F, np.nan, dt)
    conv.conv2d_backward(x, w, y, dy.copy(), dx, dwt, db, ws, geom, bias, relu, True,
                         add_dx=add)
    tol = dict(rtol=1e-10, atol=1e-10) if dt == np.float64 else dict(rtol=1e-4, atol=2e-3)
    dx_ref, dw_ref, db_ref = ref_backward(x, w, y.astype(np.float64), dy, s, p, d, G, relu, bias)
    np.testing.assert_allclose(dx, dx_ref + before if add else dx_ref, **tol)
    np.testing.assert_allclose(dwt, dw_ref, **tol)
    if bias:
        np.testing.assert_allclose(db, db_ref, **tol)


def test_backward_refuses_to_add_where_it_cannot():
    """Winograd and im2col overwrite dx: asked to add, the kernel says so rather than
    losing what dx held."""
    cfg = (2, 4, 9, 9, 6, 3, 3, (1, 1), (1, 1), (2, 2), 1, False, False)  # dilation 2: im2col
    N, C, H, W, F, KH, KW, s, p, d, G, bias, relu = cfg
    x, w, b, dy = _make(cfg, np.float64)
    OH, OW = dy.shape[2:]
    geom = ConvGeometry.square(stride=1, pad=1, dilation=2)
    ws = np.zeros(conv.conv2d_workspace_size(x.shape, w.shape, dy.shape, geom))
    assert not conv.conv2d_backward_adds(x.shape, w.shape, dy.shape, geom, ws.size, False)
    dx = np.ones_like(x)
    with pytest.raises(ValueError, match="cannot be added"):
        conv.conv2d_backward(x, w, None, dy, dx, np.zeros_like(w), None, ws, geom, False, False,
                             True, add_dx=True)
    assert (dx == 1).all()


# ---------------------------------------------------------------------------------------
# the pieces around the kernels
# ---------------------------------------------------------------------------------------


def test_winograd_transforms_are_the_generators_output():
    """winograd.py's straight-line tile transforms are what winograd_gen prints, verbatim
    (regenerate and paste them back after a change to either)."""
    with open(winograd.__file__) as fh:
        source = fh.read()
    for gen in (winograd_gen.gen_in, winograd_gen.gen_out, winograd_gen.gen_dy):
        text = gen()
        assert text.split("\n")[1].startswith("def _w4_")
        assert text in source, gen.__name__


def test_geometry_checks_and_shapes():
    g = ConvGeometry.square(stride=2, pad=1)
    assert g == ConvGeometry(2, 2, 1, 1, 1, 1, 1) and hash(g) == hash(ConvGeometry(2, 2, 1, 1))
    assert ConvGeometry(1, 2, 3, 4, 5, 6, 7).scalars == (1, 2, 3, 4, 5, 6, 7)
    assert g.output_hw(9, 8, 3, 3) == (5, 4)
    assert ConvGeometry(1, 2, 0, 3, 1, 2, 1).output_hw(1, 11, 1, 3) == (1, 7)
    with pytest.raises(ValueError):
        ConvGeometry(stride_h=0)
    with pytest.raises(ValueError):
        ConvGeometry(pad_w=-1)
    with pytest.raises(TypeError):
        ConvGeometry(groups=1.0)
    with pytest.raises(AttributeError):  # frozen
        g.groups = 2


def test_forced_path_from_the_environment():
    assert conv.parse_path("direct") == conv.PATH_DIRECT
    assert conv.parse_path(" Wino ") == conv.PATH_WINO
    assert conv.parse_path("1") == conv.PATH_COMPACT
    for bad in ("5", "-1", "fast"):
        with pytest.raises(ValueError, match="CNNC_CONV_PATH"):
            conv.parse_path(bad)
