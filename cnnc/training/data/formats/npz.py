""".npz archives, read without pickle.

Arrays ``x`` and ``y`` (or ``x_train``/``y_train``), optional ``x_test``/``y_test`` and
``class_names`` (a string array). Layout rule for ``x``: 3-D is ``(N, H, W)`` (one
channel); 4-D is ``(N, H, W, C)`` when the last axis is 1, 3 or 4 and axis 1 is not,
otherwise ``(N, C, H, W)`` (so an ambiguous ``(N, 3, 4, 4)`` is read as NCHW). dtype rule:
``uint8`` is kept; other integer or bool arrays whose values all lie in 0..255 become
``uint8``; float arrays become ``float32`` and must be finite; anything else is an error.
Labels must be integers (or integral floats), 1-D (or ``(N, 1)``), ``>= 0`` and, with
``class_names``, smaller than the number of names.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ....errors import DataError, UsageError
from ..dataset import Dataset
from .common import class_names_for


def _npz_x(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[3] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where} has shape {arr.shape}; expected (N, H, W), (N, H, W, C) "
                        "or (N, C, H, W)")
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        out = arr
    elif kind in "iub":
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{where}: integer pixels must lie in 0..255, found "
                            f"{arr.min()}..{arr.max()}",
                            hint="store uint8 pixels, or float values")
        out = arr.astype(np.uint8)
    elif kind == "f":
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"{where}: contains NaN or infinite values")
    else:
        raise DataError(f"{where}: dtype {arr.dtype} is not a numeric image type")
    return np.ascontiguousarray(out)


def _npz_y(arr: np.ndarray, n: int, where: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D (N,), got shape {arr.shape}",
                        hint="one-hot labels are not supported; store class indices")
    if arr.dtype.kind in "iu":
        y = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{where}: labels must be whole numbers (class indices)")
        y = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        y = arr.astype(np.int64)
    else:
        raise DataError(f"{where}: labels have dtype {arr.dtype}; expected integer class indices")
    if len(y) != n:
        raise DataError(f"{where}: {len(y):,} labels but {n:,} images")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: negative label {int(y.min())}")
    return y


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz archive, read without pickle."""
    raw_head = b""
    try:
        with open(path, "rb") as f:
            raw_head = f.read(6)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an .npz file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw_head[:2] != b"PK":
        if raw_head.startswith(b"\x93NUMPY"):
            raise DataError(f"{path}: is a single .npy array, not an .npz archive",
                            hint="save with np.savez(path, x=images, y=labels)")
        raise DataError(f"{path}: not an .npz archive (it is not a zip file; cnnc never "
                        "reads pickles)",
                        hint="save with np.savez(path, x=images, y=labels)")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                value = z[key]
                if isinstance(value, np.ndarray):  # other zip members come back as bytes
                    out[key] = value
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds an array of Python objects, which would need "
                            "unpickling; cnnc never unpickles data",
                            hint="store plain numeric arrays (and class_names as a string array)") from None
        raise DataError(f"{path}: damaged .npz archive ({exc})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise DataError(f"{path}: damaged or truncated .npz archive "
                        f"({type(exc).__name__}: {exc})") from None
    return out


def _npz_split(arrays: dict[str, np.ndarray], path: Path, xkey: str, ykey: str,
               class_names: Sequence[str] | None, name: str) -> Dataset:
    x = _npz_x(arrays[xkey], f"{path}: array {xkey!r}")
    y = _npz_y(arrays[ykey], len(x), f"{path}: array {ykey!r}")
    names = class_names_for(y, class_names, f"{path}: array {ykey!r}")
    return Dataset(x, y, names, name)


def _npz_class_names(arrays: dict[str, np.ndarray], path: Path) -> tuple[str, ...] | None:
    if "class_names" not in arrays:
        return None
    arr = arrays["class_names"]
    if arr.dtype.kind not in "US" or arr.ndim != 1:
        raise DataError(f"{path}: 'class_names' must be a 1-D array of strings, got "
                        f"{arr.dtype} {arr.shape}")
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                 for v in arr.tolist())


def load_npz(path: str | os.PathLike[str], split: str = "train", *,
             name: str | None = None) -> Dataset:
    """Read a split of an ``.npz`` file (see the module notes for the layout rules).

    ``split="train"`` reads ``x``/``y`` (or ``x_train``/``y_train``); ``split="test"`` reads
    ``x_test``/``y_test`` (a DataError if absent; :func:`resolve_dataset` makes a holdout
    instead). Class names: ``class_names`` if present, else as for :func:`load_idx`.
    ``name`` defaults to the file's stem.
    """
    p = Path(path)
    arrays = _open_npz(p)
    s = split.lower()
    if s == "train":
        pairs = [("x", "y"), ("x_train", "y_train")]
    elif s == "test":
        pairs = [("x_test", "y_test")]
    else:
        raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")
    for xk, yk in pairs:
        if xk in arrays and yk in arrays:
            break
    else:
        xk, yk = pairs[0]
        missing = [k for k in (xk, yk) if k not in arrays]
        have = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(f"{p}: no array {' or '.join(repr(m) for m in missing)} "
                        f"(the file holds: {have})",
                        hint="save with np.savez(path, x=images, y=labels[, x_test=..., "
                             "y_test=..., class_names=...])")
    return _npz_split(arrays, p, xk, yk, _npz_class_names(arrays, p), name or p.stem)


def has_test_split(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "x_test.npy" in names and "y_test.npy" in names
