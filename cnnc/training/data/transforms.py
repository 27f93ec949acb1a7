"""Transforms of whole data sets: normalization, the validation split, fitting images to a
model's input shape.

Normalization: :func:`normalize_stats` returns per-channel mean and std in the scale
:func:`to_float` works in: ``uint8`` pixels are divided by 255 first (so MNIST's mean is
0.1307 and std 0.3081, the numbers torchvision users know); ``float32`` data is used as is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import DataError, UsageError
from .dataset import Dataset


def normalize_stats(train: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` of the training images, float32 ``(C,)`` each, in the
    scale of :func:`to_float` (uint8 pixels / 255). A constant channel gets std 1."""
    x = train.x
    c = x.shape[1]
    mean = np.zeros(c, dtype=np.float64)
    std = np.ones(c, dtype=np.float64)
    if len(x) == 0:
        return mean.astype(np.float32), std.astype(np.float32)
    for ch in range(c):
        if x.dtype == np.uint8:
            counts = np.bincount(np.ascontiguousarray(x[:, ch]).ravel(), minlength=256)
            values = np.arange(256, dtype=np.float64) / 255.0
            total = counts.sum()
            m = float(counts @ values) / total
            var = float(counts @ (values - m) ** 2) / total
        else:
            s = s2 = 0.0
            total = 0
            for start in range(0, len(x), 4096):
                block = x[start:start + 4096, ch].astype(np.float64)
                s += float(block.sum())
                total += block.size
            m = s / total
            for start in range(0, len(x), 4096):
                block = x[start:start + 4096, ch].astype(np.float64) - m
                s2 += float((block * block).sum())
            var = s2 / total
        mean[ch] = m
        sd = float(np.sqrt(var))
        std[ch] = sd if sd > 1e-6 else 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def affine(x_dtype: np.dtype, mean: np.ndarray | None, std: np.ndarray | None,
            c: int) -> tuple[np.ndarray, np.ndarray]:
    """``scale``, ``shift`` (float32, shape (C,1,1)) with ``to_float(x) = x*scale - shift``."""
    m = np.zeros(c, np.float64) if mean is None else np.asarray(mean, np.float64).reshape(-1)
    s = np.ones(c, np.float64) if std is None else np.asarray(std, np.float64).reshape(-1)
    if m.size == 1 and c > 1:
        m = np.full(c, m[0])
    if s.size == 1 and c > 1:
        s = np.full(c, s[0])
    if m.size != c or s.size != c:
        raise DataError(f"normalization statistics have {m.size} mean / {s.size} std values "
                        f"but the images have {c} channels")
    if np.any(s <= 0) or not np.all(np.isfinite(s)) or not np.all(np.isfinite(m)):
        raise DataError("normalization std must be positive and finite")
    unit = 1.0 / 255.0 if x_dtype == np.uint8 else 1.0
    scale = (unit / s).astype(np.float32).reshape(c, 1, 1)
    shift = (m / s).astype(np.float32).reshape(c, 1, 1)
    return scale, shift


