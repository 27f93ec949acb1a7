"""The data set type every loader returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``x`` ``(N, C, H, W)`` (``uint8`` or ``float32``), labels ``y`` ``int64 (N,)``."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype not in (np.uint8, np.float32):
            raise DataError(f"data set {self.name!r}: x must be a uint8 or float32 array "
                            f"(N, C, H, W), got {getattr(x, 'dtype', type(x))} "
                            f"{getattr(x, 'shape', '')}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64:
            raise DataError(f"data set {self.name!r}: y must be an int64 array (N,), got "
                            f"{getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}")
        if len(x) != len(y):
            raise DataError(f"data set {self.name!r}: {len(x)} images but {len(y)} labels")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names)):
            raise DataError(f"data set {self.name!r}: labels must lie in 0..{len(self.class_names) - 1}"
                            f", found {int(y.min())}..{int(y.max())}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: Any) -> "Dataset":
        """The images at ``idx`` (integer array, boolean mask or slice), same classes/name."""
        return Dataset(self.x[idx], self.y[idx], self.class_names, self.name)

    def class_counts(self) -> np.ndarray:
        """Number of images per class, ``int64 (num_classes,)``."""
        return np.bincount(self.y, minlength=self.num_classes)

    def __repr__(self) -> str:
        c, h, w = self.shape
        return (f"Dataset({self.name!r}, {len(self)} images {c}x{h}x{w} {self.x.dtype}, "
                f"{self.num_classes} classes)")


def dataset_from_arrays(x, y, name: str = "arrays", class_names=None) -> Dataset:
    """A Dataset from NumPy arrays: x (N, C, H, W) uint8 or float, y (N,) integers."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name}: images must be (N, C, H, W), got shape {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if class_names is None:
        k = int(y.max()) + 1 if y.size else 1
        class_names = tuple(str(i) for i in range(k))
    return Dataset(x, y, tuple(class_names), name)
