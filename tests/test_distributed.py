"""Data-parallel training over MPI: the collectives' math in-process (two simulated ranks
in threads), and real ``mpiexec`` jobs of two ranks when the MPI extra is installed."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from cnnc.kernels import norm_sync
from cnnc.runtime import distributed as D
from cnnc.kernels import norm as bn_kernels


class ThreadWorld(D.World):
    """One rank of a job simulated with threads: allreduce_sum sums through a barrier."""

    def __init__(self, rank: int, size: int, shared: dict, barrier: threading.Barrier):
        super().__init__(rank, size, None)
        self.shared, self.barrier = shared, barrier

    def allreduce_sum(self, a):
        self.shared[self.rank] = a.copy()
        self.barrier.wait()
        total = sum(self.shared[r] for r in range(self.size))
        self.barrier.wait()
        a[...] = total


def run_ranks(size, fn):
    shared, barrier = {}, threading.Barrier(size)
    out = [None] * size
    errors = []

    def body(r):
        try:
            out[r] = fn(ThreadWorld(r, size, shared, barrier))
        except BaseException as err:  # noqa: BLE001  (reported below)
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize("shape", [(8, 3, 4, 5), (6, 4, 1, 1)])
def test_synchronized_batch_norm_equals_one_process_over_the_whole_batch(shape):
    """Two ranks with half the batch each compute the statistics, outputs, running
    statistics and gradients that one process computes on the whole batch (float64)."""
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    eps, mom = 1e-5, 0.1
    # one process, the kernels
    y = np.empty_like(x)
    mean, invstd, rm, rv = np.empty(c), np.empty(c), rm0.copy(), rv0.copy()
    bn_kernels.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, mom, eps)
    dx, dg, db = np.empty_like(x), np.empty(c), np.empty(c)
    bn_kernels.batchnorm_backward(x, gamma, dy, mean, invstd, dx, dg, db, True)

    def rank(world):
        sl = slice(world.rank, None, world.size)
        xr, dyr = np.ascontiguousarray(x[sl]), np.ascontiguousarray(dy[sl])
        yr = np.empty_like(xr)
        m, s, rmr, rvr = np.empty(c), np.empty(c), rm0.copy(), rv0.copy()
        norm_sync.batchnorm_forward_sync(world, xr, gamma, beta, yr, m, s, rmr, rvr, mom, eps)
        dxr, dgr, dbr = np.empty_like(xr), np.empty(c), np.empty(c)
        norm_sync.batchnorm_backward_sync(world, xr, gamma, dyr, m, s, dxr, dgr, dbr, True)
        return yr, rmr, rvr, dxr, dgr, dbr

    results = run_ranks(2, rank)
    for r, (yr, rmr, rvr, dxr, dgr, dbr) in enumerate(results):
        np.testing.assert_allclose(yr, y[r::2], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rmr, rm, rtol=1e-12)
        np.testing.assert_allclose(rvr, rv, rtol=1e-10)
        np.testing.assert_allclose(dxr, dx[r::2], rtol=1e-9, atol=1e-12)
    # each rank holds its share of dgamma/dbeta: the gradient Allreduce sums them
    np.testing.assert_allclose(results[0][4] + results[1][4], dg, rtol=1e-10)
    np.testing.assert_allclose(results[0][5] + results[1][5], db, rtol=1e-10)


def test_world_outside_mpi_is_a_single_rank(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(D, "_WORLD", None)
    w = D.world()
    assert (w.rank, w.size, w.is_root) == (0, 1, True)
    a = np.arange(3.0)
    w.allreduce_sum(a)
    np.testing.assert_array_equal(a, [0, 1, 2])
    assert w.any(True) and not w.any(False)
    assert w.broadcast_text("runs/x") == "runs/x"


def test_launcher_message_names_the_rank():
    banner = ("=" * 83 + "\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"
              "=   PID 4242 RUNNING AT host1\n=   EXIT CODE: 9\n=   CLEANING UP REMAINING PROCESSES\n"
              + "=" * 83 + "\nYOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n")
    msg = D._failure_message(banner, {4242: 1}, 9)
    assert msg.startswith("rank 1 (pid 4242 on host1)") and "signal 9" in msg
    assert D._failure_message("Abort(1) on node 1 (rank 1 in comm 0)", {}, 1) is None


# ---------------------------------------------------------------------------------------
# real jobs: cnnc train --workers 2 (mpiexec, 2 ranks)
# ---------------------------------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from conftest import MODELS_DIR  # noqa: E402

try:
    import mpi4py  # noqa: F401

    HAVE_MPI = D.find_mpiexec() is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason='the MPI extra is not installed (pip install ".[mpi]")')

BN_NET = """input 1x8x8
classes 10
conv3(8, bias=false) - bn - relu - pool - conv3(16) - bn - relu - gap - fc(32) - bn - relu - fc
"""
# a residual block: its bn runs the add and the ReLU after it (synchronized statistics, then
# the shortcut added)
RES_NET = """input 1x8x8
classes 10
conv3(8, bias=false) - bn - relu - (conv3(8, bias=false) - bn - relu - conv3(8, bias=false) - bn + id) - relu - gap - fc
"""
COMMON = ["--data", "digits", "--batch", "32", "--limit", "320", "--quiet", "--json"]


def cnnc(*args, cwd, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def params(run: Path) -> dict:
    from cnnc.training.runs import load_checkpoint

    arrays, meta = load_checkpoint(run / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith("param.")}, meta


def assert_same_weights(a: Path, b: Path, tol=2e-5):
    pa, ma = params(a)
    pb, mb = params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=tol, atol=tol, err_msg=k)
    assert ma["position"]["epoch"] == mb["position"]["epoch"]


@pytest.fixture
def models(tmp_path):
    shutil.copy(MODELS_DIR / "lenet5.cnn", tmp_path / "lenet5.cnn")
    (tmp_path / "bn.cnn").write_text(BN_NET)
    (tmp_path / "res.cnn").write_text(RES_NET)
    return tmp_path


@pytest.mark.slow  # an MPI job (mpiexec, 2 ranks)
@needs_mpi
@pytest.mark.parametrize("model, extra", [("lenet5.cnn", ["--fit", "--augment", "none"]), ("bn.cnn", []),
                                          ("res.cnn", [])])  # augmentation is drawn per rank: off
def test_two_ranks_end_where_one_process_ends(models, model, extra):
    """Same seed, same global batch: 2 ranks (half the batch each, gradients summed, batch
    norm synchronized) end with the weights of 1 process, within float tolerance."""
    one = cnnc("train", model, *COMMON, *extra, "--epochs", 2, "--out", "one", cwd=models)
    assert one.returncode == 0, one.stderr
    two = cnnc("train", model, *COMMON, *extra, "--epochs", 2, "--out", "two", "--workers", 2, cwd=models)
    assert two.returncode == 0, two.stderr
    assert "Traceback" not in two.stderr
    import json

    metrics = json.loads(two.stdout)  # printed once, by rank 0
    assert metrics["ranks"] == 2 and metrics["epochs"] == 2
    assert_same_weights(models / "one", models / "two")


@pytest.mark.slow  # an MPI job (mpiexec, 2 ranks)
@needs_mpi
def test_resume_across_rank_counts(models):
    """A 2-rank run resumed by 1 process, and a 1-process run resumed by 2 ranks, both end
    where an uninterrupted run ends."""
    full = cnnc("train", "bn.cnn", *COMMON, "--epochs", 2, "--out", "full", cwd=models)
    assert full.returncode == 0, full.stderr
    for first, second, name in ((2, 1, "a"), (1, 2, "b")):
        w1 = ["--workers", 2] if first == 2 else []
        w2 = ["--workers", 2] if second == 2 else []
        r = cnnc("train", "bn.cnn", *COMMON, "--epochs", 1, "--out", name, *w1, cwd=models)
        assert r.returncode == 0, r.stderr
        r = cnnc("train", "bn.cnn", "--epochs", 2, "--resume", name, "--quiet", *w2, cwd=models)
        assert r.returncode == 0, r.stderr
        assert_same_weights(models / "full", models / name)


def _wait_for(path: Path, proc, timeout=120):
    t = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t < timeout, f"{path} did not appear"
        time.sleep(0.1)


@pytest.mark.slow  # an MPI job (mpiexec, 2 ranks)
@needs_mpi
def test_a_killed_rank_ends_the_job_and_the_checkpoint_survives(models):
    pid_dir = models / "pids"
    pid_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "train", "bn.cnn", "--data", "digits",
                             "--batch", "32", "--epochs", "500", "--out", "run", "--quiet",
                             "--workers", "2"], cwd=models, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **{D.RANK_PID_DIR: str(pid_dir)}))
    try:
        _wait_for(models / "run" / "checkpoint.npz", proc)
        victim = int((pid_dir / "rank1").read_text())
        os.kill(victim, signal.SIGKILL)
        # the job ends by itself (500 epochs are far off); the timeout only guards against a hang
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None)
    assert "rank 1" in err and "Traceback" not in err, err
    assert "BAD TERMINATION" not in out + err
    p, meta = params(models / "run")  # loadable
    assert meta["position"]["epoch"] >= 1 and p and meta["finished"] is False


@pytest.mark.slow  # an MPI job (mpiexec, 2 ranks)
@needs_mpi
def test_ctrl_c_saves_once_and_every_rank_exits_130(models):
    proc = subprocess.Popen([sys.executable, "-m", "cnnc", "train", "bn.cnn", "--data", "digits",
                             "--batch", "32", "--epochs", "500", "--out", "run", "--quiet",
                             "--workers", "2"], cwd=models, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(models / "run" / "checkpoint.npz", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert err.count("interrupted at epoch") == 1, err  # rank 0 saves and says so, once
    _, meta = params(models / "run")
    assert meta["finished"] is False


def test_workers_without_the_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    from cnnc.cli.main import main

    code = main(["train", str(MODELS_DIR / "digits.cnn"), "--workers", "2", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "mpi4py" in err and 'pip install "cnnc[mpi]"' in err and "Traceback" not in err
    code = main(["train", str(MODELS_DIR / "digits.cnn"), "--workers", "0"])
    assert code == 1 and "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.slow  # MPI jobs (mpiexec, 2 ranks)
@needs_mpi
@pytest.mark.parametrize("point,epoch", [("before-manifest:2", 1), ("after-manifest:2", 2)])
def test_a_job_killed_while_rank_0_commits_resumes_bit_identical(models, point, epoch):
    """Issue 25 under MPI: rank 0, the one rank that writes, is killed (SIGKILL) inside the
    commit of epoch 2, before or after the manifest's rename; the job ends, the run folder
    holds one consistent epoch, and a 2-rank --resume ends bit-identical to an uninterrupted
    2-rank run."""
    from cnnc.training.runs import find_checkpoint, load_training_checkpoint
    from conftest import assert_same_params

    args = ["bn.cnn", *COMMON, "--epochs", 3, "--workers", 2]
    full = cnnc("train", *args, "--out", "full", cwd=models)
    assert full.returncode == 0, full.stderr
    killed = cnnc("train", *args, "--out", "killed", cwd=models, env={"CNNC_CRASH_AT": point})
    assert killed.returncode != 0 and "Traceback" not in killed.stderr
    _, meta = load_training_checkpoint(find_checkpoint(models / "killed"))
    assert meta["position"]["epoch"] == epoch and meta["position"]["iteration"] == 0
    again = cnnc("train", "bn.cnn", "--resume", "killed", "--quiet", "--workers", 2, cwd=models)
    assert again.returncode == 0, again.stderr
    assert_same_params(models / "full" / "checkpoint.npz", models / "killed" / "checkpoint.npz")
