"""Image files (Pillow): folders with one sub-folder per class, and single images.

Classes are the sorted sub-folder names (hidden ones, starting with ``.``, are ignored).
Files whose extension Pillow registers as an image are read; other files are ignored.
Mode rule: every image becomes ``L`` (1 channel) if all of them are grayscale (modes
``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``), otherwise ``RGB`` (3 channels; alpha is
dropped). Size rule: the most common ``width x height`` wins (ties go to the size seen
first, in sorted class-then-file order) and every other image is resized to it (bilinear).
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ....errors import DataError, UsageError
from ..dataset import Dataset


_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _image_extensions() -> set[str]:
    from PIL import Image
    return {ext.lower() for ext in Image.registered_extensions()}


def _pil_error_types() -> tuple[type[BaseException], ...]:
    """What Pillow raises on a damaged or unsupported image."""
    from PIL import Image, UnidentifiedImageError
    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError,
            TypeError, struct.error, MemoryError, Image.DecompressionBombError)


def _to_array(img: Any, mode: str) -> np.ndarray:
    """A PIL image in ``mode`` (L or RGB) as uint8 ``(C, H, W)``."""
    if mode == "L" and img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # Pillow's convert("L") clips 16-bit values; scale them instead.
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        if img.mode == "F" and a.max() <= 1.0:
            hi = 1.0
        return np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)[None]
    if img.mode != mode:
        img = img.convert(mode)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_image_folder(path: str | os.PathLike[str], *, name: str | None = None,
                      classes: Sequence[str] | None = None, mode: str | None = None,
                      size: tuple[int, int] | None = None) -> Dataset:
    """Read a folder with one sub-folder of images per class (see the module notes).

    ``classes``: the class list to index labels by (used so a ``test/`` folder gets the
    ``train/`` folder's labels; its sub-folders must then be among these names).
    ``mode`` (``"L"`` or ``"RGB"``) and ``size`` (``(width, height)``) force the mode and size
    instead of the rules. An unreadable image is a DataError naming it.
    """
    from PIL import Image

    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists()
                        else f"{folder}: is not a folder")
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise DataError(f"{folder}: has no class sub-folders",
                        hint="an image folder holds one sub-folder of images per class, "
                             "e.g. cats/ and dogs/")
    if classes is None:
        class_names = tuple(subdirs)
    else:
        class_names = tuple(classes)
        extra = [d for d in subdirs if d not in class_names]
        if extra:
            raise DataError(f"{folder}: class folder(s) {', '.join(extra)} are not among the "
                            f"training classes ({', '.join(class_names)})")
    exts = _image_extensions()
    files: list[tuple[Path, int]] = []
    for d in subdirs:
        label = class_names.index(d)
        found = sorted(p for p in (folder / d).iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)
        if not found:
            raise DataError(f"{folder / d}: class folder holds no images")
        files.extend((p, label) for p in found)
    errors = _pil_error_types()
    # First pass: headers only (mode and size).
    modes: list[str] = []
    sizes: list[tuple[int, int]] = []
    for p, _ in files:
        try:
            with Image.open(p) as img:
                modes.append(img.mode)
                sizes.append(tuple(img.size))  # type: ignore[arg-type]
        except errors as exc:
            raise DataError(f"{p}: cannot read this image ({type(exc).__name__}: {exc})") from None
    if mode is None:
        mode = "L" if all(m in _GRAY_MODES for m in modes) else "RGB"
    if mode not in ("L", "RGB"):
        raise UsageError(f"image mode must be 'L' or 'RGB', not {mode!r}")
    if size is None:
        counts = Counter(sizes)
        best = max(counts.values())
        size = next(s for s in sizes if counts[s] == best)
    w, h = size
    c = 1 if mode == "L" else 3
    x = np.empty((len(files), c, h, w), dtype=np.uint8)
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as img:
                img.load()
                if img.size != (w, h):
                    work = img
                    if work.mode not in ("L", "RGB", "RGBA", "LA"):
                        work = work.convert("RGB" if mode == "RGB" else "L")
                    img = work.resize((w, h), Image.Resampling.BILINEAR)
                x[i] = _to_array(img, mode)
        except errors as exc:
            raise DataError(f"{p}: cannot read this image ({type(exc).__name__}: {exc})") from None
    y = np.fromiter((lab for _, lab in files), dtype=np.int64, count=len(files))
    return Dataset(x, y, class_names, name or folder.resolve().name)


def load_image_file(path: str | os.PathLike[str], shape: tuple[int, int, int], *,
                    resize: bool = False, any_size: bool = False) -> np.ndarray:
    """Read one image for ``cnnc predict`` as ``uint8 (C, H, W)`` for a model of ``shape``.

    The mode becomes ``L`` for C=1 (luma, ITU-R 601: 0.299 R + 0.587 G + 0.114 B),
    ``RGB`` for C=3, ``RGBA`` for C=4. A size other than ``H x W`` is a DataError naming
    the file, its size and the expected size, unless ``resize`` (bilinear) or ``any_size``
    (the image keeps its own size: the caller fits it, as training's ``fit`` does).
    """
    from PIL import Image

    p = Path(path)
    c, h, w = (int(v) for v in shape)
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if c not in modes:
        raise DataError(f"cannot read {p} for a model with {c} input channels: image files "
                        "give 1 (grayscale), 3 (RGB) or 4 (RGBA) channels")
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected an image file")
    try:
        with Image.open(p) as img:
            img.load()
            if img.size != (w, h) and not any_size:
                if not resize:
                    raise DataError(f"{p} is {img.size[1]}x{img.size[0]} pixels (height x width) "
                                    f"but the model expects {h}x{w}",
                                    hint="resize the image, or pass --fit (zero-pad or crop, as "
                                         "training's fit does) or --resize (stretch)")
                work = img if img.mode in ("L", "RGB", "RGBA", "LA") else img.convert(
                    "RGBA" if c == 4 else "RGB" if c == 3 else "L")
                img = work.resize((w, h), Image.Resampling.BILINEAR)
            if c == 1:
                return _to_array(img, "L")
            if img.mode != modes[c]:
                img = img.convert(modes[c])
            return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
    except DataError:
        raise
    except _pil_error_types() as exc:
        raise DataError(f"{p}: cannot read this image ({type(exc).__name__}: {exc})") from None
