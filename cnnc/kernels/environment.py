"""The process environment the kernels want, set when the kernel package is first imported
(:mod:`cnnc.kernels` calls :func:`prepare`; ``import cnnc`` alone changes nothing).

Two variables are read once, by libraries loaded later, so they are set here only when the
environment has not set them already:

* ``OPENBLAS_CORETYPE=SkylakeX`` on CPUs with AVX-512 (F, VL, BW). OpenBLAS picks its AVX2
  kernels on some AVX-512 CPUs; its SkylakeX ones are about 1.6x faster for large GEMMs and
  up to 2.5x for LeNet-sized ones (docs/performance.md). OpenBLAS reads the variable when
  NumPy/SciPy load it, so it takes effect only if NumPy is imported after this module: the
  command line and :mod:`cnnc.runtime` import the kernel package first; a Python program that
  imports NumPy before cnnc's runtime keeps the default kernels (``cnnc bench`` reports the
  kernels that ran).
* ``NUMBA_OPT=2``: LLVM at -O2 instead of Numba's default -O3 halves the first run's kernel
  compilation with no measurable change in kernel speed (docs/performance.md). Numba reads it
  at import, so it is set only while Numba is not loaded yet.

:data:`BLAS_CHOICE` records what was found, for ``cnnc bench``'s note on the BLAS kernels.
"""
from __future__ import annotations

import os
import sys

#: whether the CPU has AVX-512 (None: unknown) and the OPENBLAS_CORETYPE the environment had
#: set before cnnc did anything
BLAS_CHOICE: dict = {"avx512": None, "preset_coretype": None}
_prepared = False


def cpu_has_avx512() -> bool | None:
    """Whether /proc/cpuinfo lists AVX-512 F, VL and BW (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    return " avx512f" in flags and " avx512vl" in flags and " avx512bw" in flags


def prefer_avx512_blas() -> None:
    """Set OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs unless the environment set a value."""
    avx512 = cpu_has_avx512()
    BLAS_CHOICE.update(avx512=avx512, preset_coretype=os.environ.get("OPENBLAS_CORETYPE"))
    if "OPENBLAS_CORETYPE" not in os.environ and avx512:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


def faster_kernel_compiles() -> None:
    """Set NUMBA_OPT=2 unless it is set or Numba is already loaded."""
    if "NUMBA_OPT" not in os.environ and "numba" not in sys.modules:
        os.environ["NUMBA_OPT"] = "2"


def prepare() -> None:
    """Both of the above, once per process."""
    global _prepared
    if not _prepared:
        _prepared = True
        prefer_avx512_blas()
        faster_kernel_compiles()