def to_float(x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
    """Normalized float32 copy of ``x`` (``(N, C, H, W)`` or one ``(C, H, W)`` image):
    ``(x / 255 - mean) / std`` for uint8, ``(x - mean) / std`` for floats, computed as
    ``x * scale - shift`` (the same arithmetic :class:`Batches` uses). ``out``: optional
    float32 array of x's shape to write into."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise DataError(f"images must be (N, C, H, W) or (C, H, W), got shape {x.shape}")
    c = x.shape[-3]
    scale, shift = affine(x.dtype, mean, std, c)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    np.multiply(x, scale, out=out, casting="unsafe")
    np.subtract(out, shift, out=out)
    return out


# --------------------------------------------------------------------------- splits

def split_validation(ds: Dataset, fraction: float,
                     rng: np.random.Generator) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into ``(train, val)``, stratified by class.

    ``val`` has ``round(fraction * N)`` images (at least 1 and at most N-1 when
    ``0 < fraction``), shared among the classes in proportion to their sizes (largest
    remainders first); which images go to ``val`` is drawn from ``rng``. Both parts keep the
    original order. ``fraction`` must lie in ``[0, 1)``; 0 gives an empty ``val``.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise UsageError(f"the validation fraction must lie in [0, 1), not {fraction}")
    n = len(ds)
    if fraction == 0 or n == 0:
        return ds, ds.subset(slice(0, 0))
    if n < 2:
        raise DataError(f"data set {ds.name!r} has {n} image(s): too few to split off a "
                        "validation set")
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    counts = np.bincount(ds.y, minlength=ds.num_classes)
    exact = counts * (n_val / n)
    quota = np.floor(exact).astype(np.int64)
    rest = n_val - int(quota.sum())
    if rest > 0:
        order = np.lexsort((np.arange(len(exact)), -(exact - quota)))
        for k in order[:rest]:
            quota[k] += 1
    val_mask = np.zeros(n, dtype=bool)
    for k in range(len(counts)):
        if quota[k] == 0:
            continue
        members = np.flatnonzero(ds.y == k)
        val_mask[rng.choice(members, size=int(quota[k]), replace=False)] = True
    return ds.subset(~val_mask), ds.subset(val_mask)


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _as_sequences(ds: Dataset, model_shape: Sequence[int]) -> tuple[Dataset, tuple[int, ...]]:
    """For a 1-D model (``model_shape`` ``(C, L)``): ``ds`` as sequences ``(N, C', 1, L')`` and
    the model's shape as ``(C, 1, L)``. Data that is ``(N, 1, C', L')`` (a 3-D array
    ``(N, C', L')`` read by the .npz rule) is reinterpreted without a copy; images with
    several channels and rows are refused."""
    want = (int(model_shape[0]), 1, int(model_shape[1]))
    c, h, w = ds.shape
    if h != 1 and c == 1:
        ds = Dataset(ds.x.reshape(len(ds), h, 1, w), ds.y, ds.class_names, ds.name)
    elif h != 1:
        raise DataError(f"the model is 1-D (input {_fmt(model_shape)}, channels x length) but "
                        f"{ds.name} holds {_fmt(ds.shape)} images",
                        hint="give sequences as an .npz array x of shape (N, C, L)")
    return ds, want


def check_input_shape(model_shape: Sequence[int], ds: Dataset, *,
                      fit_flag: str = "--fit") -> None:
    """DataError when ``ds`` images are not ``model_shape`` ``(C, H, W)`` (or, for a 1-D
    model ``(C, L)``, sequences of that shape); the hint says how to fix it (change the
    model's ``input`` header, or pass ``fit_flag`` when :func:`fit_to_shape` can convert
    the images)."""
    if len(model_shape) == 2:
        ds, model_shape = _as_sequences(ds, model_shape)
    want = tuple(int(v) for v in model_shape)
    have = ds.shape
    if want == have:
        return
    fixes = [f"use `input {_fmt(have)}` in the model"]
    try:
        _fit_plan(have, want, ds.name)
        how = []
        if want[0] != have[0]:
            how.append("replicate the gray channel" if have[0] == 1
                       else "convert the color images to gray")
        if want[1:] != have[1:]:
            grow = [want[a] > have[a] for a in (1, 2) if want[a] != have[a]]
            verb = ("zero-pad" if all(grow) else "center-crop" if not any(grow)
                    else "zero-pad/center-crop")
            how.append(f"{verb} the images from {_fmt(have[1:])} to {_fmt(want[1:])}")
        fixes.append(f"pass {fit_flag} to {' and '.join(how)}")
    except DataError:
        pass
    raise DataError(f"the model expects {_fmt(want)} but {ds.name} images are {_fmt(have)}",
                    hint="; or ".join(fixes))


def _fit_plan(have: tuple[int, ...], want: tuple[int, ...], name: str) -> None:
    if have[0] != want[0] and {have[0], want[0]} != {1, 3}:
        raise DataError(f"cannot convert {name} images with {have[0]} channel(s) to "
                        f"{want[0]} channel(s) (only 1 <-> 3 is supported)")
    for axis, label in ((1, "height"), (2, "width")):
        diff = want[axis] - have[axis]
        if diff % 2:
            raise DataError(f"cannot fit {name} images of {label} {have[axis]} to {want[axis]}: "
                            "padding or cropping must be symmetric (an even difference)")
        if want[axis] < 1:
            raise DataError(f"cannot fit images to {label} {want[axis]}")


def fit_to_shape(ds: Dataset, shape: Sequence[int]) -> Dataset:
    """A copy of ``ds`` converted to ``shape`` ``(C, H, W)``.

    Channels: 1 -> 3 replicates the gray channel; 3 -> 1 takes the ITU-R 601 luma
    (0.299 R + 0.587 G + 0.114 B, as Pillow's ``convert("L")``), rounded for uint8.
    Other channel changes are errors. Size: each spatial axis is zero-padded
    symmetrically when it must grow (28 -> 32: 2 on each side, LeNet's classic setup) or
    center-cropped when it must shrink; the difference must be even. Returns ``ds``
    itself when the shape already matches.
    """
    if len(shape) == 2:  # a 1-D model: sequences (N, C, 1, L), fitted along L
        ds, shape = _as_sequences(ds, shape)
    want = tuple(int(v) for v in shape)
    have = ds.shape
    if want == have:
        return ds
    _fit_plan(have, want, ds.name)
    x = ds.x
    if want[0] != have[0]:
        if have[0] == 1:
            x = np.repeat(x, 3, axis=1)
        else:
            weights = np.array([0.299, 0.587, 0.114], dtype=np.float64).reshape(1, 3, 1, 1)
            gray = (x.astype(np.float64) * weights).sum(axis=1, keepdims=True)
            x = (np.clip(np.round(gray), 0, 255).astype(np.uint8) if x.dtype == np.uint8
                 else gray.astype(np.float32))
    for axis in (2, 3):
        diff = want[axis - 1] - x.shape[axis]
        if diff > 0:
            pad = [(0, 0)] * 4
            pad[axis] = (diff // 2, diff // 2)
            x = np.pad(x, pad)
        elif diff < 0:
            cut = -diff // 2
            sl = [slice(None)] * 4
            sl[axis] = slice(cut, x.shape[axis] - cut)
            x = x[tuple(sl)]
    return Dataset(np.ascontiguousarray(x), ds.y, ds.class_names, ds.name)
