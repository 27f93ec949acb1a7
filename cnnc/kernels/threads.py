"""Thread-pool setup shared by every kernel: one pool only (Numba ``prange``), BLAS at 1 thread.

Call :func:`configure` once before any kernel runs (it is idempotent and cheap afterwards).

Why (see PERF.md §0): Numba's ``np.dot`` -- and the ``gemm`` intrinsic in
:mod:`cnnc.kernels.conv`, which goes through the same Numba helper -- calls the OpenBLAS that
ships with SciPy (``scipy.linalg.cython_blas``), not NumPy's.  SciPy's BLAS is loaded lazily,
and threadpoolctl can only limit libraries that are already loaded, so we import it first and
then limit *all* BLAS libraries to one thread.  Kernels parallelise with ``prange`` over image
chunks; each chunk calls single-threaded BLAS.
"""

from __future__ import annotations

import os

_state: dict = {"configured": False, "limiter": None, "threads": None}


def _default_threads() -> int:
    """``$CNNC_THREADS``, else ``$NUMBA_NUM_THREADS``, else the cores."""
    for var in ("CNNC_THREADS", "NUMBA_NUM_THREADS"):
        env = os.environ.get(var)
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                pass
    return max(1, os.cpu_count() or 1)


def configure(num_threads: int | None = None, force: bool = False) -> int:
    """Load SciPy's BLAS, pin every BLAS library to 1 thread, set Numba's thread count.

    ``num_threads`` overrides the default (env ``NUMBA_NUM_THREADS``, else ``os.cpu_count()``);
    it is clipped to Numba's launch-time maximum.  Returns the Numba thread count in use.
    Idempotent: a later call changes the thread count only when it gives one (or ``force``).
    """
    import numba

    want = _default_threads() if num_threads is None else max(1, int(num_threads))
    want = min(want, numba.config.NUMBA_NUM_THREADS)
    if _state["configured"] and not force:
        if num_threads is not None and want != _state["threads"]:
            numba.set_num_threads(want)
            _state["threads"] = want
        return _state["threads"]

    # 1. make sure the BLAS that Numba calls is loaded before threadpoolctl looks
    import numpy  # noqa: F401  (NumPy's own OpenBLAS)
    import scipy.linalg.cython_blas  # noqa: F401  (SciPy's OpenBLAS: the one Numba uses)
    from threadpoolctl import threadpool_limits

    # 2. one thread for every loaded BLAS; keep the limiter alive (it is not a context here)
    _state["limiter"] = threadpool_limits(limits=1, user_api="blas")
    # 3. Numba's pool does the parallelism
    numba.set_num_threads(want)
    _state["threads"] = want
    _state["configured"] = True
    return want


def blas_info() -> dict:
    """Small summary for ``cnnc bench``: BLAS libraries, their threads and cores, Numba pool."""
    import numba
    from threadpoolctl import threadpool_info

    libs = []
    for d in threadpool_info():
        if d.get("user_api") != "blas":
            continue
        libs.append(
            {
                "internal_api": d.get("internal_api"),
                "version": d.get("version"),
                "architecture": d.get("architecture"),
                "num_threads": d.get("num_threads"),
                "filepath": os.path.basename(d.get("filepath", "")),
            }
        )
    try:
        layer = numba.threading_layer()
    except Exception:  # no parallel region has run yet
        layer = "(not started)"
    return {
        "configured": _state["configured"],
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": libs,
    }
