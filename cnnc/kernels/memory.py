"""Arrays whose data start on a 64-byte boundary: one cache line, one AVX-512 vector.

NumPy aligns small arrays to 16 bytes only, so where a buffer starts within a cache line
changed from one process to the next, and with it the speed of the kernels reading and
writing it: the same ResNet-8 batch-1 forward took 395-470 us in some processes and
915-990 us in others on the 2-core AVX-512 EPYC, the slow ones with nearly every value
buffer off a 64-byte boundary. Executors, workspaces and the flat parameter arrays are
allocated here instead.
"""
from __future__ import annotations

import numpy as np

ALIGN = 64


def empty(shape, dtype) -> np.ndarray:
    """Like ``np.empty(shape, dtype)``, the data 64-byte aligned (C order)."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start: start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype) -> np.ndarray:
    """Like ``np.zeros(shape, dtype)``, the data 64-byte aligned (C order)."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def zeros_like(a: np.ndarray) -> np.ndarray:
    """``zeros(a.shape, a.dtype)``."""
    return zeros(a.shape, a.dtype)
