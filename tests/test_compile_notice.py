"""The first-run notice: printed when Numba compiles a kernel, silent when nothing compiles."""
from __future__ import annotations

import numpy as np
from numba import njit

from cnnc.training.notice import CompileNotice


def test_notice_on_compile_and_silence_when_compiled():
    @njit(cache=False)
    def _fresh_kernel(a):  # a new dispatcher: compiling it is a cache miss
        return a.sum() * 2.0

    msgs: list[str] = []
    with CompileNotice(write=msgs.append) as n:
        assert _fresh_kernel(np.ones(3)) == 6.0
    assert n.compiled == 1 and n.times[0][0].endswith("_fresh_kernel")
    assert msgs[0].startswith("compiling kernels (first run only")
    assert msgs[-1].startswith("compiled 1 kernel in")
    again: list[str] = []
    with CompileNotice(write=again.append) as n2:
        _fresh_kernel(np.ones(4))  # same signature: no compilation, no message
    assert n2.compiled == 0 and again == []
    quiet: list[str] = []
    with CompileNotice(write=quiet.append, enabled=False) as n3:
        _fresh_kernel(np.ones(2, np.float32))  # a new signature compiles, but quietly
    assert n3.compiled == 1 and quiet == []
