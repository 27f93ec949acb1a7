"""A register-blocked GEMM micro-kernel, written in LLVM IR for Numba kernels.

Why (docs/performance.md): Numba keeps scalar accumulators in registers but not array ones, and OpenBLAS
is slow on the small, oddly shaped GEMMs of convolutions with few channels (measured on a
2-core AMD EPYC, AVX2: 35 GFLOP/s per thread for [16 x 144] . [144 x 1024], against a 90
GFLOP/s peak). :func:`mk` is an intrinsic whose code is written here in LLVM IR, so its
``MR x 2`` vector accumulators live in registers for the whole reduction:

    C[r, 0:nc] = beta * C[r, 0:nc] + sum_k A(r, k) * B(k, 0:NR)   (+ bias[r]) (ReLU)

* ``A(r, k) = a[a0 + arow[ar0 + r] + k]``: each of the ``MR`` rows starts where a table says
  (row-major weights, or rows of a zero-padded image) and runs contiguously in ``k``;
* ``B(k, :) = b[b0 + btab[k] : +NR]``: each of the ``K`` rows starts where a table says, so
  a convolution is a GEMM over (channel, kh, kw) whose rows are shifted slices of the padded
  image (no im2col), or ``b[b0 + k * ldb : +NR]`` when ``btab`` is empty;
* ``NR`` = two vectors (:func:`mk_cols`): 16 float32 or 8 float64 columns with AVX2, twice
  that with AVX-512 (the vector width is the host CPU's, as Numba compiles for it); only the first
  ``nc`` columns are written, but all ``NR`` are read (callers leave slack after ``b``);
* ``beta`` is 0 (overwrite) or 1 (accumulate).

Per step: ``MR`` broadcasts, two vector loads, ``2 * MR`` fused multiply-adds. With
``MR = 4`` (8 accumulators, enough to hide the FMA latency on two FMA units) it ran at 172
GFLOP/s on 2 threads of that EPYC, where the 2048^3 sgemm reaches 186.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _vector_bits() -> int:
    """The widest vectors of this CPU that the kernel uses: 512 bits with AVX-512, else 256."""
    try:
        import llvmlite.binding as llb

        return 512 if llb.get_host_cpu_features().get("avx512f", False) else 256
    except Exception:  # pragma: no cover - feature query unavailable
        return 256


VECTOR_BITS = _vector_bits()
COLS_F32 = 2 * VECTOR_BITS // 32  # columns per call for float32 (the most of any dtype)


def _lanes(dtype) -> int:
    return VECTOR_BITS // (32 if dtype == types.float32 else 64)


def _elem_ptr(context, builder, aty, aval, off):
    arr = context.make_array(aty)(context, builder, aval)
    return builder.gep(arr.data, [off])


@intrinsic
def mk_cols(typingctx, arr):
    """Columns one micro-kernel call computes for arrays of ``arr``'s dtype (a constant)."""
    if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
        return None
    nr = 2 * _lanes(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(_I64, nr)

    return types.intp(arr), codegen


def _codegen(mr, use_table):
    def codegen(context, builder, sig, args):
        (a, a0, arow, ar0, b, b0, btab, ldb, kk, c, c0, ldc, nc, beta, bias, bias0,
         has_bias, relu) = args
        dt = sig.args[0].dtype
        lanes = _lanes(dt)
        fty = context.get_value_type(dt)
        vty = ir.VectorType(fty, lanes)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty, vty, vty]),
            f"llvm.fma.v{lanes}f{'32' if dt == types.float32 else '64'}")
        pa = _elem_ptr(context, builder, sig.args[0], a, a0)
        prow = _elem_ptr(context, builder, sig.args[2], arow, ar0)
        pb = _elem_ptr(context, builder, sig.args[4], b, b0)
        ptab = _elem_ptr(context, builder, sig.args[6], btab, ir.Constant(_I64, 0))
        pc = _elem_ptr(context, builder, sig.args[9], c, c0)
        rows = [builder.gep(pa, [builder.load(builder.gep(prow, [ir.Constant(_I64, r)]))])
                for r in range(mr)]
        zero = ir.Constant(vty, [0.0] * lanes)
        splat = ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes)
        undef = ir.Constant(vty, ir.Undefined)

        def bcast(x):
            v = builder.insert_element(undef, x, ir.Constant(_I32, 0))
            return builder.shuffle_vector(v, undef, splat)

        # the reduction over k: accumulators are phi nodes, so they stay in registers
        entry = builder.basic_block
        loop = builder.append_basic_block("mk.loop")
        done = builder.append_basic_block("mk.done")
        builder.cbranch(builder.icmp_signed(">", kk, ir.Constant(_I64, 0)), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(_I64)
        k.add_incoming(ir.Constant(_I64, 0), entry)
        acc = [[builder.phi(vty) for _ in range(2)] for _ in range(mr)]
        for row in acc:
            for p in row:
                p.add_incoming(zero, entry)
        off = builder.load(builder.gep(ptab, [k])) if use_table else builder.mul(k, ldb)
        pbk = builder.gep(pb, [off])
        bv = [builder.load(builder.bitcast(builder.gep(pbk, [ir.Constant(_I64, lanes * j)]),
                                           vty.as_pointer()), align=1) for j in range(2)]
        new = []
        for r in range(mr):
            av = bcast(builder.load(builder.gep(rows[r], [k])))
            new.append([builder.call(fma, [av, bv[j], acc[r][j]]) for j in range(2)])
        k1 = builder.add(k, ir.Constant(_I64, 1))
        k.add_incoming(k1, loop)
        for r in range(mr):
            for j in range(2):
                acc[r][j].add_incoming(new[r][j], loop)
        builder.cbranch(builder.icmp_signed("<", k1, kk), loop, done)
        builder.position_at_end(done)
        out = []
        for r in range(mr):
            row = []
            for j in range(2):
                p = builder.phi(vty)
                p.add_incoming(zero, entry)
                p.add_incoming(new[r][j], loop)
                row.append(p)
            out.append(row)

        # epilogue: beta, bias, ReLU; full vectors, or the first nc columns one at a time
        accumulate = builder.icmp_signed("!=", beta, ir.Constant(_I64, 0))
        add_bias = builder.icmp_signed("!=", has_bias, ir.Constant(_I64, 0))
        do_relu = builder.icmp_signed("!=", relu, ir.Constant(_I64, 0))
        pbias = _elem_ptr(context, builder, sig.args[14], bias, bias0)
        fzero = ir.Constant(fty, 0.0)
        full = builder.icmp_signed(">=", nc, ir.Constant(_I64, 2 * lanes))
        with builder.if_else(full, likely=True) as (then, otherwise):
            with then:
                for r in range(mr):
                    pr = builder.gep(pc, [builder.mul(ldc, ir.Constant(_I64, r))])
                    bb = builder.select(add_bias, builder.load(builder.gep(pbias, [ir.Constant(_I64, r)])),
                                        fzero)
                    bbv = bcast(bb)
                    for j in range(2):
                        cp = builder.bitcast(builder.gep(pr, [ir.Constant(_I64, lanes * j)]),
                                             vty.as_pointer())
                        v = builder.fadd(out[r][j], bbv)
                        v = builder.select(accumulate, builder.fadd(v, builder.load(cp, align=1)), v)
                        v = builder.select(do_relu, builder.select(
                            builder.fcmp_ordered(">", v, zero), v, zero), v)
                        builder.store(v, cp, align=1)
            with otherwise:  # the first nc columns: masked loads and stores
                ptr = vty.as_pointer()
                align = ir.Constant(_I32, 4 if dt == types.float32 else 8)
                mty = ir.VectorType(ir.IntType(1), lanes)
                suffix = f"v{lanes}f{'32' if dt == types.float32 else '64'}.p0"
                mload = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vty, [ptr, _I32, mty, vty]),
                    f"llvm.masked.load.{suffix}")
                mstore = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [vty, ptr, _I32, mty]),
                    f"llvm.masked.store.{suffix}")
                i64v = ir.VectorType(_I64, lanes)
                ncv = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(i64v, ir.Undefined), nc, ir.Constant(_I32, 0)),
                    ir.Constant(i64v, ir.Undefined), splat)
                masks = [builder.icmp_signed("<", ir.Constant(i64v, [lanes * j + e for e in range(lanes)]),
                                             ncv) for j in range(2)]
                for r in range(mr):
                    pr = builder.gep(pc, [builder.mul(ldc, ir.Constant(_I64, r))])
                    bb = builder.select(add_bias, builder.load(builder.gep(pbias, [ir.Constant(_I64, r)])),
                                        fzero)
                    bbv = bcast(bb)
                    for j in range(2):
                        cp = builder.bitcast(builder.gep(pr, [ir.Constant(_I64, lanes * j)]), ptr)
                        v = builder.fadd(out[r][j], bbv)
                        old = builder.call(mload, [cp, align, masks[j], zero])
                        v = builder.select(accumulate, builder.fadd(v, old), v)
                        v = builder.select(do_relu, builder.select(
                            builder.fcmp_ordered(">", v, zero), v, zero), v)
                        builder.call(mstore, [v, cp, align, masks[j]])
        return context.get_dummy_value()

    return codegen


