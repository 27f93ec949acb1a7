"""Data loaders, resolution by name, splits, batches, augmentation and shape fitting.

The IDX tests read the verified MNIST / Fashion-MNIST copies in ../shared/data (beside the
repository root) and damaged copies of them made in tmp_path; CIFAR-10, .npz and image
folders are tested on small files written here in their formats.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from cnnc.training import data
from cnnc.training.data import download
from cnnc.training.data import (Augmentation, Batches, Dataset, augmentations_for, check_input_shape,
                       fit_to_shape, load_cifar10_dir, load_digits, load_idx, load_image_file,
                       load_image_folder, load_mnist_dir, load_npz, normalize_stats,
                       parse_augmentation, random_crop, random_flip, read_idx, resolve_dataset,
                       split_validation, to_float)
from cnnc.errors import DataError, UsageError
from conftest import FASHION, MNIST, SHARED_DATA, needs_shared

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may reach the network: any download attempt fails like an offline machine."""
    def offline(url, timeout):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(download, "open_url", offline)
    monkeypatch.delenv("CNNC_DATA", raising=False)
    monkeypatch.delenv("CNNC_OFFLINE", raising=False)


def _idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    a = np.asarray(arr)
    if a.dtype.kind in "if" and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder(">"))
    head = bytes([0, 0, codes[a.dtype], a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.tobytes()


def _write_idx_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                    gz: bool = True) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    ip = folder / f"{prefix}-images-idx3-ubyte{ext}"
    lp = folder / f"{prefix}-labels-idx1-ubyte{ext}"
    for p, a in ((ip, images), (lp, labels)):
        raw = _idx_bytes(a)
        p.write_bytes(gzip.compress(raw) if gz else raw)
    return ip, lp


def _small_idx(n=7, h=5, w=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, h, w), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.uint8))


def _expect(exc_type, func, *args, needles=(), **kwargs):
    with pytest.raises(exc_type) as info:
        func(*args, **kwargs)
    text = str(info.value)
    for needle in needles:
        assert str(needle) in text, f"{needle!r} not in {text!r}"
    return text


# ------------------------------------------------------------------ real MNIST / Fashion-MNIST

@needs_shared
def test_mnist_train_real():
    ds = load_mnist_dir(MNIST, "train")
    assert ds.x.shape == (60000, 1, 28, 28) and ds.x.dtype == np.uint8
    assert ds.y.shape == (60000,) and ds.y.dtype == np.int64
    assert ds.shape == (1, 28, 28) and len(ds) == 60000
    assert ds.name == "mnist" and ds.class_names == tuple("0123456789") and ds.num_classes == 10
    assert ds.class_counts().tolist() == MNIST_TRAIN_COUNTS
    assert ds.x.max() == 255 and ds.x.min() == 0
    assert ds.x.flags.writeable and ds.x.flags.c_contiguous
    # the famous first training image is a 5
    assert ds.y[0] == 5


@needs_shared
def test_mnist_test_real():
    ds = load_mnist_dir(MNIST, "test")
    assert ds.x.shape == (10000, 1, 28, 28)
    assert ds.class_counts().tolist() == MNIST_TEST_COUNTS
    assert ds.y[:3].tolist() == [7, 2, 1]


@needs_shared
def test_fashion_mnist_real():
    train = load_mnist_dir(FASHION, "train")
    test = load_mnist_dir(FASHION, "test")
    assert train.name == "fashion-mnist" and train.class_names[0] == "T-shirt/top"
    assert train.class_names[9] == "Ankle boot"
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10


