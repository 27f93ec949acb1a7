"""Crash-safe file writes: every file cnnc writes (checkpoints, history, plots, downloads)
goes through :func:`atomic_writer`.

The bytes go to a temporary file in the target's directory, which is flushed and
``fsync``-ed, then ``os.replace``-d onto the target, and the directory is ``fsync``-ed
(best effort: some file systems refuse to sync a directory). If anything fails (disk full,
permission denied, missing directory) the temporary file is removed, an existing file at
the target is left exactly as it was, and a :class:`~cnnc.errors.CnncError` (by default
:class:`~cnnc.errors.CheckpointError`) names the path and the OS reason.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

from .errors import CheckpointError, CnncError

__all__ = ["atomic_writer", "atomic_write_bytes", "atomic_write_text", "os_reason"]


def os_reason(exc: BaseException) -> str:
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
            raise error(f"cannot write {what} {target}: {os_reason(exc)}",
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
        raise error(f"cannot write {what} {target}: {os_reason(exc)}",
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
