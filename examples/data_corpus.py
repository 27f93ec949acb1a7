"""A corpus of broken data files for every format ``--data`` reads, and a check that each is
answered with one clear message (a :class:`cnnc.CnncError`) or read correctly, never with
another exception.

    python examples/data_corpus.py                 # generate into a temporary folder and check
    python examples/data_corpus.py --out corpus/   # keep the files
    python examples/data_corpus.py --variants 3    # more random truncations and bit flips per file

Formats (``cnnc/training/data/formats/``): MNIST-style IDX folders (raw and gzip), CIFAR-10
binary batches, ``.npz`` archives, image folders (one sub-folder per class). For each, a
valid small data set is written first (it must load), then broken copies: truncated and
empty files, flipped header bits, wrong magic numbers and dimensions, mismatched lengths,
labels out of range, NaN and infinite pixels, object (pickle) arrays, wrong ranks and dtypes,
ragged records, missing files, junk named like an image, empty class folders and more.
Prints one line per case with the message, and a summary; exits 1 if any case raised
something other than a CnncError (or the valid sets failed to load).
"""
from __future__ import annotations

import argparse
import gzip
import io
import random
import shutil
import struct
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    head = struct.pack(">BBBB", 0, 0, codes[arr.dtype], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def write_idx_folder(folder: Path, rng: np.random.Generator, n: int = 30, size: int = 8, gz: bool = False,
                     images=None, labels=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8) if images is None else images
        y = (np.arange(n) % 10).astype(np.uint8) if labels is None else labels
        for kind, idx, arr in (("images", "idx3", x), ("labels", "idx1", y)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-{idx}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def write_cifar_folder(folder: Path, rng: np.random.Generator, n: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.zeros((n, 3073), np.uint8)
        rec[:, 0] = np.arange(n) % 10
        rec[:, 1:] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(rec.tobytes())


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(folder: Path, rng: np.random.Generator, classes=("a", "b"), per: int = 6,
                       size=(8, 8), mode_rgb: bool = False) -> None:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            shape = (*size, 3) if mode_rgb else size
            (folder / c / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, shape, dtype=np.uint8)))


def mangle(data: bytes, r: random.Random) -> list[tuple[str, bytes]]:
    """Broken versions of one file's bytes: empty, cut at several places, bits flipped in the
    header and the body."""
    out = [("empty", b""), ("one byte", data[:1]), ("cut in the header", data[:min(len(data) - 1, 7)]),
           ("cut in half", data[: len(data) // 2]), ("last byte missing", data[:-1]),
           ("one byte extra", data + b"\x00")]
    for k in range(2):
        b = bytearray(data)
        i = r.randrange(min(len(b), 16))
        b[i] ^= 1 << r.randrange(8)
        out.append((f"header bit flipped at {i}", bytes(b)))
        b = bytearray(data)
        i = r.randrange(len(b))
        b[i] ^= 0xFF
        out.append((f"byte {i} inverted", bytes(b)))
    return out


def generate(root: Path, seed: int = 0, variants: int = 1) -> list[tuple[str, Path, str]]:
    """Write the corpus under ``root``; returns ``(case, data path, format)`` triples (the
    ``valid-*`` cases must load)."""
    r = random.Random(seed)
    rng = np.random.default_rng(seed)
    cases: list[tuple[str, Path, str]] = []

    def add(name: str, path: Path, fmt: str):
        cases.append((name, path, fmt))

    # ---- IDX
    for gz in (False, True):
        tag = "idx-gz" if gz else "idx"
        base = root / tag / "valid"
        write_idx_folder(base, rng, gz=gz)
        add(f"valid-{tag}", base, "idx")
        files = sorted(base.iterdir())
        for v in range(variants):
            for f in files:
                for k, (what, data) in enumerate(mangle(f.read_bytes(), r)):
                    d = root / tag / f"{f.name}-{k}-{what.replace(' ', '_')}-{v}"
                    shutil.copytree(base, d)
                    (d / f.name).write_bytes(data)
                    add(f"{tag}: {f.name} {what}", d, "idx")
        for f in files:
            d = root / tag / f"missing-{f.name}"
            shutil.copytree(base, d)
            (d / f.name).unlink()
            add(f"{tag}: {f.name} missing", d, "idx")
    special = {
        "labels 255 (out of range of 10 classes? any count)": dict(labels=np.full(30, 255, np.uint8)),
        "30 labels for 29 images": dict(images=rng.integers(0, 256, (29, 8, 8), dtype=np.uint8)),
        "images of rank 2": dict(images=rng.integers(0, 256, (30, 64), dtype=np.uint8)),
        "images of rank 4": dict(images=rng.integers(0, 256, (30, 1, 8, 8), dtype=np.uint8)),
        "float32 images with NaN": dict(images=np.full((30, 8, 8), np.nan, ">f4")),
        "labels of rank 2": dict(labels=np.zeros((30, 2), np.uint8)),
        "negative int32 labels": dict(labels=np.full(30, -3, ">i4")),
        "zero images": dict(images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.uint8)),
        "images 0x0": dict(images=np.zeros((30, 0, 0), np.uint8)),
    }
    for what, kw in special.items():
        d = root / "idx" / ("special-" + "".join(c if c.isalnum() else "_" for c in what))
        write_idx_folder(d, rng, **kw)
        add(f"idx: {what}", d, "idx")

    # ---- CIFAR-10
    base = root / "cifar" / "valid"
    write_cifar_folder(base, rng)
    add("valid-cifar", base, "cifar")
    for v in range(variants):
        for f in (base / "data_batch_1.bin", base / "test_batch.bin"):
            for k, (what, data) in enumerate(mangle(f.read_bytes(), r)):
                d = root / "cifar" / f"{f.name}-{k}-{what.replace(' ', '_')}-{v}"
                shutil.copytree(base, d)
                (d / f.name).write_bytes(data)
                add(f"cifar: {f.name} {what}", d, "cifar")
    for name in ("data_batch_3.bin", "test_batch.bin"):
        d = root / "cifar" / f"missing-{name}"
        shutil.copytree(base, d)
        (d / name).unlink()
        add(f"cifar: {name} missing", d, "cifar")
    d = root / "cifar" / "label-11"
    shutil.copytree(base, d)
    data = bytearray((d / "data_batch_2.bin").read_bytes())
    data[0] = 11
    (d / "data_batch_2.bin").write_bytes(bytes(data))
    add("cifar: a label of 11", d, "cifar")
    d = root / "cifar" / "binary-meta"
    shutil.copytree(base, d)
    (d / "batches.meta.txt").write_bytes(bytes(range(256)))
    add("cifar: batches.meta.txt is binary", d, "cifar")
    d = root / "cifar" / "short-meta"
    shutil.copytree(base, d)
    (d / "batches.meta.txt").write_text("cat\ndog\n")
    add("cifar: batches.meta.txt names 2 classes", d, "cifar")

    # ---- npz
    npz = root / "npz"
    npz.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 4
    valid = npz_bytes(x=x, y=y)
    (npz / "valid.npz").write_bytes(valid)
    add("valid-npz", npz / "valid.npz", "npz")
    for k, (what, data) in enumerate(mangle(valid, r)):
        p = npz / f"{k}-{what.replace(' ', '_')}.npz"
        p.write_bytes(data)
        add(f"npz: {what}", p, "npz")
    bad = {
        "object array x": dict(x=np.array([None] * 40, dtype=object), y=y),
        "x with NaN": dict(x=np.full((40, 1, 8, 8), np.nan, np.float32), y=y),
        "x with inf": dict(x=np.where(np.arange(40 * 64).reshape(40, 1, 8, 8) == 5, np.inf, 1.0), y=y),
        "x of rank 1": dict(x=np.arange(40), y=y),
        "x of rank 5": dict(x=np.zeros((40, 1, 1, 8, 8)), y=y),
        "y one short": dict(x=x, y=y[:-1]),
        "y of rank 2": dict(x=x, y=y.reshape(20, 2)),
        "y fractional": dict(x=x, y=y + 0.5),
        "y negative": dict(x=x, y=-y - 1),
        "y strings": dict(x=x, y=np.array(["a"] * 40)),
        "x strings": dict(x=np.array(["a"] * 40), y=y),
        "x complex": dict(x=x.astype(np.complex64), y=y),
        "x boolean": dict(x=x > 100, y=y),
        "no y": dict(x=x),
        "no x": dict(y=y),
        "empty x": dict(x=np.zeros((0, 1, 8, 8)), y=np.zeros(0, int)),
        "x_test without y_test": dict(x=x, y=y, x_test=x),
        "x_test of another shape": dict(x=x, y=y, x_test=np.zeros((5, 1, 9, 9)), y_test=y[:5]),
        "class_names of the wrong length": dict(x=x, y=y, class_names=np.array(["a", "b"])),
        "class_names numbers": dict(x=x, y=y, class_names=np.arange(4)),
        "huge label": dict(x=x, y=np.full(40, 2**40)),
        "one image": dict(x=x[:1], y=y[:1]),
        "x 0 wide": dict(x=np.zeros((40, 1, 8, 0)), y=y),
    }
    for what, arrays in bad.items():
        p = npz / ("bad-" + "".join(c if c.isalnum() else "_" for c in what) + ".npz")
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # object arrays are pickled by np.savez: the reader must refuse them
        p.write_bytes(buf.getvalue())
        add(f"npz: {what}", p, "npz")
    p = npz / "plain.npy"
    np.save(p, x)
    add("npz: a .npy file", p, "npz")

    # ---- image folders
    imgs = root / "images"
    base = imgs / "valid"
    write_image_folder(base, rng)
    add("valid-images", base, "images")
    png = (base / "a" / "0.png").read_bytes()

    def folder_case(what: str, make):
        d = imgs / ("".join(c if c.isalnum() else "_" for c in what))
        shutil.copytree(base, d)
        make(d)
        add(f"images: {what}", d, "images")

    for k, (what, data) in enumerate(mangle(png, r)[:8]):
        folder_case(f"a png {k} {what}", lambda d, data=data: (d / "a" / "1.png").write_bytes(data))
    folder_case("junk named .png", lambda d: (d / "b" / "2.png").write_bytes(b"not an image at all"))
    folder_case("a jpeg that is a png", lambda d: (d / "b" / "x.jpg").write_bytes(png))
    folder_case("one class only", lambda d: shutil.rmtree(d / "b"))
    folder_case("an empty class folder", lambda d: (d / "c").mkdir())
    folder_case("images of another size", lambda d: (d / "a" / "big.png").write_bytes(
        png_bytes(np.zeros((16, 16), np.uint8))))
    folder_case("grey and RGB mixed", lambda d: (d / "a" / "rgb.png").write_bytes(
        png_bytes(np.zeros((8, 8, 3), np.uint8))))
    folder_case("a file beside the class folders", lambda d: (d / "README.txt").write_text("hello"))
    folder_case("a nested folder", lambda d: write_image_folder(d / "a" / "deeper", rng, classes=("z",), per=1))
    folder_case("a text file in a class", lambda d: (d / "a" / "notes.txt").write_text("x"))
    folder_case("no images at all", lambda d: [shutil.rmtree(d / c) for c in ("a", "b")])
    folder_case("1x1 images", lambda d: [(d / c / f"{i}.png").write_bytes(png_bytes(np.zeros((1, 1), np.uint8)))
                                         for c in ("a", "b") for i in range(6)])
    return cases


def check(path: Path) -> tuple[str, str]:
    """('loaded', shapes) | ('refused', message) | ('crash', traceback) for one data path."""
    from cnnc.errors import CnncError
    from cnnc.training.data import resolve_dataset

    try:
        train, test = resolve_dataset(str(path), download=False)
        x = np.asarray(train.x)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            return "crash", "loaded pixels that are not numbers without a word"
        return "loaded", f"train {tuple(x.shape)}, test {tuple(np.asarray(test.x).shape)}, {train.num_classes} classes"
    except CnncError as err:
        return "refused", str(err).splitlines()[0]
    except Exception:  # noqa: BLE001 - what the corpus is looking for
        return "crash", traceback.format_exc(limit=4)


def run(root: Path, seed: int = 0, variants: int = 1, show=print) -> dict:
    cases = generate(root, seed, variants)
    counts = {"loaded": 0, "refused": 0, "crash": 0, "valid-failed": 0, "files": 0}
    counts["files"] = sum(1 for p in root.rglob("*") if p.is_file())
    for name, path, fmt in cases:
        outcome, detail = check(path)
        if name.startswith("valid-") and outcome != "loaded":
            counts["valid-failed"] += 1
        counts[outcome] += 1
        show(f"{outcome:8s} {name}: {detail}")
    counts["cases"] = len(cases)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", metavar="DIR", help="write the corpus here and keep it")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int, default=1, help="rounds of random truncations and bit flips")
    ap.add_argument("--quiet", action="store_true", help="only the failures and the summary")
    args = ap.parse_args(argv)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="data_corpus-"))
    if root.exists() and any(root.iterdir()):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        counts = run(root, args.seed, args.variants,
                     show=(lambda line: line.startswith("crash") and print(line)) if args.quiet else print)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{counts['cases']} cases ({counts['files']} files): {counts['loaded']} loaded, "
          f"{counts['refused']} refused with one message, {counts['crash']} other exceptions; "
          f"valid sets that failed: {counts['valid-failed']}")
    return 1 if counts["crash"] or counts["valid-failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