@needs_shared
def test_raw_and_gzip_detected_by_magic_not_name(tmp_path):
    ref = load_mnist_dir(MNIST, "test")
    raw_imgs = gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw_labels = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    # uncompressed data behind a .gz name, gzip data behind a plain name
    (tmp_path / "imgs.gz").write_bytes(raw_imgs)
    (tmp_path / "labels.bin").write_bytes((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    ds = load_idx(tmp_path / "imgs.gz", tmp_path / "labels.bin")
    np.testing.assert_array_equal(ds.x, ref.x)
    np.testing.assert_array_equal(ds.y, ref.y)
    # a folder of uncompressed files with the standard names
    folder = tmp_path / "rawmnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw_imgs)
    (folder / "t10k-labels.idx1-ubyte").write_bytes(raw_labels)  # the original dotted spelling
    ds2 = load_mnist_dir(folder, "test")
    np.testing.assert_array_equal(ds2.y, ref.y)


@needs_shared
def test_truncated_gzip_rejected(tmp_path):
    data_ = (MNIST / "t10k-images-idx3-ubyte.gz").read_bytes()
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(data_[: len(data_) // 2])
    _expect(DataError, read_idx, bad, needles=[bad, "truncated"])


@needs_shared
@pytest.mark.parametrize("where", ["crc", "isize", "body"])
def test_flipped_bytes_in_gzip_rejected(tmp_path, where):
    data_ = bytearray((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    pos = {"crc": len(data_) - 6, "isize": len(data_) - 2, "body": len(data_) // 2}[where]
    data_[pos] ^= 0x01
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bytes(data_))
    _expect(DataError, read_idx, bad, needles=[bad])


@needs_shared
def test_random_gzip_damage_never_escapes(tmp_path):
    data_ = (MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()
    ref = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(0)
    bad = tmp_path / "l.gz"
    for pos in rng.choice(len(data_), size=40, replace=False):
        b = bytearray(data_)
        b[pos] ^= 0x10
        bad.write_bytes(bytes(b))
        try:
            got = read_idx(bad)
        except DataError as err:
            assert str(bad) in str(err)
        else:  # only header bytes gzip does not check (mtime, name) may change harmlessly
            np.testing.assert_array_equal(got, ref)


@needs_shared
def test_labels_images_count_mismatch_real(tmp_path):
    text = _expect(DataError, load_idx, MNIST / "t10k-images-idx3-ubyte.gz",
                   MNIST / "train-labels-idx1-ubyte.gz", needles=["60,000", "10,000"])
    assert "train-labels-idx1-ubyte.gz" in text


# ------------------------------------------------------------------ IDX on small files

def test_idx_small_round_trip(tmp_path):
    imgs, labels = _small_idx()
    ip, lp = _write_idx_pair(tmp_path / "d", "train", imgs, labels)
    ds = load_idx(ip, lp)
    assert ds.x.shape == (7, 1, 5, 4)
    np.testing.assert_array_equal(ds.x[:, 0], imgs)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.name == "d"


def test_idx_float_images(tmp_path):
    imgs = np.random.default_rng(0).random((3, 2, 2)).astype(">f4")
    (tmp_path / "i").write_bytes(_idx_bytes(imgs))
    (tmp_path / "l").write_bytes(_idx_bytes(np.array([0, 1, 2], np.uint8)))
    ds = load_idx(tmp_path / "i", tmp_path / "l")
    assert ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[:, 0], imgs.astype(np.float32))


def test_idx_wrong_magic(tmp_path):
    imgs, _ = _small_idx()
    raw = bytearray(_idx_bytes(imgs))
    raw[0] = 0x12
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(bytes(raw))
    _expect(DataError, read_idx, p, needles=[p, "magic"])
    raw[0], raw[2] = 0, 0x42  # unknown type code
    p.write_bytes(bytes(raw))
    _expect(DataError, read_idx, p, needles=[p, "magic"])


def test_idx_header_count_larger_than_data(tmp_path):
    imgs, labels = _small_idx(n=7)
    raw = bytearray(_idx_bytes(labels))
    raw[4:8] = struct.pack(">I", 9)
    p = tmp_path / "labels"
    p.write_bytes(gzip.compress(bytes(raw)))
    _expect(DataError, read_idx, p, needles=[p, "truncated", "9 values"])
    raw = bytearray(_idx_bytes(imgs))
    raw[4:8] = struct.pack(">I", 1_000_000)
    p.write_bytes(bytes(raw))
    _expect(DataError, read_idx, p, needles=[p, "truncated", "1000000x5x4"])


def test_idx_trailing_bytes(tmp_path):
    _, labels = _small_idx()
    p = tmp_path / "labels"
    p.write_bytes(_idx_bytes(labels) + b"junk")
    _expect(DataError, read_idx, p, needles=[p, "unexpected bytes"])


def test_idx_tiny_and_empty_files(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    _expect(DataError, read_idx, p, needles=[p])
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # header cut short
    _expect(DataError, read_idx, p, needles=[p, "header"])
    _expect(DataError, read_idx, tmp_path / "missing", needles=["no such file"])
    _expect(DataError, read_idx, tmp_path, needles=["directory"])


def test_idx_count_mismatch_and_swapped_files(tmp_path):
    imgs, labels = _small_idx(n=7)
    ip, lp = _write_idx_pair(tmp_path, "train", imgs, labels[:5])
    _expect(DataError, load_idx, ip, lp, needles=[lp, ip, "5 labels", "7 images"])
    ip, lp = _write_idx_pair(tmp_path, "train", imgs, labels)
    _expect(DataError, load_idx, lp, ip, needles=["3 dimensions"])


def test_idx_label_out_of_range_for_classes(tmp_path):
    imgs, labels = _small_idx()
    labels[2] = 12
    ip, lp = _write_idx_pair(tmp_path / "fashion", "train", imgs, labels)
    _expect(DataError, load_mnist_dir, tmp_path / "fashion", "train",
            needles=["label 12", "10 classes"])
    ds = load_mnist_dir(tmp_path / "fashion", "train", name="letters")  # not fashion: K=13
    assert ds.num_classes == 13 and ds.name == "letters"


def test_mnist_dir_missing_files(tmp_path):
    imgs, labels = _small_idx()
    _write_idx_pair(tmp_path, "train", imgs, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    _expect(DataError, load_mnist_dir, tmp_path, "train",
            needles=[tmp_path, "train-labels-idx1-ubyte"])
    _expect(DataError, load_mnist_dir, tmp_path, "test", needles=["t10k-images", "t10k-labels"])
    _expect(UsageError, load_mnist_dir, tmp_path, "validation", needles=["split"])
    _expect(DataError, load_mnist_dir, tmp_path / "nope", "train", needles=["no such folder"])


# ------------------------------------------------------------------ CIFAR-10 binary

def _cifar_records(n, seed, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.uint8) if labels is None else np.asarray(labels, np.uint8)
    raw = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).tobytes()
    return x, y, raw


def _write_cifar(folder: Path, meta: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y, raw = _cifar_records(3, seed=i)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
        xs.append(x)
        ys.append(y)
    xt, yt, raw = _cifar_records(2, seed=99)
    (folder / "test_batch.bin").write_bytes(raw)
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(data.CIFAR10_CLASSES) + "\n\n")
    return np.concatenate(xs), np.concatenate(ys), xt, yt


def test_cifar_small(tmp_path):
    x, y, xt, yt = _write_cifar(tmp_path / "c")
    train = load_cifar10_dir(tmp_path / "c", "train")
    test = load_cifar10_dir(tmp_path / "c", "test")
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == np.uint8
    assert test.x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y)
    np.testing.assert_array_equal(test.x, xt)
    assert train.class_names == data.CIFAR10_CLASSES and train.name == "cifar10"


def test_cifar_channel_layout(tmp_path):
    """Bytes 1..1024 are the red plane, row-major; then green, then blue."""
    folder = tmp_path / "c"
    _write_cifar(folder)
    rec = bytearray(3073)
    rec[0] = 4
    rec[1 + 0 * 1024 + 0 * 32 + 1] = 11     # red, row 0, column 1
    rec[1 + 1 * 1024 + 2 * 32 + 0] = 22     # green, row 2, column 0
    rec[1 + 2 * 1024 + 31 * 32 + 31] = 33   # blue, row 31, column 31
    (folder / "test_batch.bin").write_bytes(bytes(rec))
    ds = load_cifar10_dir(folder, "test")
    assert ds.y.tolist() == [4]
    assert ds.x[0, 0, 0, 1] == 11 and ds.x[0, 1, 2, 0] == 22 and ds.x[0, 2, 31, 31] == 33
    assert int(ds.x.sum()) == 66


def test_cifar_subfolder_and_meta_names(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-bin", meta=False)
    ds = load_cifar10_dir(tmp_path, "train")
    assert ds.class_names == data.CIFAR10_CLASSES
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text(
        "\n".join(f"c{i}" for i in range(10)))
    assert load_cifar10_dir(tmp_path, "train").class_names[3] == "c3"


def test_cifar_bad_length(tmp_path):
    folder = tmp_path / "c"
    _write_cifar(folder)
    p = folder / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-100])
    _expect(DataError, load_cifar10_dir, folder, "train", needles=[p, "3073"])
    p.write_bytes(b"")
    _expect(DataError, load_cifar10_dir, folder, "train", needles=[p])


def test_cifar_bad_label_and_missing_file(tmp_path):
    folder = tmp_path / "c"
    _write_cifar(folder)
    _, _, raw = _cifar_records(2, seed=5, labels=[1, 10])
    (folder / "test_batch.bin").write_bytes(raw)
    _expect(DataError, load_cifar10_dir, folder, "test",
            needles=["test_batch.bin", "record 1", "label 10"])
    (folder / "data_batch_4.bin").unlink()
    _expect(DataError, load_cifar10_dir, folder, "train", needles=["data_batch_4.bin"])


# ------------------------------------------------------------------ npz

def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 1, 0])
    cases = {
        "nhw": (rng.integers(0, 256, (5, 6, 7), dtype=np.uint8), (1, 6, 7)),
        "nhwc": (rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8), (3, 6, 7)),
        "nhwc1": (rng.integers(0, 256, (5, 6, 7, 1), dtype=np.uint8), (1, 6, 7)),
        "nchw": (rng.integers(0, 256, (5, 3, 6, 7), dtype=np.uint8), (3, 6, 7)),
        "ambiguous": (rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8), (3, 4, 4)),
    }
    for name, (x, shape) in cases.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, x=x, y=y)
        ds = load_npz(p)
        assert ds.shape == shape, name
        assert ds.name == name and ds.x.dtype == np.uint8 and ds.y.dtype == np.int64
        if name == "nhwc":
            np.testing.assert_array_equal(ds.x, x.transpose(0, 3, 1, 2))
        assert ds.num_classes == 10  # no class_names, all labels < 10: the digits


