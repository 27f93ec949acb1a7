"""CIFAR-10 binary batches.

``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and ``test_batch.bin`` (test), records
of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32); a file whose
length is not a multiple of 3073 is an error. Class names come from ``batches.meta.txt``
(one per line) if present. The folder may also hold these files inside
``cifar-10-batches-bin/``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ....errors import DataError, UsageError
from ..catalog import CIFAR10_CLASSES
from ..dataset import Dataset
from .common import read_file


CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
CIFAR_META = "batches.meta.txt"
CIFAR_SUBDIR = "cifar-10-batches-bin"


def cifar_folder(path: Path) -> Path:
    if (path / CIFAR_SUBDIR).is_dir() and not any((path / f).is_file()
                                                  for f in CIFAR_TRAIN + CIFAR_TEST):
        return path / CIFAR_SUBDIR
    return path


def cifar_missing(folder: Path) -> list[str]:
    folder = cifar_folder(folder)
    return [f for f in CIFAR_TRAIN + CIFAR_TEST if not (folder / f).is_file()]


def load_cifar10_dir(path: str | os.PathLike[str], split: str = "train", *,
                     name: str = "cifar10") -> Dataset:
    """Read the ``train`` (all of ``data_batch_1..5.bin``) or ``test`` (``test_batch.bin``)
    split of a CIFAR-10 binary folder (or its ``cifar-10-batches-bin/`` sub-folder).

    Each file is a sequence of 3073-byte records: a label byte, then 3x32x32 pixels.
    Class names come from ``batches.meta.txt`` (non-empty lines) when present, else the
    standard ten; a label outside them is an error naming the file and record.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists()
                        else f"{folder}: is not a folder")
    folder = cifar_folder(folder)
    s = split.lower()
    if s == "train":
        files = CIFAR_TRAIN
    elif s == "test":
        files = CIFAR_TEST
    else:
        raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}",
                        hint="a CIFAR-10 binary folder holds data_batch_1.bin .. "
                             "data_batch_5.bin and test_batch.bin (from cifar-10-binary.tar.gz)")
    classes = CIFAR10_CLASSES
    meta = folder / CIFAR_META
    if meta.is_file():
        try:
            text = read_file(meta).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{meta}: not a UTF-8 text file of class names") from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not names:
            raise DataError(f"{meta}: holds no class names")
        classes = names
    xs, ys = [], []
    for f in files:
        p = folder / f
        raw = read_file(p)
        if len(raw) == 0 or len(raw) % CIFAR_RECORD:
            raise DataError(f"{p}: its length, {len(raw):,} bytes, is not a multiple of the "
                            f"{CIFAR_RECORD}-byte CIFAR-10 record (1 label + 3x32x32 pixels)",
                            hint="the file is truncated or not a CIFAR-10 binary batch")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
        labels = rec[:, 0].astype(np.int64)
        bad = np.flatnonzero(labels >= len(classes))
        if bad.size:
            raise DataError(f"{p}: record {int(bad[0])} has label {int(labels[bad[0]])}, but "
                            f"there are only {len(classes)} classes")
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0].copy()
    return Dataset(x, np.concatenate(ys), classes, name)
