"""Data sets: loaders for the standard formats, normalization, batches, augmentation.

Every loader returns a :class:`Dataset` whose ``x`` is ``(N, C, H, W)`` (``uint8`` pixels
0..255, or ``float32`` for ``.npz`` files that hold floats) and ``y`` is ``int64`` labels.
Every damaged or unexpected input raises :class:`~cnnc.errors.DataError` naming the file
and the problem; nothing is ever unpickled.

Formats and rules
-----------------
* **IDX** (MNIST, Fashion-MNIST; :func:`load_idx`, :func:`load_mnist_dir`): gzip or raw,
  told apart by the gzip magic bytes ``1f 8b``, not by the file name. The header's magic
  number, type code, number of dimensions and sizes are checked, and the file length
  must equal the size the header announces (a truncated file and trailing junk are both
  errors); gzip CRC/length errors and a cut-short gzip stream are errors too.
* **CIFAR-10 binary** (:func:`load_cifar10_dir`): ``data_batch_1.bin`` .. ``data_batch_5.bin``
  (train) and ``test_batch.bin`` (test), records of 1 label byte + 3072 pixel bytes
  (1024 R, 1024 G, 1024 B, row-major 32x32); a file whose length is not a multiple of
  3073 is an error. Class names come from ``batches.meta.txt`` (one per line) if present.
  The folder may also hold these files inside ``cifar-10-batches-bin/``.
* **.npz** (:func:`load_npz`): arrays ``x`` and ``y`` (or ``x_train``/``y_train``), optional
  ``x_test``/``y_test`` and ``class_names`` (a string array). Layout rule for ``x``:
  3-D is ``(N, H, W)`` (one channel); 4-D is ``(N, H, W, C)`` when the last axis is 1, 3
  or 4 and axis 1 is not, otherwise ``(N, C, H, W)`` (so an ambiguous ``(N, 3, 4, 4)`` is
  read as NCHW). dtype rule: ``uint8`` is kept; other integer or bool arrays whose values
  all lie in 0..255 become ``uint8``; float arrays become ``float32`` and must be finite;
  anything else is an error. Labels must be integers (or integral floats), 1-D (or
  ``(N, 1)``), ``>= 0`` and, with ``class_names``, smaller than the number of names.
* **Image folder** (:func:`load_image_folder`): one sub-folder per class, classes are the
  sorted sub-folder names (hidden ones, starting with ``.``, are ignored). Files whose
  extension Pillow registers as an image are read; other files are ignored. Mode rule:
  every image becomes ``L`` (1 channel) if all of them are grayscale (modes ``1``, ``L``,
  ``LA``, ``I``, ``I;16``, ``F``), otherwise ``RGB`` (3 channels; alpha is dropped).
  Size rule: the most common ``width x height`` wins (ties go to the size seen first, in
  sorted class-then-file order) and every other image is resized to it (bilinear).
* **digits** (:func:`load_digits`): scikit-learn's built-in 8x8 digits (1797 images, no
  download). Values 0..16 are scaled to ``uint8`` by ``round(v * 255 / 16)``. Split: the
  first 1437 images are train and the last 360 are test (as in scikit-learn's classic
  example; every class has 33..37 test images).
* **waveforms** (:mod:`cnnc.waveforms`): synthetic noisy signals of four classes, 1x128
  sequences (1600 train, 400 test, fixed seeds), for 1-D networks.
* **Sequences** (1-D networks, ``input CxL``) are stored as one-row images ``(N, C, 1, L)``.
  An ``.npz`` array ``(N, C, L)`` is read by the 3-D rule above as ``(N, 1, C, L)``; for a
  1-D model this is the same memory seen as ``(N, C, 1, L)`` (:func:`_as_sequences`).

Named data sets (:func:`resolve_dataset`) live in ``DATA_DIR/<name>/`` where ``DATA_DIR`` is
``--data-dir``, else ``$CNNC_DATA``, else ``~/.cache/cnnc/data``. When the files are
missing they are downloaded from the canonical source (:data:`DOWNLOADS`), checked
against the published md5 (and sha256 where known), written to a temporary file and
renamed into place. Set ``CNNC_OFFLINE=1`` (or pass ``download=False``) to never download.

Normalization: :func:`normalize_stats` returns per-channel mean and std in the scale
:func:`to_float` works in: ``uint8`` pixels are divided by 255 first (so MNIST's mean is
0.1307 and std 0.3081, the numbers torchvision users know); ``float32`` data is used as is.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DataError, UsageError

__all__ = [
    "Dataset", "Batches", "Augmentation",
    "load_idx", "read_idx", "load_mnist_dir", "load_cifar10_dir", "load_npz",
    "load_image_folder", "load_digits", "load_image_file",
    "resolve_dataset", "default_data_dir", "download_dataset", "download_file",
    "normalize_stats", "to_float", "split_validation",
    "random_crop", "random_flip", "augmentations_for", "parse_augmentation",
    "check_input_shape", "fit_to_shape",
    "KNOWN_DATASETS", "DOWNLOADS", "CHECKSUMS", "MNIST_CLASSES", "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES", "HOLDOUT_FRACTION", "HOLDOUT_SEED",
]

MNIST_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: Names :func:`resolve_dataset` knows (aliases map to these).
KNOWN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "waveforms")
_ALIASES = {
    "digits": "digits", "sklearn-digits": "digits", "waveforms": "waveforms",
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist", "fashion": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10",
}

#: Test split of an .npz file without x_test/y_test, or of an image folder without
#: train/ and test/: a stratified holdout of this fraction, drawn with this seed.
HOLDOUT_FRACTION = 1.0 / 6.0
HOLDOUT_SEED = 0

#: Published checksums of the canonical files: file name -> (md5, sha256 or None).
#: MNIST and Fashion-MNIST md5s are the ones their authors published; the sha256s were
#: computed on the verified copies (see shared/data/README.md).
CHECKSUMS: dict[str, dict[str, tuple[str, str | None]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",
                                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",
                                      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",
                                      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                       "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                       "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530", None),
    },
}

#: Where missing named data sets are fetched from, tried in order.
DOWNLOADS: dict[str, tuple[str, ...]] = {
    # The original yann.lecun.com files, mirrored by PyTorch (torchvision's first choice).
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
DOWNLOAD_TIMEOUT = 10.0

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = ("test_batch.bin",)
_CIFAR_META = "batches.meta.txt"
_CIFAR_SUBDIR = "cifar-10-batches-bin"


# --------------------------------------------------------------------------- Dataset

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


# --------------------------------------------------------------------------- IDX

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_file(path: Path, what: str = "file") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic ``1f 8b``."""
    raw = _read_file(path)
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
    names = _class_names_for(y, class_names, lp)
    return Dataset(x, y, names, name or ip.resolve().parent.name)