def test_npz_dtypes(tmp_path):
    y = np.array([0, 1])
    p = tmp_path / "a.npz"
    np.savez(p, x=np.random.default_rng(0).random((2, 4, 4)), y=y)
    assert load_npz(p).x.dtype == np.float32
    np.savez(p, x=np.full((2, 4, 4), 200, np.int64), y=y)
    ds = load_npz(p)
    assert ds.x.dtype == np.uint8 and ds.x.max() == 200
    np.savez(p, x=np.full((2, 4, 4), 300, np.int64), y=y)
    _expect(DataError, load_npz, p, needles=[p, "0..255"])
    bad = np.zeros((2, 4, 4))
    bad[0, 0, 0] = np.nan
    np.savez(p, x=bad, y=y)
    _expect(DataError, load_npz, p, needles=[p, "NaN"])
    np.savez(p, x=np.zeros((2, 4)), y=y)
    _expect(DataError, load_npz, p, needles=[p, "shape"])


def test_npz_labels(tmp_path):
    x = np.zeros((4, 3, 3), np.uint8)
    p = tmp_path / "l.npz"
    np.savez(p, x=x, y=np.array([0, 1, -1, 2]))
    _expect(DataError, load_npz, p, needles=[p, "negative"])
    np.savez(p, x=x, y=np.array([0, 1, 3, 2]), class_names=np.array(["a", "b", "c"]))
    _expect(DataError, load_npz, p, needles=[p, "label 3", "3 classes"])
    np.savez(p, x=x, y=np.array([0, 1, 2]))
    _expect(DataError, load_npz, p, needles=[p, "3 labels", "4 images"])
    np.savez(p, x=x, y=np.array([0.0, 1.5, 2.0, 1.0]))
    _expect(DataError, load_npz, p, needles=["whole numbers"])
    np.savez(p, x=x, y=np.eye(4))
    _expect(DataError, load_npz, p, needles=["1-D", "one-hot"])
    np.savez(p, x=x, y=np.array(["a", "b", "c", "d"]))
    _expect(DataError, load_npz, p, needles=["integer"])
    np.savez(p, x=x, y=np.array([[0], [1], [2], [1.0]]), class_names=np.array(["a", "b", "c"]))
    ds = load_npz(p)
    assert ds.y.tolist() == [0, 1, 2, 1] and ds.class_names == ("a", "b", "c")


