"""Naive NumPy versions of the layers (float64, loops and einsum, no speed tricks).

Each layer type's :meth:`~cnnc.layers.base.LayerType.reference` uses these; the registry
test compares every kernel with them. They import NumPy only when called, so checking a
model never loads it through here.
"""
from __future__ import annotations


def conv(x, w, b, stride: int, pad: tuple[int, int], dilation: int, groups: int):
    """x: (N, C, H, W), w: (F, C/groups, KH, KW), b: (F,) or None -> (N, F, H', W')."""
    import numpy as np

    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    ph, pw = pad
    oh = (h + 2 * ph - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pw - dilation * (kw - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, f, oh, ow))
    fg = f // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                win = xp[:, g * cg:(g + 1) * cg,
                         i * dilation: i * dilation + stride * (oh - 1) + 1: stride,
                         j * dilation: j * dilation + stride * (ow - 1) + 1: stride]
                y[:, g * fg:(g + 1) * fg] += np.einsum("nchw,fc->nfhw", win, w[g * fg:(g + 1) * fg, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's rule: floor or ceil, and a ceil window must start inside input or left pad."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    o = -(-(n + 2 * p - k) // s) + 1
    if (o - 1) * s >= n + p:
        o -= 1
    return o


def pool(x, size: tuple[int, int], stride: int, pad: int, ceil: bool, mode: str):
    """Max (``mode="max"``) or average pooling; the average divides by the real inputs in
    the window (padding not counted)."""
    import numpy as np

    n, c, h, w = x.shape
    kh, kw = size
    oh, ow = pool_out(h, kh, stride, pad, ceil), pool_out(w, kw, stride, pad, ceil)
    rh = max(0, (oh - 1) * stride + kh - h - pad)
    rw = max(0, (ow - 1) * stride + kw - w - pad)
    widths = ((0, 0), (0, 0), (pad, rh), (pad, rw))
    if mode == "max":
        xp = np.pad(x, widths, constant_values=-np.inf)
    else:
        xp = np.pad(x, widths)
        real = np.pad(np.ones_like(x), widths)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = (slice(None), slice(None), slice(i * stride, i * stride + kh),
                   slice(j * stride, j * stride + kw))
            if mode == "max":
                y[:, :, i, j] = xp[win].max(axis=(2, 3))
            else:
                y[:, :, i, j] = xp[win].sum(axis=(2, 3)) / real[win].sum(axis=(2, 3))
    return y


def _per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm(x, gamma, beta, running_mean, running_var, eps: float, training: bool):
    """Per channel of (N, C, H, W) or per feature of (N, F): batch statistics in training
    (biased variance), running statistics otherwise."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    import numpy as np

    return (_per_channel(gamma, x) * (x - _per_channel(mean, x)) / np.sqrt(_per_channel(var, x) + eps)
            + _per_channel(beta, x))
