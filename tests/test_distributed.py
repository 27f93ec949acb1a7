"""Data-parallel training over MPI: the collectives' math in-process (two simulated ranks
in threads), and real ``mpiexec`` jobs of two ranks when the MPI extra is installed."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from cnnc import distributed as D
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
    n, c = shape[0], shape[1]
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
        D.bn_forward_sync(world, xr, gamma, beta, yr, m, s, rmr, rvr, mom, eps)
        dxr, dgr, dbr = np.empty_like(xr), np.empty(c), np.empty(c)
        D.bn_backward_sync(world, xr, gamma, dyr, m, s, dxr, dgr, dbr, True)
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