def _make(mr, use_table):
    @intrinsic
    def kernel(typingctx, a, a0, arow, ar0, b, b0, btab, ldb, kk, c, c0, ldc, nc, beta, bias,
               bias0, has_bias, relu):
        arrays = (a, b, c, bias)
        if not all(isinstance(x, types.Array) for x in arrays + (arow, btab)):
            return None
        dt = a.dtype
        if dt not in (types.float32, types.float64) or any(x.dtype != dt for x in arrays):
            return None
        if arow.dtype != types.int64 or btab.dtype != types.int64:
            return None
        ip = types.intp
        sig = types.void(a, ip, arow, ip, b, ip, btab, ip, ip, c, ip, ip, ip, ip, bias, ip, ip, ip)
        return sig, _codegen(mr, use_table)
    return kernel


# mk{MR}: B rows from the table btab; mks{MR}: B rows k * ldb apart (btab is not read)
mk1, mk2, mk3, mk4 = (_make(r, True) for r in (1, 2, 3, 4))
# the weight gradient's strided calls take up to 6 rows: 12 accumulators, 2 B vectors and a
# broadcast still fit the 16 vector registers of AVX2
mks1, mks2, mks3, mks4, mks5, mks6 = (_make(r, False) for r in (1, 2, 3, 4, 5, 6))


