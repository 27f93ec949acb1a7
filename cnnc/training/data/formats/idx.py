"""IDX files (MNIST, Fashion-MNIST), gzip or raw.

Gzip and raw are told apart by the gzip magic bytes ``1f 8b``, not by the file name. The
header's magic number, type code, number of dimensions and sizes are checked, and the file
length must equal the size the header announces (a truncated file and trailing junk are
both errors); gzip CRC/length errors and a cut-short gzip stream are errors too.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ....errors import DataError, UsageError
from ..catalog import FASHION_MNIST_CLASSES
from ..dataset import Dataset
from .common import class_names_for, find_first, read_file


_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic ``1f 8b``."""
    raw = read_file(path)
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: the gzip data ends too early (the file is truncated)",
                        hint="download or copy the file again") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        msg = str(exc)
        if "CRC" in msg or "length" in msg.lower():
            problem = f"the gzip checksum does not match ({msg}): the file is damaged"
        else:
            problem = f"damaged gzip data ({msg})"
        raise DataError(f"{path}: {problem}", hint="download or copy the file again") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a native-endian array of its header's shape.

    The magic number must be ``00 00 TT D`` with a known type code ``TT`` (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and ``1 <= D <= 4``; the
    data that follows the header must be exactly as long as the header says.
    """
    p = Path(path)
    data = _read_maybe_gzip(p)
    if len(data) < 4:
        raise DataError(f"{p}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or not 1 <= data[3] <= 4:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{p}: not an IDX file (magic number 0x{magic:08x}; expected "
                        "0x00000801 for labels or 0x00000803 for images)")
    dtype = _IDX_TYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{p}: the IDX header is truncated ({len(data)} bytes, needs {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    shape_text = "x".join(str(d) for d in dims)
    if got < expected:
        raise DataError(f"{p}: truncated: the header announces {shape_text} values "
                        f"({expected:,} bytes) but only {got:,} bytes follow it",
                        hint="download or copy the file again")
    if got > expected:
        raise DataError(f"{p}: {got - expected:,} unexpected bytes after the {shape_text} "
                        "values the header announces (not a valid IDX file)")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def load_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str], *,
             name: str | None = None,
             class_names: Sequence[str] | None = None) -> Dataset:
    """Read an IDX image file ``(N, H, W)`` and an IDX label file ``(N,)`` into a Dataset.

    Images must be 3-D ``uint8`` (or float, kept as ``float32``) and become ``(N, 1, H, W)``;
    labels must be 1-D integers, as many as the images, and ``< len(class_names)``. Without
    ``class_names``: the digits ``"0".."9"`` when every label is below 10, else ``"0".."K-1"``
    with ``K = max(label) + 1``. ``name`` defaults to the images file's folder name.
    """
    ip, lp = Path(images_path), Path(labels_path)
    images = read_idx(ip)
    labels = read_idx(lp)
    if images.ndim != 3:
        raise DataError(f"{ip}: an IDX image file must have 3 dimensions (count, rows, "
                        f"columns), this one has {images.ndim} ({'x'.join(map(str, images.shape))})")
    if images.dtype.kind == "f":
        x = images.astype(np.float32)[:, None]
        if not np.isfinite(x).all():
            raise DataError(f"{ip}: the images contain NaN or infinite values")
    elif images.dtype == np.uint8:
        x = images[:, None]
    else:
        raise DataError(f"{ip}: IDX images must be unsigned bytes (type 0x08) or floats, "
                        f"not {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{lp}: an IDX label file must hold one integer per image, found "
                        f"{labels.dtype} values of shape {'x'.join(map(str, labels.shape))}",
                        hint="were the image and label files swapped?")
    if len(labels) != len(x):
        raise DataError(f"{lp} has {len(labels):,} labels but {ip} has {len(x):,} images",
                        hint="the two files must come from the same split")
    y = labels.astype(np.int64)
    names = class_names_for(y, class_names, lp)
    return Dataset(x, y, names, name or ip.resolve().parent.name)


def idx_candidates(prefix: str, kind: str, idx: str) -> list[str]:
    return [f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte",
            f"{prefix}-{kind}.{idx}-ubyte.gz", f"{prefix}-{kind}.{idx}-ubyte"]


def _mnist_split_prefix(split: str) -> str:
    s = split.lower()
    if s == "train":
        return "train"
    if s in ("test", "t10k"):
        return "t10k"
    raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")


def mnist_missing(folder: Path) -> list[str]:
    """Names of the standard IDX files missing in ``folder`` (as their .gz names)."""
    missing = []
    for prefix in ("train", "t10k"):
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            if find_first(folder, idx_candidates(prefix, kind, idx)) is None:
                missing.append(f"{prefix}-{kind}-{idx}-ubyte.gz")
    return missing


def load_mnist_dir(path: str | os.PathLike[str], split: str = "train", *,
                   name: str | None = None) -> Dataset:
    """Read the ``train`` or ``test`` split of a folder holding the standard MNIST file names.

    Files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (also the original
    ``train-images.idx3-ubyte`` spelling). Used for MNIST and Fashion-MNIST alike:
    ``name`` defaults to ``"fashion-mnist"`` when the folder name contains "fashion", else
    ``"mnist"``; Fashion-MNIST gets its ten class names, MNIST the digits.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists()
                        else f"{folder}: is not a folder")
    prefix = _mnist_split_prefix(split)
    img = find_first(folder, idx_candidates(prefix, "images", "idx3"))
    lab = find_first(folder, idx_candidates(prefix, "labels", "idx1"))
    if img is None or lab is None:
        missing = [n for n, p in ((f"{prefix}-images-idx3-ubyte[.gz]", img),
                                  (f"{prefix}-labels-idx1-ubyte[.gz]", lab)) if p is None]
        raise DataError(f"{folder}: missing {' and '.join(missing)}",
                        hint="an MNIST-style folder holds train-images-idx3-ubyte.gz, "
                             "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                             "t10k-labels-idx1-ubyte.gz (gzip or not)")
    if name is None:
        name = "fashion-mnist" if "fashion" in folder.resolve().name.lower() else "mnist"
    if "fashion" in name.lower():
        classes: Sequence[str] | None = FASHION_MNIST_CLASSES
    else:
        classes = None  # digits when labels < 10
    return load_idx(img, lab, name=name, class_names=classes)
