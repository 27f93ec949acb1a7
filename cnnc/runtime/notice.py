"""Telling the user why the first run waits: a line when Numba starts compiling a kernel.

Numba compiles a kernel only on a cache miss (a warm cache loads machine code and raises no
``numba:compile`` event), so the notice appears exactly when the kernel cache is cold or
stale, never on later runs. Two forms, both on stderr:

* :class:`CompileNotice`, a context manager (``cnnc train``, ``cnnc.fit``): the first
  compilation prints ``compiling kernels (first run only) ...``, and leaving it prints how many
  kernels were compiled and how long it took.
* :func:`watch`, installed once per process when a :class:`~cnnc.runtime.network.Network` is
  built (the Python API: ``m.network().forward(x)``): the same first line, once, when a kernel
  compiles outside any :class:`CompileNotice`.

Both are off with :func:`set_enabled(False) <set_enabled>` (``cnnc.set_compile_notice``) or
``CNNC_COMPILE_NOTICE=0`` in the environment. Nested compilations (a kernel calling another
one) count once, as part of the outer one.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

from ..kernels.events import listen_top_level, unlisten
from ..text import plural

FIRST_LINE = "compiling kernels (first run only; later runs load them from Numba's cache) ..."


class _Process:
    """What the notices share in a process."""
    enabled = os.environ.get("CNNC_COMPILE_NOTICE", "1") != "0"
    said = False  # the first line was printed (by either form)
    active = 0  # CompileNotice contexts open
    watcher = None  # the listener :func:`watch` registered


def set_enabled(enabled: bool) -> None:
    """Turn both notices on or off for this process."""
    _Process.enabled = bool(enabled)


def _write(msg: str, stream: TextIO | None = None) -> None:
    """A line on ``stream`` (stderr), through ``tqdm.write`` when tqdm is loaded, so that a
    progress bar is not torn."""
    stream = stream or sys.stderr
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        tqdm.tqdm.write(msg, file=stream)
    else:
        print(msg, file=stream, flush=True)


def watch() -> None:
    """Print :data:`FIRST_LINE` once, at the first kernel compilation of the process that no
    :class:`CompileNotice` reports. Idempotent; costs nothing once the kernels are cached."""
    if _Process.watcher is not None:
        return

    def on_start(py_func) -> None:
        if _Process.enabled and not _Process.said and _Process.active == 0:
            _Process.said = True
            _write(FIRST_LINE)

    _Process.watcher = listen_top_level(on_start, lambda py_func: None)


class CompileNotice:
    """Context manager: a notice on ``stream`` (stderr) while kernels compile.

    ``write`` (default: a line on ``stream``, or ``tqdm.write`` when tqdm is loaded) receives
    each message. ``helpers`` counts the compile helper processes started so far
    (:func:`cnnc.training.precompile.started`): the closing line says when one ran alongside.
    ``times`` collects ``(kernel name, seconds)`` of every top-level compilation (for
    profiling); it is collected even when the notice is disabled."""

    def __init__(self, stream: TextIO | None = None, write: Callable[[str], None] | None = None,
                 enabled: bool = True, helpers: Callable[[], int] | None = None):
        self.stream = stream
        self.enabled = enabled
        self._write = write
        self._helpers = helpers
        self.times: list[tuple[str, float]] = []
        self._start = 0.0
        self._first = None
        self._listener = None
        self._helpers_before = 0

    @property
    def _speaks(self) -> bool:
        return self.enabled and _Process.enabled

    def write(self, msg: str) -> None:
        if self._write is not None:
            self._write(msg)
        else:
            _write(msg, self.stream)

    # ---- numba events (top-level compilations)
    def _on_start(self, py_func) -> None:
        self._start = time.perf_counter()
        if self._first is None:
            self._first = self._start
            if self._speaks:
                _Process.said = True
                self.write(FIRST_LINE)

    def _on_end(self, py_func) -> None:
        self.times.append((getattr(py_func, "__qualname__", "?"), time.perf_counter() - self._start))

    @property
    def compiled(self) -> int:
        """Top-level kernels compiled while active."""
        return len(self.times)

    @property
    def seconds(self) -> float:
        return sum(t for _, t in self.times)

    def __enter__(self) -> "CompileNotice":
        self._helpers_before = self._helpers() if self._helpers else 0
        self._listener = listen_top_level(self._on_start, self._on_end)
        _Process.active += 1
        return self

    def __exit__(self, *exc) -> None:
        _Process.active -= 1
        unlisten(self._listener)
        if self._speaks and self.times and exc[0] is None:
            helped = self._helpers is not None and self._helpers() > self._helpers_before
            self.write(f"compiled {plural(self.compiled, 'kernel')} in {self.seconds:.1f} s"
                       + (", a second process compiling others alongside" if helped else "")
                       + " (cached for later runs)")
