"""Serial twins of parallel kernels, for work too small to wake a thread for.

A ``parallel=True`` kernel pays for its parallel region at every call: 2-5 us on the 2-core
machine, more than the whole work of a small layer at batch 1 (LeNet-5's pooling and fully
connected layers: 0.6-2.6 us each without it). :func:`serial_twin` compiles the same Python
body without ``parallel``: every ``prange`` runs as a plain loop over the same pieces, so
the twin computes exactly what the parallel kernel computes, bit for bit. The ``*_call``
functions of the kernel modules pick the twin for one image of little work; each twin
compiles (and is cached) only when first used.
"""
from __future__ import annotations

import types

from numba import njit

#: at most this many elements of work (output values, or weights read) for a serial twin
SERIAL_MAX = 1 << 16


def serial_twin(kernel, name: str):
    """``kernel``'s body compiled without ``parallel``, under ``name``: a name of its own,
    because Numba keys its on-disk cache by the function's qualified name, and a second
    kernel from the same body under the same name would load the first one's machine code."""
    f = kernel.py_func
    body = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    body.__qualname__ = name
    body.__module__ = f.__module__
    body.__doc__ = f"Serial twin of :func:`{f.__name__}` (:mod:`cnnc.kernels.serial`)."
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("parallel", "nopython")}
    return njit(cache=True, **options)(body)


_TWINS: dict = {}


def twin(kernel):
    """The serial twin of ``kernel``, named after it (``<name>_serial``), made at its first use."""
    made = _TWINS.get(kernel)
    if made is None:
        made = _TWINS[kernel] = serial_twin(kernel, kernel.py_func.__name__ + "_serial")
    return made


def pick(kernel, images: int, work: int):
    """``kernel``, or its serial twin for one image of at most :data:`SERIAL_MAX` elements
    of work."""
    return twin(kernel) if images == 1 and work <= SERIAL_MAX else kernel
