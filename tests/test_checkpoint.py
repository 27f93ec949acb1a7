"""Checkpoints (.npz + JSON metadata, no pickle) and atomic writes."""
from __future__ import annotations

import errno
import json
import os
import stat
import zipfile

import numpy as np
import pytest

from cnnc.atomic import atomic_write_bytes, atomic_write_text, atomic_writer
from cnnc.training.runs import CHECKPOINT_FORMAT, META_KEY, load_checkpoint, save_checkpoint
from cnnc.errors import CheckpointError, DataError


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "conv1.w": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
        "conv1.b": np.zeros(6, np.float32),
        "bn.running_mean": rng.standard_normal(4),
        "step": np.array(12, dtype=np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
    }


def _meta():
    return {"model": "conv5(6) - relu - fc", "epoch": np.int64(3), "loss": np.float32(0.25),
            "shape": (1, 28, 28), "mean": np.array([0.1307], np.float32),
            "classes": ["0", "1"], "nested": {"lr": 0.1, "nan": float("nan")}}


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip(tmp_path):
    path = tmp_path / "model.ckpt"  # the name is used as given: no ".npz" appended
    arrays = _arrays()
    save_checkpoint(path, arrays, _meta())
    assert path.exists() and not (tmp_path / "model.ckpt.npz").exists()
    got, meta = load_checkpoint(path)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.writeable
    assert meta["checkpoint_format"] == CHECKPOINT_FORMAT
    assert meta["epoch"] == 3 and meta["loss"] == 0.25
    assert meta["shape"] == [1, 28, 28] and meta["mean"] == [pytest.approx(0.1307)]
    assert meta["nested"]["lr"] == 0.1 and np.isnan(meta["nested"]["nan"])
    assert _leftovers(tmp_path) == []


def test_plain_numpy_can_read_it_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"a": 1})
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"w", META_KEY}
        meta = json.loads(z[META_KEY].tobytes().decode())
    assert meta == {"a": 1, "checkpoint_format": CHECKPOINT_FORMAT}


def test_overwrite_replaces_previous(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"epoch": 1})
    save_checkpoint(path, {"w": np.ones(5)}, {"epoch": 2})
    arrays, meta = load_checkpoint(path)
    assert meta["epoch"] == 2 and arrays["w"].shape == (5,)
    assert _leftovers(tmp_path) == []


def test_new_file_respects_umask(tmp_path):
    path = tmp_path / "c.npz"
    old = os.umask(0o022)
    try:
        save_checkpoint(path, {"w": np.zeros(1)}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("arrays, meta, needle", [
    ({"o": np.array([{"a": 1}], dtype=object)}, {}, "pickle"),
    ({"s": np.array(["a", "b"])}, {}, "pickle"),
    ({META_KEY: np.zeros(1)}, {}, "reserved"),
    ({"": np.zeros(1)}, {}, "name"),
    ({"w": np.zeros(1)}, {"f": object()}, "JSON"),
    ({"w": np.zeros(1)}, ["not", "a", "dict"], "mapping"),
])
def test_bad_arguments(tmp_path, arrays, meta, needle):
    path = tmp_path / "c.npz"
    with pytest.raises(CheckpointError, match=needle) as info:
        save_checkpoint(path, arrays, meta)
    assert str(path) in str(info.value)
    assert not path.exists() and _leftovers(tmp_path) == []


# ------------------------------------------------------------------ damaged checkpoints

@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.npz"
    save_checkpoint(path, {"w": np.arange(4000, dtype=np.float32), "b": np.ones(3)}, {"e": 1})
    return path


def _expect_bad(path, needle=None):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert str(path) in text
    if needle:
        assert needle in text, text
    return text


def test_missing_file(tmp_path):
    _expect_bad(tmp_path / "nope.npz", "does not exist")


def test_directory(tmp_path):
    _expect_bad(tmp_path, "directory")


def test_empty_file(tmp_path):
    p = tmp_path / "e.npz"
    p.write_bytes(b"")
    _expect_bad(p, "empty")


def test_not_a_zip(tmp_path):
    p = tmp_path / "t.npz"
    p.write_text("hello, I am a text file\n")
    _expect_bad(p, "not a zip")


def test_single_npy(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.zeros(3))
    _expect_bad(p, ".npy")


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1, 0.01])
def test_truncated(good, keep):
    data = good.read_bytes()
    good.write_bytes(data[: max(3, int(len(data) * keep))])
    _expect_bad(good)


def test_flipped_byte_in_data_is_caught_by_crc(good):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("w.npy")
    # local header: 30 bytes + name + extra; the array's bytes follow, flip one in the middle
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 2000] ^= 0xFF
    good.write_bytes(bytes(data))
    _expect_bad(good, "damaged")


