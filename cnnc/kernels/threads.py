"""Thread-pool setup shared by every kernel: one pool only (Numba ``prange``), BLAS at 1 thread.

Call :func:`configure` once before any kernel runs (it is idempotent and cheap afterwards).

Why (docs/performance.md, "Threads and BLAS"): Numba's ``np.dot`` -- and the ``gemm`` intrinsic in
:mod:`cnnc.kernels.blas`, which goes through the same Numba helper -- calls the OpenBLAS that
ships with SciPy (``scipy.linalg.cython_blas``), not NumPy's.  SciPy's BLAS is loaded lazily,
and threadpoolctl can only limit libraries that are already loaded, so we import it first and
then limit *all* BLAS libraries to one thread.  Kernels parallelise with ``prange`` over image
chunks; each chunk calls single-threaded BLAS.
"""

from __future__ import annotations

import os

_state: dict = {"configured": False, "limiter": None, "threads": None, "auto": False}


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _running_threads(path: str) -> int:
    n = 0
    try:
        for task in os.listdir(path):
            try:
                with open(f"{path}/{task}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"R":
                n += 1
    except OSError:
        return 0
    return n


def busy_cores() -> int:
    """Cores other processes keep busy now: the runnable threads of the machine
    (``/proc/loadavg``) less this process's own, the median of a few samples; 0 where
    Linux's /proc is not there."""
    import time

    samples = []
    for _ in range(5):
        try:
            with open("/proc/loadavg", "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        samples.append(max(0, running - _running_threads("/proc/self/task")))
        time.sleep(0.002)
    return sorted(samples)[len(samples) // 2]


def work_chunks() -> int:
    """How many pieces the kernels split a batch into (each with its own partial sums):
    Numba's pool size, fixed for the process. Results then do not depend on how many
    threads happen to run the pieces, so :func:`adapt` changes speed, never numbers."""
    import numba

    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def auto_threads() -> int:
    """The idle cores, at least 1. On a shared machine a kernel that waits at every
    parallel region for a thread the scheduler has put aside is many times slower than one
    thread (measured: LeNet-5 step 184 ms with 2 threads, 16 ms with 1, beside 4 busy
    processes on 2 cores), so cnnc uses only the cores nothing else is using."""
    return max(1, cores() - busy_cores())


def _default_threads() -> int:
    """``$CNNC_THREADS``, else ``$NUMBA_NUM_THREADS``, else the idle cores (:func:`auto_threads`)."""
    for var in ("CNNC_THREADS", "NUMBA_NUM_THREADS"):
        env = os.environ.get(var)
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                pass
    return auto_threads()


def _is_auto() -> bool:
    return not (os.environ.get("CNNC_THREADS") or os.environ.get("NUMBA_NUM_THREADS"))


def adapt() -> int:
    """Re-count the idle cores and follow them, when the thread count was chosen automatically
    (no ``--threads``, ``CNNC_THREADS`` or ``NUMBA_NUM_THREADS``); call it between steps."""
    if not (_state["configured"] and _state["auto"]):
        return _state["threads"] or 1
    import numba

    want = min(auto_threads(), numba.config.NUMBA_NUM_THREADS)
    if want != _state["threads"]:
        numba.set_num_threads(want)
        _state["threads"] = want
    return want


def configure(num_threads: int | None = None, force: bool = False) -> int:
    """Load SciPy's BLAS, pin every BLAS library to 1 thread, set Numba's thread count.

    ``num_threads`` overrides the default (``$CNNC_THREADS``, ``$NUMBA_NUM_THREADS``, else the
    idle cores: :func:`auto_threads`);
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
        if num_threads is not None:
            _state["auto"] = False
        return _state["threads"]
    _state["auto"] = num_threads is None and _is_auto()

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
