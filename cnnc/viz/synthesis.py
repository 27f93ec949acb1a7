"""Images made by gradient steps on the input: activation maximization and inversion.

* :func:`maximize` (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015):
  gradient ascent on the input for the mean activation of one channel of a layer (or one
  class score), with the usual regularizers so the result is not high-frequency noise:
  L2 decay, total variation, and jitter (a random shift of the image before each step).
* :func:`invert` (Mahendran and Vedaldi 2015): gradient descent from noise towards an image
  whose code at a layer matches a given image's, ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2,
  with the same priors.

Both use Adam steps on the image in the network's normalized input space, start from
small noise drawn from ``seed`` (same seed, same image), and clip to ``bounds`` (the
normalized values of the darkest and brightest pixel) when given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .core import check_images, layer_inputs, layer_type, logits_node, out_shape, resolve_layer


def tv_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Squared total variation sum((x[i+1,j]-x[i,j])^2 + (x[i,j+1]-x[i,j])^2) and its gradient."""
    dv = np.diff(x, axis=2)
    dh = np.diff(x, axis=3)
    g = np.zeros_like(x)
    g[:, :, 1:, :] += 2 * dv
    g[:, :, :-1, :] -= 2 * dv
    g[:, :, :, 1:] += 2 * dh
    g[:, :, :, :-1] -= 2 * dh
    return float((dv ** 2).sum() + (dh ** 2).sum()), g


class _Adam:
    def __init__(self, shape, lr: float, dtype):
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.lr, self.t = lr, 0

    def step(self, x, g):
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        mh = self.m / (1 - 0.9 ** self.t)
        vh = self.v / (1 - 0.999 ** self.t)
        x -= self.lr * mh / (np.sqrt(vh) + 1e-8)


@dataclass
class Synthesis:
    images: np.ndarray  # (N, C, H, W) in the normalized input space
    objective: np.ndarray  # (N,) final value of the objective (activation or code loss)
    history: np.ndarray  # (steps, N)


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(x, (dy, dx), axis=(2, 3))


def maximize(net, layer: str | None = None, channels=None, *, steps: int = 200, lr: float = 0.1,
             l2: float = 1e-3, tv: float = 0.05, jitter: int | None = None, bounds=None,
             seed: int = 0) -> Synthesis:
    """One image per entry of ``channels`` maximizing the mean of that channel of ``layer``
    (a class score when ``layer`` is None: ``channels`` are then classes); for a ReLU the
    ascent runs on its input with a leaky ReLU gradient (no dead start). ``jitter=None``:
    1 pixel for inputs at least 16 pixels wide, none for smaller ones (a pixel of an 8x8
    digit is an eighth of it)."""
    if jitter is None:
        jitter = 1 if min(net.input_shape[1:]) >= 16 else 0
    node = logits_node(net) if layer is None else resolve_layer(net, layer, view="maximize")
    shape = out_shape(net, node)
    channels = np.atleast_1d(np.asarray(list(range(min(shape[0], 16))) if channels is None else channels))
    for c in channels:
        if not 0 <= int(c) < shape[0]:
            raise UsageError(f"{node} has {shape[0]} {'channels' if len(shape) == 3 else 'units'}; "
                             f"{int(c)} is out of range 0..{shape[0] - 1}")
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    # a ReLU's output has no gradient where it is 0 (everywhere, for a channel the initial
    # noise leaves off): ascend on its input with the ReLU's gradient made leaky (0.1 where off)
    ascend = node
    if layer_type(net, node).rectifier and layer_inputs(net, node)[0] != "input":
        ascend = layer_inputs(net, node)[0]
    n = len(channels)
    rng = np.random.default_rng(seed)
    in_shape = tuple(net.input_shape)
    x = (0.1 * rng.standard_normal((n, *in_shape))).astype(net.dtype)
    dy = np.zeros((n, *shape), net.dtype)
    area = shape[1] * shape[2] if len(shape) == 3 else 1
    dy[np.arange(n), channels] = 1.0 / area
    opt = _Adam(x.shape, lr, net.dtype)
    history = np.empty((steps, n))
    for t in range(steps):
        oy, ox = (rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0))
        xs = _shift(x, oy, ox)
        if ascend != node:
            value, g = net.input_gradient(xs, ascend, lambda v: dy * np.where(v > 0, 1.0, 0.1))
        else:
            value, g = net.input_gradient(xs, ascend, dy)
        history[t] = _channel_mean(np.maximum(value, 0) if ascend != node else value, channels)
        g = _shift(g, -oy, -ox)
        _, gtv = tv_grad(x)
        # descend on -objective + l2 |x|^2 / 2 + tv TV(x)
        opt.step(x, -g + l2 * x + tv * gtv)
        if bounds is not None:
            np.clip(x, bounds[0], bounds[1], out=x)
    final = _channel_mean(net.layer_outputs(x, [node])[node], channels)
    return Synthesis(x, final, history)


def _channel_mean(value: np.ndarray, channels) -> np.ndarray:
    v = value[np.arange(value.shape[0]), channels]
    return v.reshape(v.shape[0], -1).mean(axis=1)


def channel_activation(net, x, layer: str | None, channels) -> np.ndarray:
    """Mean activation of ``channels[i]`` of ``layer`` (a class score when None) for image i."""
    node = logits_node(net) if layer is None else layer
    x = check_images(net, x)
    return _channel_mean(net.layer_outputs(x, [node])[node], np.broadcast_to(channels, (x.shape[0],)))


def invert(net, x, layer: str, *, steps: int = 300, lr: float = 0.05, l2: float = 1e-3,
           tv: float = 0.02, jitter: int = 0, bounds=None, seed: int = 0) -> Synthesis:
    """Images whose code at ``layer`` matches that of ``x`` (one per image of ``x``)."""
    node = resolve_layer(net, layer, view="invert")
    x0 = check_images(net, x)
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    target = net.layer_outputs(x0, [node])[node]
    norm = np.maximum((target.reshape(len(x0), -1) ** 2).sum(axis=1), 1e-12)
    scale = norm.reshape(-1, *([1] * (target.ndim - 1)))
    rng = np.random.default_rng(seed)
    z = (0.1 * rng.standard_normal(x0.shape)).astype(net.dtype)
    opt = _Adam(z.shape, lr, net.dtype)
    history = np.empty((steps, len(x0)))
    for t in range(steps):
        oy, ox = (rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0))
        zs = _shift(z, oy, ox)
        value, g = net.input_gradient(zs, node, lambda v: 2 * (v - target) / scale)
        history[t] = ((value - target).reshape(len(z), -1) ** 2).sum(axis=1) / norm
        g = _shift(g, -oy, -ox)
        _, gtv = tv_grad(z)
        opt.step(z, g + l2 * z + tv * gtv)
        if bounds is not None:
            np.clip(z, bounds[0], bounds[1], out=z)
    value = net.layer_outputs(z, [node])[node]
    final = ((value - target).reshape(len(z), -1) ** 2).sum(axis=1) / norm
    return Synthesis(z, final, history)
