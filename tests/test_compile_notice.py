"""The first-run notice: printed when Numba compiles a kernel, silent when nothing compiles."""
from __future__ import annotations

import numpy as np
from numba import njit

from cnnc.runtime.notice import CompileNotice


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


def _fresh():
    @njit(cache=False)
    def kernel(a):  # a new dispatcher each call of _fresh: compiling it is a cache miss
        return a.sum() + 1.0
    return kernel


def test_the_python_api_says_once_that_kernels_compile(capsys, monkeypatch):
    """Building a Network installs a watcher: the first compilation outside any CompileNotice
    prints the first-run line once; inside a CompileNotice the context speaks instead; off
    with cnnc.set_compile_notice(False)."""
    import cnnc
    from cnnc.runtime import notice

    monkeypatch.setattr(notice._Process, "said", False)
    monkeypatch.setattr(notice._Process, "enabled", True)
    cnnc.compile("fc", input="1x4x4", classes=3).network(seed=0)  # installs the watcher
    assert notice._Process.watcher is not None
    _fresh()(np.ones(2))
    _fresh()(np.ones(2))
    err = capsys.readouterr().err
    assert err.count("compiling kernels (first run only") == 1
    monkeypatch.setattr(notice._Process, "said", False)
    msgs: list[str] = []
    with CompileNotice(write=msgs.append):
        _fresh()(np.ones(2))
    assert capsys.readouterr().err == "" and msgs[0].startswith("compiling kernels")
    monkeypatch.setattr(notice._Process, "said", False)
    cnnc.set_compile_notice(False)
    try:
        _fresh()(np.ones(2))
        with CompileNotice(write=msgs.append) as quiet:
            _fresh()(np.ones(2))
        assert quiet.compiled == 1 and len(msgs) == 2  # only the earlier context's two lines
    finally:
        cnnc.set_compile_notice(True)
    assert capsys.readouterr().err == ""
