"""BLAS from Numba kernels: a row-major GEMM with offsets, leading dimensions and ``beta``.

:func:`gemm` is a thin intrinsic over Numba's own ``numba_xxgemm`` helper (the function
behind ``np.dot`` in njit code, which calls SciPy's OpenBLAS), adding what ``np.dot`` lacks:
element offsets into flat arrays, leading dimensions, transposes and ``beta``. It needs
:func:`cnnc.kernels.threads.configure` to have run (one BLAS thread inside ``prange``).
Used by the convolution kernels (:mod:`cnnc.kernels.conv.im2col`, :mod:`cnnc.kernels.conv.winograd`).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# ---------------------------------------------------------------------------------------
# BLAS: row-major GEMM with offsets / leading dimensions / beta
# ---------------------------------------------------------------------------------------

uidx = np.uint64  # unsigned index: no wraparound check, vectorizable loops
TRANS_N = 110  # ord('n')
TRANS_T = 116  # ord('t')


@intrinsic
def _xgemm_cm(typingctx, transa, transb, m, n, k, alpha, a, aoff, lda, b, boff, ldb, beta, c,
              coff, ldc):
    """Column-major (Fortran) xGEMM on 1-D arrays with element offsets."""
    if not (isinstance(a, types.Array) and isinstance(b, types.Array)
            and isinstance(c, types.Array)):
        return None
    dt = c.dtype
    if dt not in (types.float32, types.float64) or a.dtype != dt or b.dtype != dt:
        return None
    ip = types.intp
    sig = types.void(ip, ip, ip, ip, ip, dt, a, ip, ip, b, ip, ip, dt, c, ip, ip)

    def codegen(context, builder, sig, args):
        from numba.np.linalg import ensure_blas

        ensure_blas()
        (ta, tb, mm, nn, kk, al, av, ao, la, bv, bo, lb, be, cv, co, lc) = args
        i8 = ir.IntType(8)
        vp = cgutils.voidptr_t
        arr_a = context.make_array(sig.args[6])(context, builder, av)
        arr_b = context.make_array(sig.args[9])(context, builder, bv)
        arr_c = context.make_array(sig.args[13])(context, builder, cv)
        pa = builder.bitcast(builder.gep(arr_a.data, [ao]), vp)
        pb = builder.bitcast(builder.gep(arr_b.data, [bo]), vp)
        pc = builder.bitcast(builder.gep(arr_c.data, [co]), vp)
        palpha = builder.bitcast(cgutils.alloca_once_value(builder, al), vp)
        pbeta = builder.bitcast(cgutils.alloca_once_value(builder, be), vp)
        intp_t = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [i8, i8, i8, intp_t, intp_t, intp_t, vp, vp,
                                                intp_t, vp, intp_t, vp, vp, intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind = ir.Constant(i8, ord("s") if sig.args[5] == types.float32 else ord("d"))
        res = builder.call(fn, (kind, builder.trunc(ta, i8), builder.trunc(tb, i8), mm, nn, kk,
                                palpha, pa, la, pb, lb, pbeta, pc, lc))
        with builder.if_then(cgutils.is_not_null(builder, res), likely=False):
            pyapi = context.get_python_api(builder)
            pyapi.gil_ensure()
            pyapi.fatal_error("BLAS wrapper returned with an error")
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def gemm(transa, transb, m, n, k, alpha, a, aoff, lda, b, boff, ldb, beta, c, coff, ldc):
    """Row-major ``C[m,n] = alpha * op(A) . op(B) + beta * C`` on flat (1-D) arrays.

    ``transa``/``transb`` are ``ord('n')`` or ``ord('t')``; ``op(A)`` is ``m x k``.
    ``A`` starts at ``a[aoff]`` with row stride ``lda`` (as stored), etc.
    """
    # row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T
    _xgemm_cm(transb, transa, n, m, k, alpha, b, boff, ldb, a, aoff, lda, beta, c, coff, ldc)
