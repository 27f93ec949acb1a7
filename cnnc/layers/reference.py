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


def conv1d(x, w, b, stride: int, pad: int, dilation: int, groups: int):
    """x: (N, C, L), w: (F, C/groups, K), b: (F,) or None -> (N, F, L')."""
    import numpy as np

    n, c, length = x.shape
    f, cg, k = w.shape
    out = (length + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    y = np.zeros((n, f, out))
    fg = f // groups
    for o in range(f):
        g = o // fg
        for t in range(out):
            taps = xp[:, g * cg:(g + 1) * cg, t * stride: t * stride + dilation * (k - 1) + 1: dilation]
            y[:, o, t] = np.einsum("nck,ck->n", taps, w[o])
    if b is not None:
        y += b[None, :, None]
    return y


def pool1d(x, k: int, stride: int, pad: int, ceil: bool, mode: str):
    """Max or average pooling of sequences (N, C, L); the average counts real inputs only."""
    import numpy as np

    n, c, length = x.shape
    out = pool_out(length, k, stride, pad, ceil)
    y = np.zeros((n, c, out))
    for t in range(out):
        lo, hi = max(t * stride - pad, 0), min(t * stride - pad + k, length)
        win = x[:, :, lo:hi]
        y[:, :, t] = win.max(axis=2) if mode == "max" else win.mean(axis=2)
    return y


def lrn(x, size: int, alpha: float, beta: float, k: float):
    """Local response normalization across channels of (N, C, ...) (AlexNet, Caffe, PyTorch):
    y_c = x_c / (k + alpha/size * sum of x_j^2 over the channels j within size//2 of c)^beta."""
    import numpy as np

    c = x.shape[1]
    half = size // 2
    y = np.empty_like(x, dtype=np.float64)
    for ch in range(c):
        lo, hi = max(ch - half, 0), min(ch + half + 1, c)
        s = (x[:, lo:hi] ** 2).sum(axis=1)
        y[:, ch] = x[:, ch] / (k + alpha / size * s) ** beta
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
    axes = (0, *range(2, x.ndim))  # (0, 2, 3) for images, (0, 2) for sequences, (0,) for vectors
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    import numpy as np

    return (_per_channel(gamma, x) * (x - _per_channel(mean, x)) / np.sqrt(_per_channel(var, x) + eps)
            + _per_channel(beta, x))
