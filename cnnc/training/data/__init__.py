"""Data sets: loaders for the standard formats, resolution by name, transforms,
augmentation and batches.

Every loader returns a :class:`Dataset` whose ``x`` is ``(N, C, H, W)`` (``uint8`` pixels
0..255, or ``float32`` for ``.npz`` files that hold floats) and ``y`` is ``int64`` labels.
Every damaged or unexpected input raises :class:`~cnnc.errors.DataError` naming the file
and the problem; nothing is ever unpickled.

The package's parts, in the order data flows through them:

* :mod:`.catalog`: the named data sets (class names, aliases, checksums, mirrors);
* :mod:`.formats`: one reader per format: :mod:`~.formats.idx` (MNIST, Fashion-MNIST),
  :mod:`~.formats.cifar` (CIFAR-10 binary), :mod:`~.formats.npz`, :mod:`~.formats.images`
  (class folders, single images), :mod:`~.formats.digits` (scikit-learn's digits);
* :mod:`.download` and :mod:`.resolve`: from a ``--data`` name or path to ``(train, test)``;
* :mod:`.transforms`: normalization statistics, validation split, fitting to a model's input;
* :mod:`.augment` and :mod:`.batches`: what training does to every mini-batch.
"""
from __future__ import annotations

from .augment import Augmentation, augmentations_for, parse_augmentation, random_crop, random_flip
from .batches import Batches
from .catalog import (CHECKSUMS, CIFAR10_CLASSES, DOWNLOADS, FASHION_MNIST_CLASSES,
                      HOLDOUT_FRACTION, HOLDOUT_SEED, KNOWN_DATASETS, MNIST_CLASSES)
from .dataset import Dataset, dataset_from_arrays
from .download import default_data_dir, download_dataset, download_file
from .formats.cifar import load_cifar10_dir
from .formats.digits import load_digits
from .formats.idx import load_idx, load_mnist_dir, read_idx
from .formats.images import load_image_file, load_image_folder
from .formats.npz import load_npz
from .resolve import recorded_source, resolve_dataset
from .transforms import (check_input_shape, fit_to_shape, normalize_stats, split_validation,
                         to_float)

__all__ = [
    "Dataset", "dataset_from_arrays", "Batches", "Augmentation",
    "load_idx", "read_idx", "load_mnist_dir", "load_cifar10_dir", "load_npz",
    "load_image_folder", "load_digits", "load_image_file",
    "resolve_dataset", "recorded_source", "default_data_dir", "download_dataset", "download_file",
    "normalize_stats", "to_float", "split_validation",
    "random_crop", "random_flip", "augmentations_for", "parse_augmentation",
    "check_input_shape", "fit_to_shape",
    "KNOWN_DATASETS", "DOWNLOADS", "CHECKSUMS", "MNIST_CLASSES", "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES", "HOLDOUT_FRACTION", "HOLDOUT_SEED",
]
