"""Mini-batches: the one place where images are gathered into a batch, augmented and
normalized (training uses it too)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ...errors import UsageError
from .augment import Augmentation
from .dataset import Dataset
from .transforms import affine


class Batches:
    """Mini-batches of a data set, written into preallocated float32 buffers.

    ``for xb, yb in Batches(ds, 128, mean=m, std=s, rng=rng): ...`` - each epoch (each
    ``iter``) visits every image once in an order shuffled with ``rng`` (in order when
    ``shuffle=False``). ``xb`` is ``float32 (n, C, H, W)`` normalized like :func:`to_float`,
    ``yb`` is ``int64 (n,)``; ``n`` is ``batch_size`` except for the last, partial batch,
    which is yielded with its own size (views of the first ``n`` rows of the buffers) unless
    ``drop_last=True`` drops it (then every batch has exactly ``batch_size`` images, so a
    training step planned for one batch size never sees another).

    The yielded arrays are the same buffers (``self.x_batch``, ``self.y_batch``; ``out`` gives
    them, e.g. a network's input and label buffers) every step: copy them to keep them.
    Nothing is allocated per step. ``augment`` is applied to the raw pixels before
    normalization, so crop padding is black (pixel 0), as in torchvision; it draws from
    ``augment_rng`` (default ``rng``). Float32 data without ``mean``/``std`` is used as is.

    A training loop that keeps its own epoch order (to resume mid-epoch) calls
    :meth:`load` for each step instead of iterating.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, shuffle: bool = True,
                 drop_last: bool = False, augment: Augmentation | None = None,
                 augment_rng: np.random.Generator | None = None,
                 out: tuple[np.ndarray, np.ndarray] | None = None):
        if int(batch_size) < 1:
            raise UsageError(f"the batch size must be at least 1, not {batch_size}")
        self.augment = augment if augment else None
        self.augment_rng = augment_rng if augment_rng is not None else rng
        if (shuffle and rng is None) or (self.augment and self.augment_rng is None):
            raise UsageError("Batches needs a numpy Generator (rng=) to shuffle or augment")
        self.dataset = dataset
        self.batch_size = b = int(batch_size)
        self.rng = rng
        self.shuffle = shuffle
        self.drop_last = drop_last
        c, h, w = dataset.shape
        dtype = dataset.x.dtype
        self._as_is = dtype == np.float32 and mean is None and std is None
        self._scale, self._shift = affine(dtype, mean, std, c)
        if out is None:
            out = np.empty((b, c, h, w), dtype=np.float32), np.empty(b, dtype=np.int64)
        self.x_batch, self.y_batch = out
        if self.x_batch.shape != (b, c, h, w) or self.x_batch.dtype != np.float32 \
                or self.y_batch.shape != (b,) or self.y_batch.dtype != np.int64:
            raise UsageError(f"Batches: out must be float32 {(b, c, h, w)} and int64 ({b},) "
                             f"buffers, got {self.x_batch.dtype} {self.x_batch.shape} and "
                             f"{self.y_batch.dtype} {self.y_batch.shape}")
        self._raw = self.x_batch if self._as_is else np.empty((b, c, h, w), dtype=dtype)
        self._scratch = np.empty((c, h, w), dtype=dtype)
        self._order = np.arange(len(dataset), dtype=np.int64)

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Images per epoch (all of them, or fewer when ``drop_last`` drops a partial batch)."""
        n, b = len(self.dataset), self.batch_size
        return (n // b) * b if self.drop_last else n

    def load(self, order: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``step`` of an epoch that visits the images in ``order``: gathered,
        augmented and normalized into the buffers, which are returned (views of their
        first rows for a last, partial batch)."""
        b = self.batch_size
        idx = order[step * b:(step + 1) * b]
        k = len(idx)
        raw = self._raw if k == b else self._raw[:k]
        np.take(self.dataset.x, idx, axis=0, out=raw)
        yb = self.y_batch if k == b else self.y_batch[:k]
        np.take(self.dataset.y, idx, out=yb)
        if self.augment is not None:
            self.augment.apply(raw, self.augment_rng, self._scratch)  # type: ignore[arg-type]
        xb = self.x_batch if k == b else self.x_batch[:k]
        if not self._as_is:
            np.multiply(raw, self._scale, out=xb, casting="unsafe")
            np.subtract(xb, self._shift, out=xb)
        return xb, yb

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.shuffle:
            self._order.sort()
            self.rng.shuffle(self._order)  # type: ignore[union-attr]
        for step in range(len(self)):
            yield self.load(self._order, step)