def test_npz_missing_keys(tmp_path):
    p = tmp_path / "k.npz"
    np.savez(p, images=np.zeros((2, 3, 3)), labels=np.zeros(2))
    _expect(DataError, load_npz, p, needles=[p, "'x'", "'y'", "images, labels"])
    np.savez(p, x=np.zeros((2, 3, 3)), y=np.zeros(2, int))
    _expect(DataError, load_npz, p, "test", needles=["x_test"])
    np.savez(p, x_train=np.zeros((2, 3, 3)), y_train=np.zeros(2, int))
    assert len(load_npz(p)) == 2


def test_npz_pickled_object_array_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    _expect(DataError, load_npz, p, needles=[p, "unpickl"])
    p2 = tmp_path / "evil2.npz"
    np.savez(p2, x=np.zeros((2, 3, 3)), y=np.array([0, 1]),
             class_names=np.array(["a", 1], dtype=object))
    _expect(DataError, load_npz, p2, needles=[p2, "unpickl"])


def test_npz_not_an_archive(tmp_path):
    import pickle
    p = tmp_path / "pickle.npz"
    p.write_bytes(pickle.dumps({"x": 1}))
    _expect(DataError, load_npz, p, needles=[p, "not an .npz"])
    p = tmp_path / "arr.npy"
    np.save(p, np.zeros(3))
    _expect(DataError, load_npz, p, needles=[p, ".npy"])
    _expect(DataError, load_npz, tmp_path / "missing.npz", needles=["no such file"])


def test_npz_truncated(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, x=(np.arange(4000) % 256).astype(np.uint8).reshape(10, 20, 20), y=np.arange(10))
    raw = p.read_bytes()
    for keep in (0.3, 0.6, 0.95):
        p.write_bytes(raw[: int(len(raw) * keep)])
        _expect(DataError, load_npz, p, needles=[p])
    p = tmp_path / "tc.npz"
    np.savez_compressed(p, x=np.zeros((10, 20, 20), np.uint8), y=np.arange(10))
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    p.write_bytes(bytes(raw))
    _expect(DataError, load_npz, p, needles=[p])


def test_npz_resolve_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 5, 5), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    p = tmp_path / "mine.npz"
    np.savez(p, x=x, y=y, x_test=x[:4], y_test=y[:4], class_names=np.array(["a", "b", "c"]))
    train, test = resolve_dataset(str(p), None)
    assert len(train) == 60 and len(test) == 4 and test.class_names == ("a", "b", "c")
    p2 = tmp_path / "noholdout.npz"
    np.savez(p2, x=x, y=y)
    train, test = resolve_dataset(str(p2), None)
    assert len(test) == 10 and len(train) == 50  # 1/6 holdout
    assert sorted(test.class_counts()[:3].tolist()) == [3, 3, 4] and test.num_classes == 10
    _, test2 = resolve_dataset(str(p2), None)
    np.testing.assert_array_equal(test.x, test2.x)  # seeded: the same every time


# ------------------------------------------------------------------ image folders

def _png(path: Path, size=(6, 5), mode="L", value=0):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode in ("L", "I") else (value, 255 - value, 7)
    if mode == "RGBA":
        color = (value, 255 - value, 7, 128)
    Image.new(mode, size, color).save(path)


def test_image_folder_gray(tmp_path):
    root = tmp_path / "shapes"
    _png(root / "b_circle" / "1.png", value=10)
    _png(root / "b_circle" / "2.png", value=20)
    _png(root / "a_square" / "1.png", value=30)
    _png(root / "a_square" / "2.png", size=(9, 9), value=40)  # resized to the common 6x5
    (root / "a_square" / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden").mkdir()
    ds = load_image_folder(root)
    assert ds.class_names == ("a_square", "b_circle") and ds.name == "shapes"
    assert ds.x.shape == (4, 1, 5, 6) and ds.x.dtype == np.uint8
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert ds.x[0].max() == 30 and ds.x[1].min() == 40 and ds.x[3].max() == 20


def test_image_folder_color_mix(tmp_path):
    root = tmp_path / "mix"
    _png(root / "x" / "a.png", mode="L", value=100)
    _png(root / "x" / "b.png", mode="RGB", value=50)
    _png(root / "y" / "c.png", mode="RGBA", value=60)
    ds = load_image_folder(root)
    assert ds.shape == (3, 5, 6)
    assert ds.x[0, :, 0, 0].tolist() == [100, 100, 100]
    assert ds.x[1, :, 0, 0].tolist() == [50, 205, 7]
    assert ds.x[2, :, 0, 0].tolist() == [60, 195, 7]


def test_image_folder_errors(tmp_path):
    root = tmp_path / "bad"
    _png(root / "a" / "1.png")
    (root / "a" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _expect(DataError, load_image_folder, root, needles=[root / "a" / "2.png"])
    good = tmp_path / "trunc"
    _png(good / "a" / "1.png", size=(40, 40))
    p = good / "a" / "1.png"
    _png(good / "b" / "2.png", size=(40, 40))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 30])
    _expect(DataError, load_image_folder, good, needles=[p])
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    _expect(DataError, load_image_folder, empty, needles=[empty / "a", "no images"])
    _expect(DataError, load_image_folder, tmp_path / "nothere", needles=["no such folder"])
    flat = tmp_path / "flat"
    _png(flat / "x.png")
    _expect(DataError, load_image_folder, flat, needles=["sub-folder"])


def test_image_folder_train_test_resolve(tmp_path):
    root = tmp_path / "pets"
    for split in ("train", "test"):
        for cls, v in (("cat", 10), ("dog", 200)):
            for i in range(2):
                _png(root / split / cls / f"{i}.png", mode="RGB", value=v)
    _png(root / "test" / "cat" / "big.png", mode="L", size=(12, 10), value=10)
    train, test = resolve_dataset(str(root), None)
    assert train.shape == test.shape == (3, 5, 6)  # test forced to train's mode and size
    assert train.class_names == test.class_names == ("cat", "dog")
    assert len(train) == 4 and len(test) == 5 and train.name == "pets"
    _png(root / "test" / "bird" / "0.png", mode="RGB")
    _expect(DataError, resolve_dataset, str(root), None, needles=["bird"])


