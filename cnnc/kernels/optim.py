"""Optimizer update kernels on flat parameter arrays.

p, g and the state arrays (v; m, v) are 1-D, same length and float dtype (float32 in
training): the caller keeps a model's parameters and gradients in one or a few flat arrays.
Updates run in place, one ``prange`` loop over the elements. Hyperparameters are
runtime scalars, so one compiled specialization serves every setting.
"""

from __future__ import annotations

import math

from numba import njit, prange

__all__ = ["sgd_update", "adam_update", "ema_update"]


@njit(cache=True, parallel=True, error_model="numpy")
def sgd_update(p, g, v, lr, momentum, weight_decay, nesterov):
    """One step of torch.optim.SGD (dampening 0). p, g, v: (n,); p and v updated in place.

    d = g + weight_decay*p; if momentum != 0: v = momentum*v + d, and d = d + momentum*v
    (nesterov) or d = v; then p -= lr*d. ``v`` starts at zeros (equivalent to PyTorch's
    first-step ``v = g`` with dampening 0) and is not touched when momentum == 0.
    """
    n = p.shape[0]
    use_momentum = momentum != 0.0
    for i in prange(n):
        d = g[i] + weight_decay * p[i]
        if use_momentum:
            buf = momentum * v[i] + d
            v[i] = buf
            if nesterov:
                d = d + momentum * buf
            else:
                d = buf
        p[i] = p[i] - lr * d


@njit(cache=True, parallel=True, error_model="numpy")
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """One step of torch.optim.Adam (``decoupled=False``: L2 term weight_decay*p added to the
    gradient) or torch.optim.AdamW (``decoupled=True``: p *= 1 - lr*weight_decay first).

    p, g, m, v: (n,); p, m, v updated in place. ``step`` is the 1-based step count used for
    bias correction. Not AMSGrad.
    """
    n = p.shape[0]
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    step_size = lr / bc1
    decay = 1.0 - lr * weight_decay
    for i in prange(n):
        pi = p[i]
        gi = g[i]
        if decoupled:
            pi = pi * decay
        else:
            gi = gi + weight_decay * pi
        mi = m[i] + (1.0 - beta1) * (gi - m[i])
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)


@njit(cache=True, parallel=True, error_model="numpy")
def ema_update(avg, p, decay):
    """In place: ``avg = decay * avg + (1 - decay) * p`` (each element computed in float64)."""
    keep = 1.0 - decay
    for i in prange(avg.shape[0]):
        avg[i] = decay * avg[i] + keep * p[i]