def test_flipped_bytes_everywhere_never_escape(good):
    """Whatever byte is damaged, the result is either the right data or a CheckpointError."""
    data = good.read_bytes()
    rng = np.random.default_rng(1)
    for pos in rng.choice(len(data), size=60, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        good.write_bytes(bytes(bad))
        try:
            arrays, meta = load_checkpoint(good)
        except CheckpointError as err:
            assert str(good) in str(err)
        else:  # a byte zip does not check (e.g. a timestamp) - data must still be right
            np.testing.assert_array_equal(arrays["w"], np.arange(4000, dtype=np.float32))


def test_missing_meta(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, w=np.zeros(3))
    _expect_bad(p, "__meta__")


@pytest.mark.parametrize("payload, needle", [
    (b"{not json", "JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"a": 1}', "checkpoint_format"),
    (json.dumps({"checkpoint_format": CHECKPOINT_FORMAT + 1}).encode(), "newer"),
    (b"\xff\xfe", "JSON"),
])
def test_bad_meta(tmp_path, payload, needle):
    p = tmp_path / "m.npz"
    np.savez(p, w=np.zeros(2), **{META_KEY: np.frombuffer(payload, np.uint8)})
    _expect_bad(p, needle)


def test_pickled_array_refused(tmp_path):
    p = tmp_path / "pickled.npz"
    np.savez(p, w=np.array([{"evil": 1}], dtype=object),
             **{META_KEY: np.frombuffer(b'{"checkpoint_format": 1}', np.uint8)})
    _expect_bad(p, "pickle")


# ------------------------------------------------------------------ atomic writes

def test_failed_replace_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()

    def boom(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(good, {"w": np.ones(9)}, {"e": 2})
    monkeypatch.undo()
    assert str(good) in str(info.value) and "Input/output error" in str(info.value)
    assert good.read_bytes() == before
    assert _leftovers(good.parent) == []
    assert load_checkpoint(good)[1]["e"] == 1


def test_disk_full_mid_write_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()
    real_savez = np.savez

    def half_then_full(file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(good, {"w": np.ones(9)}, {"e": 2})
    monkeypatch.setattr(np, "savez", real_savez)
    assert "No space left on device" in str(info.value) and str(good) in str(info.value)
    assert info.value.hint and "disk is full" in info.value.hint
    assert good.read_bytes() == before
    assert _leftovers(good.parent) == []


def test_fsync_failure_keeps_old_file(good, monkeypatch):
    before = good.read_bytes()

    def bad_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    with pytest.raises(CheckpointError):
        save_checkpoint(good, {"w": np.ones(9)}, {"e": 2})
    monkeypatch.undo()
    assert good.read_bytes() == before and _leftovers(good.parent) == []


def test_non_os_error_mid_write_propagates_and_cleans_up(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(p) as f:
            f.write(b"new")
            raise RuntimeError("bug")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_permission_denied_simulated(good, monkeypatch):
    before = good.read_bytes()
    real_open = os.open

    def deny(path, flags, mode=0o777, *a, **k):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(CheckpointError, match="Permission denied") as info:
        save_checkpoint(good, {"w": np.ones(2)}, {})
    monkeypatch.undo()
    assert str(good) in str(info.value)
    assert good.read_bytes() == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions, so a read-only folder "
                           "cannot be simulated with chmod (the simulated test above covers it)")
def test_read_only_directory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "c.npz"
    save_checkpoint(path, {"w": np.zeros(2)}, {"e": 1})
    before = path.read_bytes()
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(path, {"w": np.ones(2)}, {"e": 2})
        assert str(path) in str(info.value)
        assert path.read_bytes() == before
        assert _leftovers(folder) == []
    finally:
        folder.chmod(0o755)


def test_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "c.npz"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        save_checkpoint(path, {"w": np.zeros(1)}, {})
    assert str(path) in str(info.value)


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "c.npz"
    with pytest.raises(CheckpointError, match="not a directory"):
        save_checkpoint(path, {"w": np.zeros(1)}, {})


def test_target_is_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        save_checkpoint(tmp_path, {"w": np.zeros(1)}, {})


def test_atomic_write_text_and_bytes(tmp_path):
    p = tmp_path / "history.csv"
    atomic_write_text(p, "epoch,loss\n1,0.5\n")
    assert p.read_text() == "epoch,loss\n1,0.5\n"
    atomic_write_text(p, "épöch\r\n")
    assert p.read_bytes() == "épöch\r\n".encode()
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_atomic_write_error_class_is_selectable(tmp_path, monkeypatch):
    p = tmp_path / "h.json"
    p.write_text("old")
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system")))
    with pytest.raises(DataError, match="Read-only file system"):
        atomic_write_text(p, "new", error=DataError)
    monkeypatch.undo()
    assert p.read_text() == "old"


def test_zip_that_is_not_an_npz(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    _expect_bad(p, "readme.txt")
