"""Synchronized batch norm for data-parallel training: the training forward and backward of
batch norm over the global batch, when each rank holds a share of it (NumPy; the per-channel
sums of a step are summed over the ranks by ``world.allreduce_sum``, an in-place sum of a
float64 array over every rank, see :class:`cnnc.runtime.distributed.World`).

Shapes: x4, y4, dy4, dx4 (n, C, H, W) on this rank; gamma, beta, mean, invstd, running
statistics, dgamma, dbeta (C,).
"""
from __future__ import annotations

import numpy as np


def batchnorm_forward_sync(world, x4, gamma, beta, y4, mean, invstd, running_mean, running_var,
                    momentum: float, eps: float) -> None:
    """Training-mode batch norm over the global batch: x4, y4 (n, C, H, W) on this rank;
    mean/invstd (C,) are written (global statistics); the running statistics are updated
    with the unbiased global variance, as one process over the whole batch does."""
    c = x4.shape[1]
    sums = np.empty(2 * c + 1, np.float64)
    sums[:c] = x4.sum(axis=(0, 2, 3), dtype=np.float64)
    sums[c:2 * c] = np.square(x4, dtype=np.float64).sum(axis=(0, 2, 3))
    sums[2 * c] = x4.shape[0] * x4.shape[2] * x4.shape[3]
    world.allreduce_sum(sums)
    m = sums[2 * c]
    mu = sums[:c] / m
    var = np.maximum(sums[c:2 * c] / m - mu * mu, 0.0)
    mean[...] = mu
    invstd[...] = 1.0 / np.sqrt(var + eps)
    scale = (gamma * invstd).astype(x4.dtype)
    shift = (beta - mu * gamma * invstd).astype(x4.dtype)
    np.multiply(x4, scale.reshape(1, -1, 1, 1), out=y4)
    y4 += shift.reshape(1, -1, 1, 1)
    unbiased = var * m / max(m - 1, 1)
    running_mean[...] = (1.0 - momentum) * running_mean + momentum * mu
    running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased


def batchnorm_backward_sync(world, x4, gamma, dy4, mean, invstd, dx4, dgamma, dbeta,
                     need_dx: bool) -> None:
    """The backward of :func:`batchnorm_forward_sync`: dgamma/dbeta are this rank's share (the
    flat gradient Allreduce sums them); dx uses the sums over every rank."""
    c = x4.shape[1]
    xhat = (x4 - mean.reshape(1, -1, 1, 1).astype(x4.dtype)) * invstd.reshape(1, -1, 1, 1).astype(x4.dtype)
    local_db = dy4.sum(axis=(0, 2, 3), dtype=np.float64)
    local_dg = (dy4 * xhat).sum(axis=(0, 2, 3), dtype=np.float64)
    dbeta[...] = local_db
    dgamma[...] = local_dg
    if not need_dx:
        return
    sums = np.empty(2 * c + 1, np.float64)
    sums[:c], sums[c:2 * c] = local_db, local_dg
    sums[2 * c] = x4.shape[0] * x4.shape[2] * x4.shape[3]
    world.allreduce_sum(sums)
    m = sums[2 * c]
    k = (gamma * invstd / m).reshape(1, -1, 1, 1)
    dx4[...] = k * (m * dy4 - sums[:c].reshape(1, -1, 1, 1) - xhat * sums[c:2 * c].reshape(1, -1, 1, 1))
