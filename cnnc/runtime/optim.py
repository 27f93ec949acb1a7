"""Optimizers over a network's flat parameter array, and learning-rate schedules.

The update rules match ``torch.optim.SGD`` (momentum, dampening 0, Nesterov, L2 weight
decay added to the gradient), ``torch.optim.Adam`` (L2) and ``torch.optim.AdamW``
(decoupled decay); the kernels are in :mod:`cnnc.kernels.optim`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..lang.settings import SETTING_KEYS

OPTIMIZERS = SETTING_KEYS["optimizer"].choices
SCHEDULES = SETTING_KEYS["schedule"].choices


class Optimizer:
    """Holds the optimizer state (arrays of the parameters' size) and applies steps."""

    def __init__(self, kind: str, theta: np.ndarray, grad: np.ndarray, *, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8):
        if kind not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {kind!r}", hint="choose sgd, adam or adamw")
        if nesterov and (kind != "sgd" or momentum <= 0):
            raise UsageError("nesterov needs the sgd optimizer with momentum > 0")
        from ..kernels import memory
        from ..kernels import optim as k

        self.k = k
        self.kind = kind
        self.theta, self.grad = theta, grad
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.steps = 0
        self.m = memory.zeros_like(theta)
        self.v = memory.zeros_like(theta) if kind != "sgd" else self.m

    def step(self, lr: float) -> None:
        self.steps += 1
        if self.kind == "sgd":
            self.k.sgd_update(self.theta, self.grad, self.m, lr, self.momentum, self.weight_decay,
                              self.nesterov)
        else:
            self.k.adam_update(self.theta, self.grad, self.m, self.v, lr, self.beta1, self.beta2,
                               self.eps, self.weight_decay, self.steps, self.kind == "adamw")

    def state(self) -> dict[str, np.ndarray]:
        out = {"optim.m": self.m.copy(), "optim.steps": np.array(self.steps, np.int64)}
        if self.kind != "sgd":
            out["optim.v"] = self.v.copy()
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.m[...] = state["optim.m"]
        if self.kind != "sgd":
            self.v[...] = state["optim.v"]
        self.steps = int(state["optim.steps"])


@dataclass(frozen=True)
class Schedule:
    """Learning rate per step: linear warm-up over ``warmup`` epochs, then constant, step
    decay (x ``gamma`` every ``step_size`` epochs) or cosine to zero over the rest; or
    ``onecycle``, a triangle over all ``T = epochs * steps_per_epoch`` steps: step ``s``
    (0-based, ``u = s + 1``) gets ``base_lr * u / W`` while ``u <= W = max(1, round(peak *
    T))``, then ``base_lr * (T - u + 1) / (T - W + 1)`` (down linearly, the last step at
    ``base_lr / (T - W + 1)``); ``warmup`` epochs, when given, set ``W`` instead of ``peak``."""

    base_lr: float
    kind: str = "constant"
    epochs: int = 1
    steps_per_epoch: int = 1
    warmup: int = 0
    step_size: int = 30
    gamma: float = 0.1
    peak: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.kind!r}", hint="choose " + ", ".join(SCHEDULES))

    def lr(self, epoch: int, iteration: int) -> float:
        """``epoch`` 0-based, ``iteration`` the step within the epoch."""
        if self.kind == "onecycle":
            return self._onecycle(epoch * self.steps_per_epoch + iteration)
        t = epoch + iteration / max(self.steps_per_epoch, 1)  # epochs done, fractional
        if self.warmup and t < self.warmup:
            return self.base_lr * (t + 1 / max(self.steps_per_epoch, 1)) / self.warmup
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "step":
            return self.base_lr * self.gamma ** (epoch // self.step_size)
        span = max(self.epochs - self.warmup, 1e-9)
        progress = min(max((t - self.warmup) / span, 0.0), 1.0)
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * progress))

    def _onecycle(self, step: int) -> float:
        total = max(self.epochs * self.steps_per_epoch, 1)
        rise = self.warmup * self.steps_per_epoch if self.warmup else round(self.peak * total)
        rise = min(max(rise, 1), total)
        u = min(step + 1, total)
        if u <= rise:
            return self.base_lr * u / rise
        return self.base_lr * (total - u + 1) / (total - rise + 1)


class WeightAverage:
    """An exponential moving average of the parameters (and batch-norm buffers): after each
    optimizer step ``n`` (1-based), ``avg = d * avg + (1 - d) * theta`` with ``d = min(decay,
    (1 + n) / (10 + n))`` (the warm-up of TensorFlow's ExponentialMovingAverage, so the
    average of a short run is not dominated by the initialization). ``swapped()`` puts the
    average in the network for evaluation and the training weights back after."""

    def __init__(self, decay: float, theta: np.ndarray, buffers: np.ndarray):
        self.decay = float(decay)
        self.theta, self.buffers = theta, buffers
        self.avg_theta = theta.copy()
        self.avg_buffers = buffers.copy()
        self.steps = 0

    def rate(self, n: int) -> float:
        """The decay used at update ``n`` (1-based)."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def update(self) -> None:
        self.steps += 1
        d = self.rate(self.steps)
        from ..kernels.optim import ema_update

        ema_update(self.avg_theta, self.theta, d)
        ema_update(self.avg_buffers, self.buffers, d)

    def swapped(self):
        """A context in which the network holds the averaged weights."""
        import contextlib

        @contextlib.contextmanager
        def swap():
            keep_t, keep_b = self.theta.copy(), self.buffers.copy()
            self.theta[...] = self.avg_theta
            self.buffers[...] = self.avg_buffers
            try:
                yield
            finally:
                self.theta[...] = keep_t
                self.buffers[...] = keep_b
        return swap()

    def state(self) -> dict[str, np.ndarray]:
        return {"ema.theta": self.avg_theta.copy(), "ema.buffers": self.avg_buffers.copy(),
                "ema.steps": np.array(self.steps, np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.avg_theta[...] = state["ema.theta"]
        self.avg_buffers[...] = state["ema.buffers"]
        self.steps = int(state["ema.steps"])