def test_image_folder_holdout(tmp_path):
    root = tmp_path / "plain"
    for cls in ("a", "b"):
        for i in range(6):
            _png(root / cls / f"{i}.png", value=i * 10)
    train, test = resolve_dataset(str(root), None)
    assert len(train) == 10 and len(test) == 2
    assert test.class_counts().tolist() == [1, 1]


def test_load_image_file(tmp_path):
    p = tmp_path / "img.png"
    _png(p, size=(28, 28), mode="RGB", value=100)
    x = load_image_file(p, (1, 28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == np.uint8
    # Pillow's luma: (100*299 + 155*587 + 7*114) / 1000 = 121.8 -> 122
    assert abs(int(x[0, 0, 0]) - 122) <= 1
    x3 = load_image_file(p, (3, 28, 28))
    assert x3.shape == (3, 28, 28) and x3[:, 0, 0].tolist() == [100, 155, 7]
    text = _expect(DataError, load_image_file, p, (1, 32, 32), needles=[p, "28x28", "32x32"])
    assert "resize" in text
    xr = load_image_file(p, (1, 32, 32), resize=True)
    assert xr.shape == (1, 32, 32)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    _expect(DataError, load_image_file, bad, (1, 28, 28), needles=[bad])
    _expect(DataError, load_image_file, tmp_path / "missing.png", (1, 28, 28),
            needles=["no such file"])
    _expect(DataError, load_image_file, p, (2, 28, 28), needles=["2 input channels"])


# ------------------------------------------------------------------ digits

def test_digits():
    train, test = load_digits("train"), load_digits("test")
    assert train.x.shape == (1437, 1, 8, 8) and test.x.shape == (360, 1, 8, 8)
    assert train.x.dtype == np.uint8 and train.x.max() == 255
    assert test.class_counts().min() >= 33
    t2 = load_digits("test")
    np.testing.assert_array_equal(test.x, t2.x)
    assert len(load_digits("all")) == 1797
    a, b = resolve_dataset("digits", None)
    assert len(a) == 1437 and len(b) == 360 and a.name == "digits"


# ------------------------------------------------------------------ resolve by name

@needs_shared
def test_resolve_named_from_data_dir(monkeypatch):
    def must_not_download(url, timeout):
        raise AssertionError("resolve_dataset tried to download " + url)

    monkeypatch.setattr(download, "open_url", must_not_download)
    train, test = resolve_dataset("mnist", str(SHARED_DATA))
    assert len(train) == 60000 and len(test) == 10000 and train.name == "mnist"
    train, test = resolve_dataset("Fashion-MNIST", str(SHARED_DATA))
    assert train.name == "fashion-mnist" and train.class_names[1] == "Trouser"
    # --data-dir pointing straight at the mnist folder works too
    train, _ = resolve_dataset("mnist", str(MNIST))
    assert len(train) == 60000
    # and $CNNC_DATA is the fallback
    monkeypatch.setenv("CNNC_DATA", str(SHARED_DATA))
    _, test = resolve_dataset("fashion_mnist", None)
    assert len(test) == 10000


def test_resolve_named_missing_offline(tmp_path):
    text = _expect(DataError, resolve_dataset, "cifar10", str(tmp_path),
                   needles=["cifar10", tmp_path / "cifar10", "data_batch_1.bin",
                            "test_batch.bin", "--data-dir", "CNNC_DATA",
                            "network disabled in tests"])
    assert "Traceback" not in text
    text = _expect(DataError, resolve_dataset, "mnist", str(tmp_path),
                   needles=[tmp_path / "mnist", "train-images-idx3-ubyte.gz",
                            "t10k-labels-idx1-ubyte.gz", "--data-dir"])
    assert not (tmp_path / "mnist").exists()  # no partial files, and no folder made for nothing


def test_resolve_named_downloads_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_OFFLINE", "1")
    _expect(DataError, resolve_dataset, "mnist", str(tmp_path), needles=["disabled"])
    _expect(DataError, resolve_dataset, "mnist", str(tmp_path), download=False,
            needles=["disabled"])


@needs_shared
def test_resolve_named_download_verified(tmp_path, monkeypatch, capsys):
    """The download path, fed from the verified local copies instead of the network."""
    seen = []

    def fake_open(url, timeout):
        seen.append(url)
        return io.BytesIO((MNIST / url.rsplit("/", 1)[-1]).read_bytes())

    monkeypatch.setattr(download, "open_url", fake_open)
    train, test = resolve_dataset("mnist", str(tmp_path))
    assert len(train) == 60000 and test.class_counts().tolist() == MNIST_TEST_COUNTS
    assert len(seen) == 4 and all(u.startswith(data.DOWNLOADS["mnist"][0]) for u in seen)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(data.CHECKSUMS["mnist"])
    assert "downloading" in capsys.readouterr().err


def test_download_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "open_url", lambda url, timeout: io.BytesIO(b"corrupted"))
    dest = tmp_path / "f.gz"
    _expect(DataError, data.download_file, "http://x/f.gz", dest, "0" * 32,
            needles=["checksum", "http://x/f.gz"])
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch):
    payload = b"hello"
    md5 = hashlib.md5(payload).hexdigest()
    monkeypatch.setitem(data.CHECKSUMS, "mnist", {"f.bin": (md5, None)})
    monkeypatch.setitem(data.DOWNLOADS, "mnist", ("http://dead/", "http://alive/"))

    def fake_open(url, timeout):
        if "dead" in url:
            raise urllib.error.URLError("timed out")
        return io.BytesIO(payload)

    monkeypatch.setattr(download, "open_url", fake_open)
    data.download_dataset("mnist", tmp_path / "m")
    assert (tmp_path / "m" / "f.bin").read_bytes() == payload