def _class_names_for(y: np.ndarray, class_names: Sequence[str] | None, where: Any) -> tuple[str, ...]:
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
    return tuple(str(i) for i in range(top + 1))


def _idx_candidates(prefix: str, kind: str, idx: str) -> list[str]:
    return [f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte",
            f"{prefix}-{kind}.{idx}-ubyte.gz", f"{prefix}-{kind}.{idx}-ubyte"]


def _mnist_split_prefix(split: str) -> str:
    s = split.lower()
    if s == "train":
        return "train"
    if s in ("test", "t10k"):
        return "t10k"
    raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")


def _find_first(folder: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def _mnist_missing(folder: Path) -> list[str]:
    """Names of the standard IDX files missing in ``folder`` (as their .gz names)."""
    missing = []
    for prefix in ("train", "t10k"):
        for kind, idx in (("images", "idx3"), ("labels", "idx1")):
            if _find_first(folder, _idx_candidates(prefix, kind, idx)) is None:
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
    img = _find_first(folder, _idx_candidates(prefix, "images", "idx3"))
    lab = _find_first(folder, _idx_candidates(prefix, "labels", "idx1"))
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


# --------------------------------------------------------------------------- CIFAR-10

def _cifar_folder(path: Path) -> Path:
    if (path / _CIFAR_SUBDIR).is_dir() and not any((path / f).is_file()
                                                  for f in _CIFAR_TRAIN + _CIFAR_TEST):
        return path / _CIFAR_SUBDIR
    return path


def _cifar_missing(folder: Path) -> list[str]:
    folder = _cifar_folder(folder)
    return [f for f in _CIFAR_TRAIN + _CIFAR_TEST if not (folder / f).is_file()]


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
    folder = _cifar_folder(folder)
    s = split.lower()
    if s == "train":
        files = _CIFAR_TRAIN
    elif s == "test":
        files = _CIFAR_TEST
    else:
        raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}",
                        hint="a CIFAR-10 binary folder holds data_batch_1.bin .. "
                             "data_batch_5.bin and test_batch.bin (from cifar-10-binary.tar.gz)")
    classes = CIFAR10_CLASSES
    meta = folder / _CIFAR_META
    if meta.is_file():
        try:
            text = _read_file(meta).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{meta}: not a UTF-8 text file of class names") from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not names:
            raise DataError(f"{meta}: holds no class names")
        classes = names
    xs, ys = [], []
    for f in files:
        p = folder / f
        raw = _read_file(p)
        if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
            raise DataError(f"{p}: its length, {len(raw):,} bytes, is not a multiple of the "
                            f"{_CIFAR_RECORD}-byte CIFAR-10 record (1 label + 3x32x32 pixels)",
                            hint="the file is truncated or not a CIFAR-10 binary batch")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        labels = rec[:, 0].astype(np.int64)
        bad = np.flatnonzero(labels >= len(classes))
        if bad.size:
            raise DataError(f"{p}: record {int(bad[0])} has label {int(labels[bad[0]])}, but "
                            f"there are only {len(classes)} classes")
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0].copy()
    return Dataset(x, np.concatenate(ys), classes, name)


