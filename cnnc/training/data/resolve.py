"""From a ``--data`` name or path to ``(train, test)`` data sets.

Named data sets live in ``DATA_DIR/<name>/`` where ``DATA_DIR`` is ``--data-dir``, else
``$CNNC_DATA``, else ``~/.cache/cnnc/data``. When the files are missing they are downloaded
(:mod:`cnnc.training.data.download`). Set ``CNNC_OFFLINE=1`` (or pass ``download=False``) to never
download.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .catalog import ALIASES, CHECKSUMS, HOLDOUT_FRACTION, HOLDOUT_SEED, KNOWN_DATASETS
from .dataset import Dataset
from .download import NetworkError, default_data_dir, download_dataset
from .formats.cifar import CIFAR_TEST, CIFAR_TRAIN, cifar_folder, cifar_missing, load_cifar10_dir
from .formats.common import find_first
from .formats.digits import load_digits
from .formats.idx import idx_candidates, load_mnist_dir, mnist_missing
from .formats.images import load_image_folder
from .formats.npz import has_test_split, load_npz
from .transforms import split_validation


def _expected_files(name: str) -> list[str]:
    if name == "cifar10":
        return list(CIFAR_TRAIN + CIFAR_TEST)
    return list(CHECKSUMS[name])


def _missing(name: str, folder: Path) -> list[str]:
    if not folder.is_dir():
        return _expected_files(name)
    return cifar_missing(folder) if name == "cifar10" else mnist_missing(folder)


def _load_named(name: str, folder: Path) -> tuple[Dataset, Dataset]:
    if name == "cifar10":
        return load_cifar10_dir(folder, "train"), load_cifar10_dir(folder, "test")
    return (load_mnist_dir(folder, "train", name=name), load_mnist_dir(folder, "test", name=name))


def _resolve_named(name: str, data_dir: str | os.PathLike[str] | None,
                   download: bool | None) -> tuple[Dataset, Dataset]:
    if name == "digits":
        return load_digits("train"), load_digits("test")
    if name == "waveforms":  # synthetic sequences for 1-D networks, built in
        from .formats.waveforms import load_waveforms

        return load_waveforms("train"), load_waveforms("test")
    root = default_data_dir(data_dir)
    candidates = [root / name]
    if ALIASES.get(root.name.lower()) == name:
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
    except NetworkError as exc:
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


def recorded_source(spec: str | None, data_dir: str | None) -> tuple[str | None, str | None]:
    """The data source as a run folder records it, usable from any working directory: a
    known name stays a name; a path (and ``data_dir``) becomes absolute."""
    if spec is not None:
        key = spec.strip()
        if not (ALIASES.get(key.lower()) and not _looks_like_path(key)):
            p = Path(key).expanduser()
            if p.exists():
                spec = str(p.resolve())
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    return spec, data_dir


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
    named = ALIASES.get(key.lower())
    if named and not _looks_like_path(key):
        return _resolve_named(named, data_dir, download)
    p = Path(key).expanduser()
    if p.is_file():
        name = p.stem
        train = load_npz(p, "train", name=name)
        if has_test_split(p):
            return _align(train, load_npz(p, "test", name=name), p)
        return _with_holdout(train)
    if p.is_dir():
        dirname = p.resolve().name
        if find_first(p, idx_candidates("train", "images", "idx3")) or \
                find_first(p, idx_candidates("t10k", "images", "idx3")):
            name = ALIASES.get(dirname.lower(), dirname)
            return _align(load_mnist_dir(p, "train", name=name),
                          load_mnist_dir(p, "test", name=name), p)
        cf = cifar_folder(p)
        if any((cf / f).is_file() for f in CIFAR_TRAIN + CIFAR_TEST):
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
