"""Fully connected layer kernels: ``y = x . w^T + b`` (w in PyTorch's Linear layout (M, K)).

One thread pool (docs/performance.md): a ``prange`` over ``T`` chunks, each calling single-threaded
BLAS through :func:`cnnc.kernels.blas.gemm` (SciPy's OpenBLAS, like ``np.dot`` in njit code).
Forward and dx split the batch rows; dW and db split the output features, so every thread
writes disjoint memory and no partial sums are needed.
"""

from __future__ import annotations

from numba import njit, prange

from .blas import TRANS_N as _N
from .blas import TRANS_T as _T
from .blas import gemm
from .blas import uidx as _u
from .conv.dispatch import dummy
from .serial import pick
from .threads import work_chunks
from .conv.winograd import FASTMATH  # no "reassoc": see winograd.py


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _fc_fwd(x, w, b, y, has_bias, relu, nthreads):
    N, K = x.shape
    M = w.shape[0]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    yf = y.reshape(y.size)
    T = max(1, min(nthreads, N))
    zero = y.dtype.type(0)
    for t in prange(T):
        n0 = t * N // T
        n1 = (t + 1) * N // T
        if n1 > n0:
            gemm(_N, _T, n1 - n0, M, K, 1.0, xf, n0 * K, K, wf, 0, K, 0.0, yf, n0 * M, M)
            if has_bias or relu:
                for n in range(n0, n1):
                    d = _u(n * M)
                    for m in range(M):
                        v = yf[d + _u(m)]
                        if has_bias:
                            v += b[m]
                        if relu:
                            v = max(v, zero)
                        yf[d + _u(m)] = v


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _fc_bwd(x, w, y, dy, dx, dwt, db, has_bias, relu, need_dx, nthreads):
    N, K = x.shape
    M = w.shape[0]
    xf = x.reshape(x.size)
    wf = w.reshape(w.size)
    dyf = dy.reshape(dy.size)
    dxf = dx.reshape(dx.size)
    dwf = dwt.reshape(dwt.size)
    zero = dy.dtype.type(0)
    if relu:  # mask in place (serial: N*M is small); every chunk below needs all of it
        yf = y.reshape(y.size)
        for j in range(N * M):
            if not yf[_u(j)] > zero:
                dyf[_u(j)] = zero
    T = max(1, min(nthreads, max(N, M)))
    for t in prange(T):
        # dx rows [n0, n1): dx = dy . w
        n0 = t * N // T
        n1 = (t + 1) * N // T
        if need_dx and n1 > n0:
            gemm(_N, _N, n1 - n0, K, M, 1.0, dyf, n0 * M, M, wf, 0, K, 0.0, dxf, n0 * K, K)
        # dW rows [m0, m1): dW = dy^T . x ; db likewise
        m0 = t * M // T
        m1 = (t + 1) * M // T
        if m1 > m0:
            gemm(_T, _N, m1 - m0, K, N, 1.0, dyf, m0, M, xf, 0, K, 0.0, dwf, m0 * K, K)
            if has_bias:
                for m in range(m0, m1):
                    db[m] = zero
                for n in range(N):
                    r = _u(n * M)
                    for m in range(m0, m1):
                        db[m] += dyf[r + _u(m)]


_chunks = work_chunks  # fixed per process: the same partial sums whatever runs them


def fc_forward(x, w, b, y, has_bias, relu):
    """y[N,M] = x[N,K] . w[M,K]^T (+ b) (then ReLU).  C-contiguous, one float dtype."""
    kernel, args = fc_forward_call(x, w, b, y, has_bias, relu)
    kernel(*args)


def fc_forward_call(x, w, b, y, has_bias, relu):
    """:func:`fc_forward` as ``(kernel, args)`` (the serial twin for one input vector and a
    small weight matrix: :mod:`cnnc.kernels.serial`)."""
    if b is None:
        b = dummy(y.dtype, 1)
    return pick(_fc_fwd, x.shape[0], w.size), (x, w, b, y, bool(has_bias), bool(relu), _chunks())


def fc_backward(x, w, y, dy, dx, dwt, db, has_bias, relu, need_dx):
    """Gradients of :func:`fc_forward`; overwrites dwt, db (if has_bias), dx (if need_dx).

    With ``relu``, ``dy`` (gradient w.r.t. the post-ReLU ``y``) is masked by ``y > 0``
    *in place*.
    """
    if db is None:
        db = dummy(dy.dtype, 1)
    if dx is None:
        dx = dummy(dy.dtype, 2)
        need_dx = False
    if y is None:
        y = dy
        relu = False
    _fc_bwd(x, w, y, dy, dx, dwt, db, bool(has_bias), bool(relu), bool(need_dx),
            _chunks())