# --------------------------------------------------------------------------- npz

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
    names = _class_names_for(y, class_names, f"{path}: array {ykey!r}")
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


def _npz_has_test(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "x_test.npy" in names and "y_test.npy" in names


# --------------------------------------------------------------------------- image folders

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
                    resize: bool = False) -> np.ndarray:
    """Read one image for ``cnnc predict`` as ``uint8 (C, H, W)`` for a model of ``shape``.

    The mode becomes ``L`` for C=1 (luma, ITU-R 601: 0.299 R + 0.587 G + 0.114 B),
    ``RGB`` for C=3, ``RGBA`` for C=4. A size other than ``H x W`` is a DataError naming
    the file, its size and the expected size, unless ``resize`` (bilinear).
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
            if img.size != (w, h):
                if not resize:
                    raise DataError(f"{p} is {img.size[1]}x{img.size[0]} pixels (height x width) "
                                    f"but the model expects {h}x{w}",
                                    hint="resize the image (or pass --resize to let cnnc do it)")
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


# --------------------------------------------------------------------------- digits

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


# --------------------------------------------------------------------------- download

def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``data_dir``, else ``$CNNC_DATA``, else ``~/.cache/cnnc/data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("CNNC_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnc" / "data"


def _open_url(url: str, timeout: float) -> Any:
    """``urllib.request.urlopen`` (a seam for tests)."""
    req = urllib.request.Request(url, headers={"User-Agent": "cnnc"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - fixed https/http URLs


class _NetworkError(DataError):
    """Every mirror was unreachable (resolve_dataset rewords it with where to put the files)."""


def download_file(url: str, dest: str | os.PathLike[str], md5: str,
                  sha256: str | None = None, *, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download ``url`` to ``dest``: into a temporary file beside it, checked against
    ``md5`` (and ``sha256``), then renamed onto ``dest``. A checksum mismatch is a DataError
    (nothing is kept); a network failure raises a DataError subclass naming the URL."""
    from .checkpoint import atomic_writer

    dest = Path(dest)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    with atomic_writer(dest, error=DataError, what="downloaded file") as out:
        try:
            resp = _open_url(url, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            raise _NetworkError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
        with resp:
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except (urllib.error.URLError, TimeoutError, ConnectionError, OSError,
                        EOFError, ValueError) as exc:
                    raise _NetworkError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
                if not chunk:
                    break
                h_md5.update(chunk)
                h_sha.update(chunk)
                out.write(chunk)  # an OSError here (disk full) becomes a DataError
        if h_md5.hexdigest() != md5 or (sha256 and h_sha.hexdigest() != sha256):
            raise DataError(f"the file downloaded from {url} does not match its published "
                            f"checksum (md5 {h_md5.hexdigest()}, expected {md5}); it was "
                            "not kept", hint="try again later, or fetch the file by hand")


def _download_targets(name: str) -> list[tuple[str, str, str | None]]:
    return [(f, md5, sha) for f, (md5, sha) in CHECKSUMS[name].items()]


def _safe_extract_cifar(archive: Path, folder: Path) -> None:
    """Extract only the expected regular files of the CIFAR-10 tarball, flattened."""
    from .checkpoint import atomic_write_bytes

    wanted = set(_CIFAR_TRAIN + _CIFAR_TEST + (_CIFAR_META,))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in wanted and member.isfile():
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    atomic_write_bytes(folder / base, f.read(), error=DataError,
                                       what="extracted file")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot extract it ({exc})") from None


def download_dataset(name: str, folder: str | os.PathLike[str]) -> None:
    """Fetch the named data set's missing files into ``folder`` (created if needed).

    Raises DataError when every mirror fails (with the last network reason) or when a
    download does not match its checksum.
    """
    name = _ALIASES.get(name.lower(), name)
    if name not in DOWNLOADS:
        raise DataError(f"no download is known for data set {name!r}")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder {folder}: {exc.strerror or exc}") from None
    for fname, md5, sha in _download_targets(name):
        dest = folder / fname
        if name != "cifar10" and _find_first(folder, [fname, fname[:-3]]) is not None:
            continue
        last: str = ""
        for base in DOWNLOADS[name]:
            url = base + fname
            print(f"cnnc: downloading {url} -> {dest}", file=sys.stderr, flush=True)
            try:
                download_file(url, dest, md5, sha)
                break
            except _NetworkError as exc:
                last = exc.message
        else:
            raise _NetworkError(last)
        if name == "cifar10":
            _safe_extract_cifar(dest, folder)
            try:
                dest.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------- resolve

def _expected_files(name: str) -> list[str]:
    if name == "cifar10":
        return list(_CIFAR_TRAIN + _CIFAR_TEST)
    return list(CHECKSUMS[name])


def _missing(name: str, folder: Path) -> list[str]:
    if not folder.is_dir():
        return _expected_files(name)
    return _cifar_missing(folder) if name == "cifar10" else _mnist_missing(folder)


def _load_named(name: str, folder: Path) -> tuple[Dataset, Dataset]:
    if name == "cifar10":
        return load_cifar10_dir(folder, "train"), load_cifar10_dir(folder, "test")
    return (load_mnist_dir(folder, "train", name=name), load_mnist_dir(folder, "test", name=name))


def _resolve_named(name: str, data_dir: str | os.PathLike[str] | None,
                   download: bool | None) -> tuple[Dataset, Dataset]:
    if name == "digits":
        return load_digits("train"), load_digits("test")
    if name == "waveforms":  # issue 11: synthetic sequences, built in
        from .waveforms import load_waveforms

        return load_waveforms("train"), load_waveforms("test")
    root = default_data_dir(data_dir)
    candidates = [root / name]
    if _ALIASES.get(root.name.lower()) == name:
        candidates.append(root)  # --data-dir pointing straight at the mnist/ folder
    for folder in candidates:
        if folder.is_dir() and not _missing(name, folder):
            return _load_named(name, folder)
    target = candidates[0]
    for folder in candidates:
        if folder.is_dir() and len(_missing(name, folder)) < len(_expected_files(name)):
            target = folder  # partly there: complete it
            break
    expected = ", ".join(_expected_files(name))
    source = ("--data-dir" if data_dir else "$CNNC_DATA" if os.environ.get("CNNC_DATA")
              else "the default ~/.cache/cnnc/data")
    gz = "" if name == "cifar10" else " (gzip or not)"
    hint = (f"cnnc looks for {expected}{gz} in {target} ({source} + '/{name}'); "
            f"copy the files there, or point --data-dir (or the CNNC_DATA environment "
            f"variable) at a folder that holds a {name}/ sub-folder")
    if name == "cifar10":
        hint += " (the binary version: cifar-10-binary.tar.gz, extracted)"
    if download is None:
        download = os.environ.get("CNNC_OFFLINE", "").strip().lower() in ("", "0", "no", "false")
    if not download:
        raise DataError(f"{name} was not found in {target}, and downloads are disabled",
                        hint=hint)
    try:
        download_dataset(name, target)
    except _NetworkError as exc:
        raise DataError(f"{name} was not found in {target}, and downloading it failed "
                        f"(network unreachable? {exc.message})", hint=hint) from None
    return _load_named(name, target)


def _looks_like_path(spec: str) -> bool:
    return ("/" in spec or os.sep in spec or (os.altsep or "/") in spec
            or spec.lower().endswith(".npz") or spec.startswith("~"))


def _align(train: Dataset, test: Dataset, where: Any) -> tuple[Dataset, Dataset]:
    """Give the test split the training split's class list (derived lists may differ when
    a split lacks the highest classes)."""
    if test.class_names == train.class_names:
        return train, test
    if len(test) and int(test.y.max()) >= train.num_classes:
        raise DataError(f"{where}: the test split has label {int(test.y.max())}, but the "
                        f"training split has only {train.num_classes} classes")
    return train, Dataset(test.x, test.y, train.class_names, test.name)


def _with_holdout(ds: Dataset) -> tuple[Dataset, Dataset]:
    return split_validation(ds, HOLDOUT_FRACTION, np.random.default_rng(HOLDOUT_SEED))


def resolve_dataset(spec: str, data_dir: str | os.PathLike[str] | None = None, *,
                    download: bool | None = None) -> tuple[Dataset, Dataset]:
    """``(train, test)`` for a data set name or path.

    * a known name (``digits``, ``mnist``, ``fashion-mnist``, ``cifar10`` and aliases such as
      ``cifar-10``) - names win over a same-named folder in the current directory unless
      the spec looks like a path (has a ``/``, starts with ``~`` or ends with ``.npz``);
    * an ``.npz`` file (any existing file): its ``x_test``/``y_test``, else a stratified
      holdout of 1/6 drawn with seed 0;
    * a folder holding MNIST-style IDX files, or CIFAR-10 binary batches;
    * an image folder: with ``train/`` and ``test/`` sub-folders, or else a seeded holdout
      as for .npz.

    ``download``: fetch missing named data sets (default: yes unless ``CNNC_OFFLINE`` is set).
    """
    key = spec.strip()
    named = _ALIASES.get(key.lower())
    if named and not _looks_like_path(key):
        return _resolve_named(named, data_dir, download)
    p = Path(key).expanduser()
    if p.is_file():
        name = p.stem
        train = load_npz(p, "train", name=name)
        if _npz_has_test(p):
            return _align(train, load_npz(p, "test", name=name), p)
        return _with_holdout(train)
    if p.is_dir():
        dirname = p.resolve().name
        if _find_first(p, _idx_candidates("train", "images", "idx3")) or \
                _find_first(p, _idx_candidates("t10k", "images", "idx3")):
            name = _ALIASES.get(dirname.lower(), dirname)
            return _align(load_mnist_dir(p, "train", name=name),
                          load_mnist_dir(p, "test", name=name), p)
        cf = _cifar_folder(p)
        if any((cf / f).is_file() for f in _CIFAR_TRAIN + _CIFAR_TEST):
            return load_cifar10_dir(p, "train"), load_cifar10_dir(p, "test")
        if (p / "train").is_dir() and (p / "test").is_dir():
            train = load_image_folder(p / "train", name=dirname)
            c, h, w = train.shape
            test = load_image_folder(p / "test", name=dirname, classes=train.class_names,
                                     mode="L" if c == 1 else "RGB", size=(w, h))
            return train, test
        return _with_holdout(load_image_folder(p, name=dirname))
    if p.exists():
        raise DataError(f"{spec}: is neither a file nor a folder")
    raise DataError(f"unknown data set {spec!r}: not one of {', '.join(KNOWN_DATASETS)}, and "
                    "no such file or folder",
                    hint="give a data set name, an .npz file, a folder of IDX files or CIFAR-10 "
                         "batches, or a folder with one sub-folder of images per class")


# --------------------------------------------------------------------------- normalization

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


def _affine(x_dtype: np.dtype, mean: np.ndarray | None, std: np.ndarray | None,
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
    scale, shift = _affine(x.dtype, mean, std, c)
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


# --------------------------------------------------------------------------- augmentation

def random_crop(x: np.ndarray, pad: int, rng: np.random.Generator,
                scratch: np.ndarray | None = None) -> None:
    """In place: each image of ``x`` ``(B, C, H, W)`` becomes a random ``H x W`` crop of itself
    zero-padded by ``pad`` on every side (offsets uniform in ``0..2*pad``, from ``rng``).
    ``scratch``: an optional ``(C, H, W)`` array of x's dtype to avoid an allocation."""
    if pad <= 0 or len(x) == 0:
        return
    b, c, h, w = x.shape
    if pad >= h or pad >= w:
        raise UsageError(f"crop padding {pad} must be smaller than the image ({h}x{w})")
    if scratch is None:
        scratch = np.empty((c, h, w), dtype=x.dtype)
    shifts = rng.integers(-pad, pad + 1, size=(b, 2))
    for i in range(b):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        if dy == 0 and dx == 0:
            continue
        scratch.fill(0)
        # output[r, s] = input[r + dy, s + dx] where inside, else 0
        scratch[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
            x[i, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
        x[i] = scratch


def random_flip(x: np.ndarray, rng: np.random.Generator,
                scratch: np.ndarray | None = None, p: float = 0.5) -> None:
    """In place: mirror each image of ``x`` ``(B, C, H, W)`` left-right with probability ``p``."""
    if len(x) == 0:
        return
    if scratch is None:
        scratch = np.empty(x.shape[1:], dtype=x.dtype)
    flips = rng.random(len(x)) < p
    for i in np.flatnonzero(flips):
        scratch[...] = x[i, :, :, ::-1]
        x[i] = scratch


@dataclass(frozen=True)
class Augmentation:
    """Per-batch training augmentation: random crop with zero padding ``crop_pad`` (0 =
    off), then horizontal flip (p = 0.5). Falsy when it does nothing."""

    crop_pad: int = 0
    flip: bool = False

    def __bool__(self) -> bool:
        return self.crop_pad > 0 or self.flip

    def apply(self, x: np.ndarray, rng: np.random.Generator,
              scratch: np.ndarray | None = None) -> None:
        """Augment the batch ``x`` in place (crop offsets are drawn first, then flips)."""
        if scratch is None and self:
            scratch = np.empty(x.shape[1:], dtype=x.dtype)
        if self.crop_pad > 0:
            random_crop(x, self.crop_pad, rng, scratch)
        if self.flip:
            random_flip(x, rng, scratch)

    def describe(self) -> str:
        parts = ([f"crop(pad={self.crop_pad})"] if self.crop_pad else []) + \
                (["flip"] if self.flip else [])
        return "+".join(parts) or "none"


def augmentations_for(dataset_name: str) -> Augmentation:
    """Default training augmentation for a data set: crop(pad=4)+flip for CIFAR-10 (the
    ResNet paper's recipe); none for everything else (flipping digits or letters is
    wrong, and for unknown data sets nothing is assumed)."""
    if _ALIASES.get(dataset_name.lower()) == "cifar10":
        return Augmentation(crop_pad=4, flip=True)
    return Augmentation()


def parse_augmentation(text: str) -> Augmentation:
    """Parse a flag value: ``none``, ``flip``, ``crop`` (pad 4), ``crop2``, ``crop=2``, or a
    combination joined by ``,`` or ``+`` (``crop4,flip``)."""
    crop, flip = 0, False
    t = text.strip().lower()
    if t in ("", "none", "off", "no"):
        return Augmentation()
    for part in re.split(r"[,+\s]+", t):
        if not part:
            continue
        if part == "flip":
            flip = True
            continue
        m = re.fullmatch(r"crop(?:=?(\d+))?", part)
        if m:
            crop = int(m.group(1)) if m.group(1) else 4
            continue
        raise UsageError(f"unknown augmentation {part!r} in {text!r}",
                         hint="use none, flip, crop, cropN or crop=N, joined by commas")
    return Augmentation(crop_pad=crop, flip=flip)


# --------------------------------------------------------------------------- batches

class Batches:
    """Mini-batches of a data set, written into preallocated float32 buffers.

    ``for xb, yb in Batches(ds, 128, mean=m, std=s, rng=rng): ...`` - each epoch (each
    ``iter``) visits every image once in an order shuffled with ``rng`` (in order when
    ``shuffle=False``). ``xb`` is ``float32 (n, C, H, W)`` normalized like :func:`to_float`,
    ``yb`` is ``int64 (n,)``; ``n`` is ``batch_size`` except for the last, partial batch,
    which is yielded with its own size (views of the first ``n`` rows of the buffers) unless
    ``drop_last=True`` drops it (then every batch has exactly ``batch_size`` images, so a
    training step planned for one batch size never sees another).

    The yielded arrays are the same buffers (``self.x_batch``, ``self.y_batch``) every step:
    copy them to keep them. Nothing is allocated per step. ``augment`` is applied to the raw
    pixels before normalization, so crop padding is black (pixel 0), as in torchvision.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None,
                 rng: np.random.Generator | None = None, shuffle: bool = True,
                 drop_last: bool = False, augment: Augmentation | None = None):
        if int(batch_size) < 1:
            raise UsageError(f"the batch size must be at least 1, not {batch_size}")
        if (shuffle or augment) and rng is None:
            raise UsageError("Batches needs a numpy Generator (rng=) to shuffle or augment")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.rng = rng
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment if augment else None
        c, h, w = dataset.shape
        self._scale, self._shift = _affine(dataset.x.dtype, mean, std, c)
        b = self.batch_size
        self.x_batch = np.empty((b, c, h, w), dtype=np.float32)
        self.y_batch = np.empty(b, dtype=np.int64)
        self._raw = np.empty((b, c, h, w), dtype=dataset.x.dtype)
        self._scratch = np.empty((c, h, w), dtype=dataset.x.dtype)
        self._order = np.arange(len(dataset), dtype=np.int64)

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Images per epoch (all of them, or fewer when ``drop_last`` drops a partial batch)."""
        n, b = len(self.dataset), self.batch_size
        return (n // b) * b if self.drop_last else n

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        x, y = self.dataset.x, self.dataset.y
        n, b = len(self.dataset), self.batch_size
        if self.shuffle:
            self._order.sort()
            self.rng.shuffle(self._order)  # type: ignore[union-attr]
        for start in range(0, n, b):
            idx = self._order[start:start + b]
            k = len(idx)
            if k < b and self.drop_last:
                break
            raw = self._raw if k == b else self._raw[:k]
            np.take(x, idx, axis=0, out=raw)
            yb = self.y_batch if k == b else self.y_batch[:k]
            np.take(y, idx, out=yb)
            if self.augment is not None:
                self.augment.apply(raw, self.rng, self._scratch)  # type: ignore[arg-type]
            xb = self.x_batch if k == b else self.x_batch[:k]
            np.multiply(raw, self._scale, out=xb, casting="unsafe")
            np.subtract(xb, self._shift, out=xb)
            yield xb, yb


# --------------------------------------------------------------------------- model fit

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