# ---------------------------------------------------------------------------------------
# an in-register block transpose (the weight gradient's dy -> dyT)
# ---------------------------------------------------------------------------------------

def _tr_lanes(dtype) -> int:
    """Rows and columns of one transposed block: a 256-bit vector (8 float32, 4 float64)."""
    return 8 if dtype == types.float32 else 4


@intrinsic
def tr_size(typingctx, arr):
    """Rows (and columns) of one :func:`tr_block` for arrays of ``arr``'s dtype (a constant)."""
    if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
        return None
    n = _tr_lanes(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(_I64, n)

    return types.intp(arr), codegen


@intrinsic
def tr_block(typingctx, src, s0, sld, mask, m0, use_mask, dst, d0, dld):
    """``dst[d0 + j*dld + i] = src[s0 + i*sld + j]`` (times ``mask[m0 + i*sld + j] > 0``
    when ``use_mask`` != 0) for an ``n x n`` block, n = :func:`tr_size`: n vector loads,
    log2(n) rounds of two-source shuffles (each swaps one bit of the row index with the same
    bit of the column index), n vector stores. Element-by-element, the strided stores of a
    transpose each touch their own cache line; this block keeps them whole vectors."""
    arrays = (src, mask, dst)
    if not all(isinstance(x, types.Array) for x in arrays):
        return None
    dt = src.dtype
    if dt not in (types.float32, types.float64) or any(x.dtype != dt for x in arrays):
        return None
    ip = types.intp
    sig = types.void(src, ip, ip, mask, ip, ip, dst, ip, ip)
    n = _tr_lanes(dt)

    def codegen(context, builder, sig, args):
        sv, so, sl, mv, mo, um, dv, do, dl = args
        fty = context.get_value_type(dt)
        vty = ir.VectorType(fty, n)
        ps = _elem_ptr(context, builder, sig.args[0], sv, so)
        pm = _elem_ptr(context, builder, sig.args[3], mv, mo)
        pd = _elem_ptr(context, builder, sig.args[6], dv, do)
        zero = ir.Constant(vty, [0.0] * n)
        masked = builder.icmp_signed("!=", um, ir.Constant(_I64, 0))

        def row_ptr(base, ld, r):
            return builder.bitcast(builder.gep(base, [builder.mul(ld, ir.Constant(_I64, r))]),
                                   vty.as_pointer())

        rows = [builder.load(row_ptr(ps, sl, r), align=1) for r in range(n)]
        # the mask is read only when asked for (it may be a one-element dummy)
        entry = builder.basic_block
        with builder.if_then(masked):
            kept = [builder.select(builder.fcmp_ordered(">", builder.load(row_ptr(pm, sl, r), align=1),
                                                        zero), rows[r], zero) for r in range(n)]
            then_end = builder.basic_block
        merged = []
        for r in range(n):
            p = builder.phi(vty)
            p.add_incoming(kept[r], then_end)
            p.add_incoming(rows[r], entry)
            merged.append(p)
        rows = merged
        b = n // 2
        while b >= 1:
            for i in range(n):
                if i & b:
                    continue
                p = i + b
                lo = [j if not j & b else n + j - b for j in range(n)]
                hi = [j + b if not j & b else n + j for j in range(n)]
                ri, rp = rows[i], rows[p]
                rows[i] = builder.shuffle_vector(ri, rp, ir.Constant(ir.VectorType(_I32, n), lo))
                rows[p] = builder.shuffle_vector(ri, rp, ir.Constant(ir.VectorType(_I32, n), hi))
            b //= 2
        for r in range(n):
            builder.store(rows[r], row_ptr(pd, dl, r), align=1)
        return context.get_dummy_value()

    return sig, codegen