def test_cifar_download_and_extract(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-bin"
    x, y, _, _ = _write_cifar(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
        evil = tarfile.TarInfo("../../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    blob = buf.getvalue()
    monkeypatch.setitem(data.CHECKSUMS, "cifar10",
                        {"cifar-10-binary.tar.gz": (hashlib.md5(blob).hexdigest(), None)})
    monkeypatch.setattr(download, "open_url", lambda url, timeout: io.BytesIO(blob))
    root = tmp_path / "root"
    train, test = resolve_dataset("cifar-10", str(root))
    np.testing.assert_array_equal(train.x, x)
    assert len(test) == 2 and train.name == "cifar10"
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not (root / "cifar10" / "cifar-10-binary.tar.gz").exists()


def test_resolve_paths(tmp_path):
    imgs, labels = _small_idx(n=6)
    folder = tmp_path / "idx"
    _write_idx_pair(folder, "train", imgs, labels)
    _write_idx_pair(folder, "t10k", imgs[:2], labels[:2], gz=False)
    train, test = resolve_dataset(str(folder), None)
    assert len(train) == 6 and len(test) == 2 and train.name == "idx"
    cf = tmp_path / "somecifar"
    _write_cifar(cf)
    train, test = resolve_dataset(str(cf), None)
    assert train.name == "cifar10" and len(train) == 15
    _expect(DataError, resolve_dataset, "imagenet", None, needles=["imagenet", "mnist"])
    _expect(DataError, resolve_dataset, str(tmp_path / "x.npz"), None, needles=["x.npz"])


# ------------------------------------------------------------------ statistics, splits, batches

@needs_shared
def test_normalize_stats_mnist():
    train = load_mnist_dir(MNIST, "train")
    mean, std = normalize_stats(train)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (1,)
    assert mean[0] == pytest.approx(0.1307, abs=1e-4) and std[0] == pytest.approx(0.3081, abs=1e-4)
    z = to_float(train.x[:1000], mean, std)
    assert z.dtype == np.float32 and z.shape == (1000, 1, 28, 28)


def test_normalize_stats_float_and_constant():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(500, 2, 4, 4)).astype(np.float32)
    x[:, 1] = 5.0
    ds = Dataset(x, np.zeros(500, np.int64), ("a",), "f")
    mean, std = normalize_stats(ds)
    assert mean[0] == pytest.approx(x[:, 0].mean(), rel=1e-5)
    assert std[0] == pytest.approx(x[:, 0].std(), rel=1e-5)
    assert mean[1] == 5.0 and std[1] == 1.0
    z = to_float(x, mean, std)
    assert abs(float(z[:, 0].mean())) < 1e-4 and float(z[:, 0].std()) == pytest.approx(1, rel=1e-4)


def test_to_float_uint8_formula():
    x = np.array([[[[0, 255], [51, 102]]]], np.uint8)
    z = to_float(x, np.array([0.5]), np.array([0.25]))
    np.testing.assert_allclose(z[0, 0], (x[0, 0] / 255 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_float(x[0]), x[0] / 255, rtol=1e-6)
    with pytest.raises(DataError):
        to_float(x, np.array([0.5, 0.5]), np.array([1.0, 1.0]))
    with pytest.raises(DataError):
        to_float(x, np.array([0.5]), np.array([0.0]))


def _indexed(n=103, classes=4, shape=(1, 3, 3)):
    """A data set whose image i holds the value i (mod 256) everywhere."""
    x = np.empty((n, *shape), np.float32)
    x[:] = np.arange(n, dtype=np.float32)[:, None, None, None]
    return Dataset(x, (np.arange(n) % classes).astype(np.int64), tuple("abcd"[:classes]), "idx")


def test_split_validation():
    ds = _indexed(120)
    tr, va = split_validation(ds, 0.25, np.random.default_rng(7))
    assert len(va) == 30 and len(tr) == 90
    assert sorted(va.class_counts().tolist()) == [7, 7, 8, 8]
    ids = np.concatenate([tr.x[:, 0, 0, 0], va.x[:, 0, 0, 0]]).astype(int)
    assert sorted(ids.tolist()) == list(range(120))
    _, va2 = split_validation(ds, 0.25, np.random.default_rng(7))
    np.testing.assert_array_equal(va.x, va2.x)
    _, va3 = split_validation(ds, 0.25, np.random.default_rng(8))
    assert not np.array_equal(va.x, va3.x)
    tr0, va0 = split_validation(ds, 0.0, np.random.default_rng(0))
    assert len(tr0) == 120 and len(va0) == 0
    with pytest.raises(UsageError):
        split_validation(ds, 1.0, np.random.default_rng(0))
    with pytest.raises(UsageError):
        split_validation(ds, -0.1, np.random.default_rng(0))


def test_split_validation_imbalanced():
    y = np.array([0] * 90 + [1] * 10, np.int64)
    ds = Dataset(np.zeros((100, 1, 2, 2), np.uint8), y, ("a", "b"), "imb")
    _, va = split_validation(ds, 0.2, np.random.default_rng(0))
    assert va.class_counts().tolist() == [18, 2]


@pytest.mark.parametrize("batch", [1, 10, 103, 128])
def test_batches_cover_every_sample_once(batch):
    ds = _indexed(103)
    b = Batches(ds, batch, rng=np.random.default_rng(0))
    seen = []
    sizes = []
    for xb, yb in b:
        assert xb.dtype == np.float32 and yb.dtype == np.int64
        ids = xb[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(yb, ids % 4)
        seen.extend(ids.tolist())
        sizes.append(len(yb))
    assert sorted(seen) == list(range(103))
    assert len(sizes) == len(b) == -(-103 // batch)
    assert all(s == batch for s in sizes[:-1])


def test_batches_drop_last_reuse_and_order():
    ds = _indexed(103)
    b = Batches(ds, 10, rng=np.random.default_rng(0), drop_last=True)
    assert len(b) == 10 and b.num_samples == 100
    epoch1 = []
    for xb, yb in b:
        assert xb.shape == (10, 1, 3, 3)
        assert np.shares_memory(xb, b.x_batch) and np.shares_memory(yb, b.y_batch)
        epoch1.append(xb[:, 0, 0, 0].copy())
    epoch2 = [xb[:, 0, 0, 0].copy() for xb, _ in b]
    assert len(np.unique(np.concatenate(epoch1))) == 100
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))  # reshuffled
    again = Batches(ds, 10, rng=np.random.default_rng(0), drop_last=True)
    np.testing.assert_array_equal(np.concatenate([xb[:, 0, 0, 0].copy() for xb, _ in again]),
                                  np.concatenate(epoch1))
    ordered = Batches(ds, 50, shuffle=False)
    first = next(iter(ordered))[0][:, 0, 0, 0]
    np.testing.assert_array_equal(first, np.arange(50))


def test_batches_normalize_like_to_float():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    ds = Dataset(x, np.zeros(20, np.int64), ("a",), "u8")
    mean, std = normalize_stats(ds)
    b = Batches(ds, 8, mean=mean, std=std, shuffle=False)
    got = np.concatenate([xb.copy() for xb, _ in b])
    np.testing.assert_array_equal(got, to_float(x, mean, std))
    with pytest.raises(UsageError):
        Batches(ds, 0, rng=rng)
    with pytest.raises(UsageError):
        Batches(ds, 4)  # shuffling needs a Generator


def test_batches_load_a_given_order_into_given_buffers():
    """The training loop's use: its own epoch order, resumable at any step, written
    straight into the network's input buffers, augmentation drawn from its own generator."""
    ds = _indexed(103)
    order = np.random.default_rng(3).permutation(103)
    xbuf, ybuf = np.full((10, 1, 3, 3), -1, np.float32), np.full(10, -1, np.int64)
    b = Batches(ds, 10, shuffle=False, drop_last=True, out=(xbuf, ybuf),
                augment=Augmentation(flip=True), augment_rng=np.random.default_rng(5))
    xb, yb = b.load(order, 4)
    assert xb is xbuf and yb is ybuf
    np.testing.assert_array_equal(xbuf[:, 0, 0, 0], order[40:50])  # flips keep constant images
    np.testing.assert_array_equal(ybuf, order[40:50] % 4)
    with pytest.raises(UsageError, match="out must be"):
        Batches(ds, 10, shuffle=False, out=(np.zeros((9, 1, 3, 3), np.float32), ybuf))
    # the same draws as augmenting the gathered batch by hand
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 1, 4, 5), dtype=np.uint8).astype(np.float32)
    ds2 = Dataset(img, np.zeros(12, np.int64), ("a",), "f32")
    aug = Augmentation(crop_pad=1, flip=True)
    got = Batches(ds2, 4, shuffle=False, augment=aug, augment_rng=np.random.default_rng(9))
    xb, _ = got.load(np.arange(12)[::-1], 1)
    want = img[[7, 6, 5, 4]].copy()
    aug.apply(want, np.random.default_rng(9))
    np.testing.assert_array_equal(xb, want)


# ------------------------------------------------------------------ augmentation

def _reference_crop(img, pad, dy, dx):
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    return padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def test_random_crop_matches_padded_crop():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (16, 3, 8, 8), dtype=np.uint8)
    orig = x.copy()
    shifts = np.random.default_rng(5).integers(-2, 3, size=(16, 2))
    random_crop(x, 2, np.random.default_rng(5))
    assert x.shape == orig.shape
    for i in range(16):
        np.testing.assert_array_equal(x[i], _reference_crop(orig[i], 2, *shifts[i]))


