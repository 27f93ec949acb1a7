"""Kernel arithmetic run by the interpreter, for Python code: nothing to compile.

The workspace-size functions are ``@njit`` because kernels call them, and Python code calls
them too, to size buffers and choose paths. Called from Python, a dispatcher compiles
first: 0.2-0.4 s each on a cold cache, 1 s of the digits example's first run before its
first convolution kernel could start compiling. :func:`host` gives the same function run as
plain Python: its code, with every ``@njit`` function it calls replaced by that function's
own host twin. It is meant for integer arithmetic (sizes, offsets), where the interpreter
and the kernel agree exactly; a kernel that loops over arrays stays a kernel. Twins remember
their results (the layers ask the same sizes at every call): 0.11 us a call, against 0.33
us for the compiled kernel's dispatch and 0.47 us for the twin recomputing them.
"""
from __future__ import annotations

import functools
import types
from typing import Callable

_TWINS: dict[object, Callable] = {}


def _is_dispatcher(value) -> bool:
    return hasattr(value, "py_func") and hasattr(value, "overloads")


def host(kernel) -> Callable:
    """The plain-Python twin of the ``@njit`` function ``kernel`` (memoized; its arguments
    must be hashable: integers)."""
    twin = _TWINS.get(kernel)
    if twin is None:
        py = kernel.py_func
        names = py.__code__.co_names
        scope = dict(py.__globals__)
        for name in names:
            if _is_dispatcher(scope.get(name)):
                scope[name] = host(scope[name])
        plain = types.FunctionType(py.__code__, scope, py.__name__, py.__defaults__, py.__closure__)
        plain.__doc__ = py.__doc__
        plain.__qualname__ = py.__qualname__
        twin = _TWINS[kernel] = functools.lru_cache(maxsize=4096)(plain)
    return twin
