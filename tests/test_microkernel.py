"""The register-blocked micro-kernel (cnnc.kernels.conv.microkernel) against NumPy: every row
count, B rows from a table or a stride, partial column blocks, overwrite and accumulate,
bias and ReLU, float32 and float64."""
import numpy as np
import pytest
from numba import njit

from cnnc.kernels.conv import microkernel as mk


@njit(cache=True)
def _call_table(mr, a, a0, arow, b, b0, btab, kk, c, c0, ldc, nc, beta, bias, has_bias, relu):
    if mr == 4:
        mk.mk4(a, a0, arow, 0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 3:
        mk.mk3(a, a0, arow, 0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 2:
        mk.mk2(a, a0, arow, 0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    else:
        mk.mk1(a, a0, arow, 0, b, b0, btab, 0, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)


@njit(cache=True)
def _call_strided(mr, a, a0, arow, b, b0, ldb, kk, c, c0, ldc, nc, beta, bias, has_bias, relu):
    if mr == 6:
        mk.mks6(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 5:
        mk.mks5(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 4:
        mk.mks4(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 3:
        mk.mks3(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    elif mr == 2:
        mk.mks2(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)
    else:
        mk.mks1(a, a0, arow, 0, b, b0, arow, ldb, kk, c, c0, ldc, nc, beta, bias, 0, has_bias, relu)


@njit(cache=True)
def _cols(a):
    return mk.mk_cols(a)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("mr,table", [(1, True), (2, True), (3, True), (4, True), (1, False),
                                      (2, False), (3, False), (4, False), (5, False), (6, False)])
@pytest.mark.parametrize("kk", [0, 1, 7, 33])
def test_microkernel_matches_numpy(dt, mr, table, kk):
    rng = np.random.default_rng(mr * 100 + kk)
    nr = int(_cols(np.zeros(1, dt)))
    assert nr == 2 * mk.VECTOR_BITS // (8 * np.dtype(dt).itemsize)
    a = rng.standard_normal(500).astype(dt)
    arow = rng.choice(400, size=mr, replace=False).astype(np.int64)  # rows anywhere
    a0 = 3
    b = rng.standard_normal(4000).astype(dt)
    b0 = 5
    ldb = nr + 3
    btab = rng.integers(0, 3000, size=max(kk, 1)).astype(np.int64)
    starts = btab[:kk] if table else np.arange(kk) * ldb
    A = np.stack([a[a0 + r:a0 + r + kk] for r in arow]).astype(np.float64)
    B = np.stack([b[b0 + s:b0 + s + nr] for s in starts]) if kk else np.zeros((0, nr))
    prod = A @ B.astype(np.float64)  # (mr, nr)
    bias = rng.standard_normal(mr).astype(dt)
    ldc = nr + 5
    for nc in (nr, nr - 1, 3, 1):
        for beta in (0, 1):
            for has_bias in (0, 1):
                for relu in (0, 1):
                    c = rng.standard_normal(10 + mr * ldc).astype(dt)
                    before = c.copy()
                    call = _call_table if table else _call_strided
                    call(mr, a, a0, arow, b, b0, btab if table else ldb, kk, c, 10, ldc, nc,
                         beta, bias, has_bias, relu)
                    want = before.astype(np.float64).copy()
                    for r in range(mr):
                        row = slice(10 + r * ldc, 10 + r * ldc + nc)
                        v = prod[r, :nc] + (bias[r] if has_bias else 0.0)
                        if beta:
                            v = v + before[row]
                        want[row] = np.maximum(v, 0.0) if relu else v
                    tol = 1e-12 if dt == np.float64 else 2e-5
                    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * (1 + kk))