def test_random_flip_and_determinism():
    x = np.random.default_rng(0).random((32, 2, 4, 5)).astype(np.float32)
    a, b = x.copy(), x.copy()
    random_flip(a, np.random.default_rng(3))
    random_flip(b, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    flipped = [not np.array_equal(a[i], x[i]) for i in range(32)]
    assert 0 < sum(flipped) < 32
    for i in range(32):
        expect = x[i, :, :, ::-1] if flipped[i] else x[i]
        np.testing.assert_array_equal(a[i], expect)


def test_augmentation_in_batches_is_seeded():
    ds = Dataset(np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8),
                 np.zeros(40, np.int64), ("a",), "cifar10")
    aug = augmentations_for("cifar10")
    assert aug == Augmentation(crop_pad=4, flip=True) and aug.describe() == "crop(pad=4)+flip"
    runs = []
    for _ in range(2):
        b = Batches(ds, 16, rng=np.random.default_rng(11), augment=aug)
        runs.append(np.concatenate([xb.copy() for xb, _ in b]))
        assert runs[-1].shape == (40, 3, 8, 8)
    np.testing.assert_array_equal(runs[0], runs[1])
    plain = Batches(ds, 16, rng=np.random.default_rng(11))
    assert not np.array_equal(np.concatenate([xb.copy() for xb, _ in plain]), runs[0])
    # the data set itself is never modified
    assert ds.x.flags.writeable


