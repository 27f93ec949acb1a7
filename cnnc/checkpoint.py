"""Checkpoints and crash-safe file writes.

A checkpoint is an ordinary NumPy ``.npz`` archive (a zip of ``.npy`` files) that any
NumPy can open without cnnc and without pickle:

* one entry per array in ``arrays`` (its name is the dictionary key);
* one reserved entry, ``__meta__``: a 1-D ``uint8`` array holding UTF-8 JSON (the
  ``meta`` dictionary plus ``"checkpoint_format": CHECKPOINT_FORMAT``).

Nothing is ever pickled: object arrays are refused when saving, and loading uses
``allow_pickle=False``.

Every write is atomic (:func:`atomic_writer`): the bytes go to a temporary file in the
target's directory, which is flushed and ``fsync``-ed, then ``os.replace``-d onto the
target, and the directory is ``fsync``-ed (best effort: some file systems refuse to
sync a directory). If anything fails (disk full, permission denied, missing directory)
the temporary file is removed, an existing file at the target is left exactly as it was,
and a :class:`~cnnc.errors.CheckpointError` names the path and the OS reason.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from .errors import CheckpointError, CnncError

__all__ = [
    "CHECKPOINT_FORMAT",
    "META_KEY",
    "save_checkpoint",
    "load_checkpoint",
    "atomic_writer",
    "atomic_write_bytes",
    "atomic_write_text",
]

#: Version of the checkpoint layout written by :func:`save_checkpoint`. A reader refuses
#: checkpoints whose version is newer than the one it knows.
CHECKPOINT_FORMAT = 1
#: The reserved archive entry that holds the JSON metadata.
META_KEY = "__meta__"
#: The metadata key that records :data:`CHECKPOINT_FORMAT`.
FORMAT_KEY = "checkpoint_format"


def _reason(exc: BaseException) -> str:
    """A short human reason for an OS error ("No space left on device")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _fsync_dir(directory: str) -> None:
    """fsync a directory so a rename in it survives a crash; silently skipped where the
    platform or file system does not support it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *,
                  error: type[CnncError] = CheckpointError,
                  what: str = "file") -> Iterator[BinaryIO]:
    """Open a binary file whose contents replace ``path`` atomically on success.

    ``with atomic_writer(p) as f: f.write(...)``: the data goes to a temporary file
    ``.NAME.XXXXXXXX.tmp`` beside ``p`` (created with mode 0666 minus the umask, like a
    plain ``open``); on leaving the block without an exception it is flushed, fsync-ed
    and renamed onto ``p``, and the directory is fsync-ed. On any exception the
    temporary file is removed and ``p`` is untouched; an ``OSError`` becomes ``error``
    (default :class:`CheckpointError`) naming ``path`` and the reason, other exceptions
    propagate unchanged. ``what`` names the thing in messages ("checkpoint").
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    if not base:
        raise error(f"cannot write {what} {target!r}: the path names a directory, not a file")
    if os.path.isdir(target):
        raise error(f"cannot write {what} {target}: it is a directory")
    if not os.path.isdir(directory):
        reason = "it is not a directory" if os.path.exists(directory) else "it does not exist"
        raise error(f"cannot write {what} {target}: the folder {directory} {reason}",
                    hint="create the folder first, or choose another output path")
    fd = -1
    tmp = ""
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise error(f"cannot write {what} {target}: {_reason(exc)}",
                        hint=_hint_for(exc)) from None
    else:  # pragma: no cover - 100 random collisions
        raise error(f"cannot write {what} {target}: could not create a temporary file")
    done = False
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1  # now owned by handle
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        done = True
    except OSError as exc:
        raise error(f"cannot write {what} {target}: {_reason(exc)}",
                    hint=_hint_for(exc)) from None
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(directory)


