"""scikit-learn's built-in 8x8 digits (1797 images, no download).

Values 0..16 are scaled to ``uint8`` by ``round(v * 255 / 16)``. Split: the first 1437
images are train and the last 360 are test (as in scikit-learn's classic example; every
class has 33..37 test images).
"""
from __future__ import annotations

import numpy as np

from ...errors import DataError, UsageError
from ..catalog import MNIST_CLASSES
from ..dataset import Dataset


def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's 8x8 digits as ``uint8 (N, 1, 8, 8)``: the first 1437 images are
    ``train``, the last 360 ``test`` (``split="all"`` gives all 1797)."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)") from None
    d = _sk_digits()
    x = np.round(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = np.asarray(d.target, dtype=np.int64)
    s = split.lower()
    if s == "train":
        sl = slice(0, len(y) - 360)
    elif s == "test":
        sl = slice(len(y) - 360, None)
    elif s == "all":
        sl = slice(None)
    else:
        raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")
    return Dataset(np.ascontiguousarray(x[sl]), y[sl].copy(), MNIST_CLASSES, "digits")
