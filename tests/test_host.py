"""cnnc.kernels.host: the plain-Python twins of the workspace-size kernels that Python code
calls (no compilation), checked against the compiled kernels themselves."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from numba import njit

from cnnc.kernels.conv import direct, im2col, winograd
from cnnc.kernels.host import host


@njit(cache=False)
def _inner(a, b):
    return (a + b) // 2


@njit(cache=False)
def _outer(a, b=3):
    return _inner(a, b) * 2 + max(a, b)


def test_the_twin_compiles_nothing_and_agrees():
    twin = host(_outer)
    assert twin(7) == 17 and twin(1, 9) == 19  # (7+3)//2*2 + 7, (1+9)//2*2 + 9
    assert not _outer.overloads and not _inner.overloads  # nothing was compiled
    assert _outer(7) == twin(7) and _outer(1, 9) == twin(1, 9)
    assert host(_outer) is twin  # memoized


def _cases(n, arity, seed):
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(1, 40, arity)) for _ in range(n)]


# each case: N, C, H, W, F, K (window), p (padding), st (stride), T (threads) in 1..39
CASES = [
    (direct.sizes, lambda N, C, H, W, F, K, p, st, T:
        (N, C, H + K, W + K, F, K, K, p % K, p % K, T, 1 + st % 2)),
    (direct.small_size, lambda N, C, H, W, F, K, p, st, T:
        (C, H + K, W + K, F, K, K, p % K, p % K, 1 + st % 2, T)),
    (im2col.im2col_sizes, lambda N, C, H, W, F, K, p, st, T:
        (N, C, F, K, K, C * K * K, H, W, 1 + p % 3, 1 + st % 3)),
    (im2col.pointwise_strided_sizes, lambda N, C, H, W, F, K, p, st, T: (C, F, H, W)),
    (winograd.wino_sizes, lambda N, C, H, W, F, K, p, st, T: (N, C, F, H + 2, W + 2, H, W, 32 * T)),
    (winograd.wino_dw_sizes, lambda N, C, H, W, F, K, p, st, T: (N, C, F, H + 2, W + 2, H, W, 32 * T)),
    (winograd.wino_small_sizes, lambda N, C, H, W, F, K, p, st, T: (C, F, H + 2, W + 2, H, W, T)),
    (im2col.dx_phase_sizes, lambda N, C, H, W, F, K, p, st, T:
        (C, F, K, K, 2 * H + K, 2 * W + K, H + 1, W + 1, p % K, p % K)),
]


@pytest.mark.parametrize("kernel, make", CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_size_twins_agree_with_the_kernels(kernel, make):
    for case in _cases(25, 9, seed=zlib.crc32(kernel.__name__.encode())):
        args = make(*case)
        compiled = kernel(*args)
        assert host(kernel)(*args) == compiled, args
