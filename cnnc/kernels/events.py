"""Numba's compile events, seen as top-level kernel compilations (a kernel's compilation
includes those of the kernels it calls): the first-run notice (:mod:`cnnc.runtime.notice`)
and the compile helper (:mod:`cnnc.training.precompile`) both listen this way."""
from __future__ import annotations

from typing import Callable


def listen_top_level(on_start: Callable[[object], None], on_end: Callable[[object], None]):
    """Register a ``numba:compile`` listener that calls ``on_start(py_func)`` when a top-level
    compilation begins and ``on_end(py_func)`` when it ends (the compilations of the kernels
    it calls are part of it; ``py_func`` is None where Numba names no dispatcher). Returns
    the listener, for :func:`unlisten`."""
    from numba.core import event

    depth = [0]

    def py_func(ev):
        dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        return getattr(dispatcher, "py_func", None)

    class _Listener(event.Listener):
        def on_start(self, ev):
            depth[0] += 1
            if depth[0] == 1:
                on_start(py_func(ev))

        def on_end(self, ev):
            depth[0] = max(depth[0] - 1, 0)
            if depth[0] == 0:
                on_end(py_func(ev))

    listener = _Listener()
    event.register("numba:compile", listener)
    return listener


def unlisten(listener) -> None:
    """Unregister what :func:`listen_top_level` registered."""
    from numba.core import event

    event.unregister("numba:compile", listener)


_COMPILING = {"seconds": 0.0, "listener": None, "start": 0.0}


def compile_seconds() -> float:
    """Seconds this process has spent in top-level kernel compilations since the first call
    (which starts the count): training subtracts them from an epoch's time so that the speed
    it shows is the kernels', not Numba's."""
    if _COMPILING["listener"] is None:
        import time

        def on_start(py_func) -> None:
            _COMPILING["start"] = time.perf_counter()

        def on_end(py_func) -> None:
            _COMPILING["seconds"] += time.perf_counter() - _COMPILING["start"]

        _COMPILING["listener"] = listen_top_level(on_start, on_end)
    return _COMPILING["seconds"]