def test_augmentation_defaults_and_parsing():
    for name in ("mnist", "fashion-mnist", "digits", "mything"):
        assert not augmentations_for(name)
    assert augmentations_for("CIFAR-10").flip
    assert parse_augmentation("none") == Augmentation()
    assert parse_augmentation("crop4,flip") == Augmentation(4, True)
    assert parse_augmentation("flip+crop=2") == Augmentation(2, True)
    assert parse_augmentation("crop") == Augmentation(4, False)
    with pytest.raises(UsageError, match="rotate"):
        parse_augmentation("crop,rotate")


# ------------------------------------------------------------------ fitting to the model

def test_check_input_shape_messages():
    ds = Dataset(np.zeros((2, 1, 28, 28), np.uint8), np.zeros(2, np.int64), ("a",), "mnist")
    check_input_shape((1, 28, 28), ds)
    text = _expect(DataError, check_input_shape, (1, 32, 32), ds,
                   needles=["the model expects 1x32x32 but mnist images are 1x28x28",
                            "input 1x28x28", "--fit", "zero-pad"])
    assert "28x28 to 32x32" in text
    text = _expect(DataError, check_input_shape, (3, 28, 28), ds, needles=["3x28x28", "replicate"])
    text = _expect(DataError, check_input_shape, (1, 31, 31), ds, needles=["1x31x31"])
    assert "--fit" not in text  # odd difference: fit_to_shape cannot do it


def test_fit_to_shape():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (3, 1, 28, 28), dtype=np.uint8)
    ds = Dataset(x, np.arange(3, dtype=np.int64), tuple("abc"), "mnist")
    assert fit_to_shape(ds, (1, 28, 28)) is ds
    big = fit_to_shape(ds, (1, 32, 32))
    assert big.shape == (1, 32, 32)
    np.testing.assert_array_equal(big.x[:, :, 2:30, 2:30], x)
    assert big.x[:, :, :2].sum() == 0 and big.x[:, :, :, 30:].sum() == 0
    small = fit_to_shape(ds, (1, 24, 26))
    np.testing.assert_array_equal(small.x, x[:, :, 2:26, 1:27])
    rgb = fit_to_shape(ds, (3, 32, 32))
    assert rgb.shape == (3, 32, 32)
    np.testing.assert_array_equal(rgb.x[:, 0], rgb.x[:, 2])
    gray = fit_to_shape(rgb, (1, 32, 32))
    np.testing.assert_array_equal(gray.x, big.x)  # luma of equal channels is the channel
    _expect(DataError, fit_to_shape, ds, (1, 31, 32), needles=["even"])
    two = Dataset(np.zeros((1, 2, 4, 4), np.uint8), np.zeros(1, np.int64), ("a",), "two")
    _expect(DataError, fit_to_shape, two, (3, 4, 4), needles=["2 channel"])


# ------------------------------------------------------------------ the Dataset type

def test_dataset_validation_and_subset():
    x = np.zeros((4, 1, 2, 2), np.uint8)
    ds = Dataset(x, np.array([0, 1, 2, 1], np.int64), ("a", "b", "c"), "t")
    sub = ds.subset(np.array([1, 3]))
    assert len(sub) == 2 and sub.y.tolist() == [1, 1] and sub.class_names == ds.class_names
    assert ds.subset(ds.y == 1).y.tolist() == [1, 1]
    assert "4 images 1x2x2" in repr(ds)
    with pytest.raises(DataError):
        Dataset(x, np.zeros(3, np.int64), ("a",), "t")
    with pytest.raises(DataError):
        Dataset(x.astype(np.float64), np.zeros(4, np.int64), ("a",), "t")
    with pytest.raises(DataError):
        Dataset(x, np.array([0, 1, 2, 5], np.int64), ("a", "b", "c"), "t")
    with pytest.raises(DataError):
        Dataset(x[:, 0], np.zeros(4, np.int64), ("a",), "t")


def test_default_data_dir(monkeypatch, tmp_path):
    assert data.default_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "env"))
    assert data.default_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("CNNC_DATA")
    assert data.default_data_dir(None) == Path(os.path.expanduser("~")) / ".cache" / "cnnc" / "data"


def test_npz_zip_with_other_members(tmp_path):
    import zipfile
    p = tmp_path / "z.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.txt", "hello")
    _expect(DataError, load_npz, p, needles=[p, "'x'"])


def test_npz_test_split_gets_train_classes(tmp_path):
    x = np.zeros((14, 3, 3), np.uint8)
    p = tmp_path / "many.npz"
    np.savez(p, x=x, y=np.arange(14), x_test=x[:2], y_test=np.array([0, 1]))
    train, test = resolve_dataset(str(p), None)
    assert train.num_classes == test.num_classes == 14
    np.savez(p, x=x[:3], y=np.arange(3), x_test=x[:2], y_test=np.array([0, 12]))
    _expect(DataError, resolve_dataset, str(p), None, needles=["label 12", "only 10 classes"])


def test_digits_read_without_sklearn_match_sklearn():
    """The CSV read (which skips importing scikit-learn) gives scikit-learn's own arrays."""
    from sklearn.datasets import load_digits as sk_digits

    from cnnc.training.data.formats.digits import _read_digits

    images, target = _read_digits()
    d = sk_digits()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(target, d.target)


def test_a_failed_download_leaves_no_empty_folders(tmp_path):
    """Offline, `--data mnist --data-dir a/b/c` fails with one message and removes the folders
    it had to make (a run evaluated elsewhere used to leave an empty ../shared/data behind);
    a folder that existed before stays."""
    target = tmp_path / "a" / "b" / "c"
    with pytest.raises(DataError):
        data.download_dataset("mnist", target)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError):
        data.download_dataset("mnist", tmp_path / "kept" / "mnist")
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and list((tmp_path / "kept").iterdir()) == []
