"""Telling the user why the first run waits: a line when Numba starts compiling a kernel.

Numba compiles a kernel only on a cache miss (a warm cache loads machine code and raises no
``numba:compile`` event), so the notice appears exactly when the kernel cache is cold or
stale, never on later runs. While :class:`CompileNotice` is active the first compilation
prints ``compiling kernels (first run only) ...`` on stderr, and leaving it prints how many
kernels were compiled and how long it took. Nested compilations (a kernel calling another
one) count once, as part of the outer one.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from ..kernels.events import listen_top_level, unlisten
from ..text import plural


class CompileNotice:
    """Context manager: a notice on ``stream`` (stderr) while kernels compile.

    ``write`` (default: print a line on ``stream``, or ``tqdm.write`` when tqdm is loaded,
    so that a progress bar is not torn) receives each message. ``times`` collects
    ``(kernel name, seconds)`` of every top-level compilation (for profiling)."""

    def __init__(self, stream: TextIO | None = None, write: Callable[[str], None] | None = None,
                 enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self._write = write
        self.times: list[tuple[str, float]] = []
        self._start = 0.0
        self._first = None
        self._listener = None

    def write(self, msg: str) -> None:
        if self._write is not None:
            self._write(msg)
            return
        stream = self.stream or sys.stderr
        tqdm = sys.modules.get("tqdm")
        if tqdm is not None:
            tqdm.tqdm.write(msg, file=stream)
        else:
            print(msg, file=stream, flush=True)

    # ---- numba events (top-level compilations)
    def _on_start(self, py_func) -> None:
        self._start = time.perf_counter()
        if self._first is None:
            self._first = self._start
            if self.enabled:
                self.write("compiling kernels (first run only; later runs load them from Numba's cache) ...")

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
        from . import precompile

        self._helpers = precompile.started()
        self._listener = listen_top_level(self._on_start, self._on_end)
        return self

    def __exit__(self, *exc) -> None:
        unlisten(self._listener)
        if self.enabled and self.times and exc[0] is None:
            from . import precompile

            helped = precompile.started() > self._helpers
            self.write(f"compiled {plural(self.compiled, 'kernel')} in {self.seconds:.1f} s"
                       + (", a second process compiling others alongside" if helped else "")
                       + " (cached for later runs)")
