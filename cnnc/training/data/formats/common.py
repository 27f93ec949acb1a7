"""Helpers the format readers share: reading a file, naming classes, finding a file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ....errors import DataError
from ..catalog import MNIST_CLASSES


def read_file(path: Path, what: str = "file") -> bytes:
    """The file's bytes; a DataError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


#: the most classes a data set without class names may have (ImageNet-21k has 21,841)
MAX_CLASSES = 1_000_000


def class_names_for(y: np.ndarray, class_names: Sequence[str] | None, where: Any) -> tuple[str, ...]:
    """``class_names`` checked against the labels; without them the digits when every label
    is below 10, else ``"0".."K-1"``."""
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{where}: negative label {int(y.min())}")
    top = int(y.max()) if len(y) else -1
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if top >= len(names):
            raise DataError(f"{where}: label {top} is out of range: there are only "
                            f"{len(names)} classes (labels 0..{len(names) - 1})")
        return names
    if top < 10:
        return MNIST_CLASSES
    if top >= MAX_CLASSES:  # a label like 2**40 is damage, not a class count (names would not fit in memory)
        raise DataError(f"{where}: label {top} is out of range: at most {MAX_CLASSES:,} classes are "
                        "supported", hint="the labels are damaged, or give class_names")
    return tuple(str(i) for i in range(top + 1))


def find_first(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file in ``folder``."""
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None
