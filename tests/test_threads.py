"""The kernel thread count: explicit (--threads, CNNC_THREADS) or the idle cores."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cnnc.kernels import threads


def test_busy_cores_counts_other_processes_not_our_own_threads():
    spin = "import time\nt = time.time()\nwhile time.time() - t < 20: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(threads.cores())]
    try:
        time.sleep(0.5)
        assert threads.busy_cores() >= threads.cores()  # a spinner on every core
        assert threads.auto_threads() == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_explicit_thread_counts_win(monkeypatch):
    monkeypatch.setenv("CNNC_THREADS", "1")
    assert threads._default_threads() == 1
    assert not threads._is_auto()
    monkeypatch.delenv("CNNC_THREADS")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    assert threads._is_auto()
    assert 1 <= threads._default_threads() <= threads.cores()


@pytest.mark.slow  # cnnc bench in a subprocess
def test_cli_threads_flag_reaches_the_kernels(tmp_path):
    (tmp_path / "m.cnn").write_text("input 1x8x8\nclasses 3\nconv3(4) - relu - fc\n")
    code = ("import sys\nfrom cnnc.cli.main import main\n"
            f"main(['bench', {str(tmp_path / 'm.cnn')!r}, '--batch', '4', '--steps', '1', "
            "'--repeats', '1', '--no-compile-times', '--threads', '1', '--json'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CNNC_THREADS", "NUMBA_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["threads"] == 1


def test_results_do_not_depend_on_how_many_threads_run():
    """The kernels split a batch into a fixed number of chunks: one thread or all of them
    give bitwise the same training step (so following the idle cores changes no number)."""
    import numba
    import numpy as np

    import cnnc

    if numba.config.NUMBA_NUM_THREADS < 2:
        import pytest

        pytest.skip("one core: a single thread count exists")
    m = cnnc.compile("conv3(32) - bn - relu - conv3(32) - relu - pool - conv3(8, stride=2, pad=1) - fc(10) - fc",
                     input="3x12x12", classes=4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 4, 9)
    threads.configure()
    results = []
    for n in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(n)
        net = m.network(seed=0)
        loss, _ = net.loss_and_grads(x, y, input_grad=True)
        results.append((loss, net.grad.copy(), net.forward(x)))
    numba.set_num_threads(threads._state["threads"])
    (l1, g1, f1), (l2, g2, f2) = results
    assert l1 == l2
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(f1, f2)


def _fake_blas(monkeypatch, arch: str, avx512: bool, preset):
    from cnnc.kernels.environment import BLAS_CHOICE
    from cnnc.tools import bench

    monkeypatch.setitem(BLAS_CHOICE, "avx512", avx512)
    monkeypatch.setitem(BLAS_CHOICE, "preset_coretype", preset)
    monkeypatch.setattr(threads, "blas_info", lambda: {"blas": [{"architecture": arch}]})
    return bench.blas_note()


def test_bench_warns_when_the_environment_pins_slower_blas_kernels(monkeypatch):
    note = _fake_blas(monkeypatch, "Haswell", True, "Haswell")
    assert note["kernels"] == ["Haswell"] and "OPENBLAS_CORETYPE=Haswell" in note["warning"]
    # no warning: the CPU has no AVX-512, nothing was preset, or the kernels are AVX-512 ones
    assert _fake_blas(monkeypatch, "Haswell", False, "Haswell")["warning"] is None
    assert _fake_blas(monkeypatch, "Haswell", True, None)["warning"] is None
    assert _fake_blas(monkeypatch, "SkylakeX", True, "SkylakeX")["warning"] is None


def test_cnnc_selects_avx512_blas_kernels_only_when_nothing_is_set(monkeypatch):
    """With OPENBLAS_CORETYPE unset cnnc sets SkylakeX on AVX-512 CPUs; a value from the
    environment is kept. (In-process: NumPy's BLAS is loaded already, so nothing changes for
    this process; the environment is restored afterwards.)"""
    from cnnc.kernels import environment as env

    saved = dict(env.BLAS_CHOICE)
    try:
        monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
        env.prefer_avx512_blas()
        assert os.environ.get("OPENBLAS_CORETYPE") == ("SkylakeX" if env.BLAS_CHOICE["avx512"] else None)
        assert env.BLAS_CHOICE["preset_coretype"] is None
        monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
        env.prefer_avx512_blas()
        assert os.environ["OPENBLAS_CORETYPE"] == "Zen" and env.BLAS_CHOICE["preset_coretype"] == "Zen"
    finally:
        env.BLAS_CHOICE.update(saved)
