"""scikit-learn's built-in 8x8 digits (1797 images, no download).

Values 0..16 are scaled to ``uint8`` by ``round(v * 255 / 16)``. Split: the first 1437
images are train and the last 360 are test (as in scikit-learn's classic example; every
class has 33..37 test images).
"""
from __future__ import annotations

import numpy as np

from ....errors import DataError, UsageError
from ..catalog import MNIST_CLASSES
from ..dataset import Dataset


def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's 8x8 digits as ``uint8 (N, 1, 8, 8)``: the first 1437 images are
    ``train``, the last 360 ``test`` (``split="all"`` gives all 1797)."""
    images, target = _read_digits()
    x = np.round(np.asarray(images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = np.asarray(target, dtype=np.int64)
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


def _read_digits():
    """(images (1797, 8, 8), labels): read from the CSV scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``: 64 pixel values and the label per row)
    without importing scikit-learn, which costs about 0.6 s; through scikit-learn when the
    file is not where it used to be."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            data = np.loadtxt(f, delimiter=",")
        if data.ndim == 2 and data.shape[1] == 65:
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    except (OSError, ValueError):
        pass
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    return d.images, d.target