def _hint_for(exc: OSError) -> str | None:
    if exc.errno == errno.ENOSPC:
        return "the disk is full; the previous file (if any) was left unchanged"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a folder you can write to; the previous file (if any) was left unchanged"
    return "the previous file (if any) was left unchanged"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *,
                       error: type[CnncError] = CheckpointError, what: str = "file") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, error=error, what=what) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      error: type[CnncError] = CheckpointError, what: str = "file") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_writer`). Newlines are
    written as given (no platform translation)."""
    atomic_write_bytes(path, text.encode(encoding), error=error, what=what)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save_checkpoint(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> None:
    """Save ``arrays`` and ``meta`` to ``path`` as an ``.npz`` archive, atomically.

    ``arrays``: names (non-empty strings, not ``__meta__``) to numeric/bool arrays
    (anything ``np.asarray`` turns into one; object arrays are refused because they
    would need pickle). ``meta``: a JSON-serializable mapping (NumPy scalars/arrays,
    tuples, sets and paths are converted); ``"checkpoint_format"`` is added.
    The archive is written uncompressed (weights do not compress much; it loads fast).
    The file name is used as given: ``np.savez``'s habit of appending ``.npz`` is not
    copied. Raises :class:`CheckpointError` on a bad argument or a failed write, in
    which case an existing file at ``path`` is left intact.
    """
    target = os.fspath(path)
    entries: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise CheckpointError(f"cannot save checkpoint {target}: array name {key!r} "
                                  "is not a non-empty string")
        if key == META_KEY:
            raise CheckpointError(f"cannot save checkpoint {target}: the array name "
                                  f"{META_KEY!r} is reserved for the metadata")
        arr = np.asarray(value)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufc":
            raise CheckpointError(f"cannot save checkpoint {target}: array {key!r} has dtype "
                                  f"{arr.dtype}, which cannot be stored without pickle")
        entries[key] = arr
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"cannot save checkpoint {target}: meta must be a mapping, "
                              f"not {type(meta).__name__}")
    full_meta = dict(meta)
    full_meta[FORMAT_KEY] = CHECKPOINT_FORMAT
    try:
        text = json.dumps(full_meta, default=_json_default, ensure_ascii=False, indent=1)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {target}: the metadata is not "
                              f"JSON-serializable ({exc})") from None
    entries[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with atomic_writer(target, what="checkpoint") as handle:
        np.savez(handle, allow_pickle=False, **entries)


_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
                zipfile.BadZipFile, zlib.error, struct.error, MemoryError,
                UnicodeDecodeError, NotImplementedError, OverflowError)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(arrays, meta)``.

    Every array is read (so a damaged entry is found now, not later). Raises
    :class:`CheckpointError` naming the file when it is missing, a directory, not a zip
    archive, truncated or corrupt (bad CRC, bad deflate data, a bad ``.npy`` header),
    holds pickled objects, lacks the ``__meta__`` entry, has metadata that is not a JSON
    object, or was written by a newer checkpoint format.
    """
    target = os.fspath(path)
    if not os.path.exists(target):
        raise CheckpointError(f"checkpoint {target} does not exist")
    if os.path.isdir(target):
        raise CheckpointError(f"checkpoint {target} is a directory, not a file")
    try:
        with open(target, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {target}: {_reason(exc)}") from None
    if head[:2] != b"PK":
        kind = "empty" if not head else ("a single .npy array" if head == b"\x93NUM"
                                          else "not a zip/.npz archive")
        raise CheckpointError(f"{target} is not a cnnc checkpoint: the file is {kind}",
                              hint="a checkpoint is the .npz file written by `cnnc train`")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(target, allow_pickle=False) as archive:
            names = list(archive.files)
            for name in names:
                value = archive[name]
                if not isinstance(value, np.ndarray):  # a zip member that is not a .npy
                    raise CheckpointError(f"{target} is not a cnnc checkpoint: its entry "
                                          f"{name!r} is not a NumPy array")
                arrays[name] = np.array(value)  # a plain, writable in-memory copy
    except _READ_ERRORS as exc:
        msg = str(exc) or type(exc).__name__
        if "allow_pickle" in msg or "pickle" in msg.lower():
            raise CheckpointError(f"checkpoint {target} holds pickled Python objects; "
                                  "cnnc never unpickles files") from None
        raise CheckpointError(f"checkpoint {target} is damaged or truncated "
                              f"({type(exc).__name__}: {msg})",
                              hint="use another checkpoint, or train again") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise CheckpointError(f"{target} is not a cnnc checkpoint: it has no {META_KEY!r} entry",
                              hint="it may be an .npz file written by another program")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"checkpoint {target}: the {META_KEY!r} entry is not UTF-8 JSON "
                              f"bytes (dtype {raw.dtype}, shape {raw.shape})")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {target}: its metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {target}: its metadata is a JSON "
                              f"{type(meta).__name__}, not an object")
    version = meta.get(FORMAT_KEY)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint {target}: its metadata has no valid {FORMAT_KEY!r}")
    if version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {target} was written by a newer cnnc (format "
                              f"{version}; this cnnc reads format {CHECKPOINT_FORMAT} or older)",
                              hint="upgrade cnnc to read it")
    return arrays, meta

