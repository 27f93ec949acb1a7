"""Numba kernels: the executable half of every layer.

Conventions shared by every kernel module in this package:

* Layout NCHW, C-contiguous arrays. One dtype per call: float32 for speed, float64 for
  gradient checks (Numba compiles each dtype lazily; flags are runtime arguments, not
  compile-time literals, so the number of specializations stays small).
* ``@njit(cache=True)`` at module level, explicit output arguments, no allocation inside
  a kernel (workspace arrays are passed in; their sizes come from ``*_workspace_size``).
* ``prange`` only over indices whose iterations write disjoint memory. Inside a prange
  region BLAS runs with one thread (see :mod:`cnnc.kernels.threads`).
* Backward kernels *overwrite* their outputs (dx, dw, db); the lowering sums gradients
  where a tensor feeds several consumers.

This package is imported only when a model is lowered for execution; ``cnnc check`` never
imports Numba. Importing it sets the environment variables the kernels' libraries read once
(:mod:`cnnc.kernels.environment`: OpenBLAS's kernel choice, Numba's optimization level),
unless the environment already set them.
"""
from .environment import prepare as _prepare_environment

_prepare_environment()
