"""The run folder's state as one atomic commit.

A run folder holds several files that must agree with one another: ``checkpoint.npz``,
``best.npz``, ``history.csv``, ``history.json`` and ``curves.png``. Each was written
atomically on its own, but a kill between two of them left a folder whose files came from
different epochs. Now an epoch's files are committed together:

1. every file of the commit is written, fsync-ed, under a hidden name of its own
   generation (``.checkpoint.g000007.npz``; a file listed twice, such as ``best.npz`` when
   it equals the checkpoint, is written once);
2. the manifest ``run.json`` (:data:`MANIFEST`), which names the hidden file behind every
   public name, replaces the previous one with one ``os.replace``: **this is the commit**;
3. the public names are pointed at the committed files (hard links, else copies, each
   renamed into place), and hidden files no manifest names are removed.

A kill before step 2 leaves the previous commit (its files are untouched; the new hidden
files are garbage), a kill after it leaves the new one. The public names can lag behind the
manifest after a kill in step 3; every reader goes through :func:`committed`, which reads
the manifest's file where a public name still points at an earlier commit's, and
:func:`recover` (run by ``--resume``) publishes them again. A public file that no commit
published (put there by hand, or a copied folder) is what its owner means and is read as
it is, and a folder without a manifest (written by an older cnnc) is read by its public
names. Where the file system has no hard links the public names are copies and only
``--resume`` (:func:`recover`) can tell a lagging one.

:func:`crash_point` marks the moments between the writes: ``CNNC_CRASH_AT=NAME[:N]`` kills
the process with SIGKILL at the N-th (default first) time it passes the point ``NAME``
(the tests and ``examples/kill_soak.py`` use it to kill at exact moments).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, Union

from ...atomic import atomic_write_text, atomic_writer, os_reason
from ...errors import CheckpointError

__all__ = ["MANIFEST", "CRASH_ENV", "crash_point", "commit", "committed", "recover",
           "read_manifest"]

#: The manifest: ``{"format": 1, "generation": G, "files": {public name: hidden name}}``.
MANIFEST = "run.json"
MANIFEST_FORMAT = 1
#: the generation whose publishing finished (what recover() needs to know)
PUBLISHED = ".published"
CRASH_ENV = "CNNC_CRASH_AT"
_HIDDEN = re.compile(r"^\.(?P<stem>.+)\.g(?P<gen>\d{6,})(?P<ext>\.[A-Za-z0-9]+)$")
_TMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # cnnc.atomic's temporary files

#: What a commit writes under a public name: bytes, a function writing to a binary file, a
#: function ``(path) -> None`` that writes ``path`` atomically itself (``path=True`` marks
#: it, see :class:`PathWriter`), or the public name of another entry of the same commit
#: (the same file under two names).
Content = Union[bytes, Callable[[BinaryIO], None], "PathWriter", str]

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL, as ``kill -9`` would) if ``$CNNC_CRASH_AT`` names this
    point: ``NAME`` or ``NAME:N`` for its N-th passage. Costs one dictionary lookup."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    want, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        want, nth = spec, "1"
    if want != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


class PathWriter:
    """A writer that takes the destination path (``save_checkpoint`` writes atomically itself)."""

    def __init__(self, write: Callable[[Path], None]):
        self.write = write


def read_manifest(folder: str | os.PathLike[str]) -> dict | None:
    """The folder's manifest, or None where there is none (or it is unreadable: a manifest is
    only ever replaced whole, so an unreadable one was not written by cnnc)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def _hidden_inodes(folder: Path) -> set[tuple[int, int]]:
    out = set()
    with contextlib.suppress(OSError):
        for n in os.listdir(folder):
            if _HIDDEN.match(n):
                with contextlib.suppress(OSError):
                    st = os.stat(folder / n)
                    out.add((st.st_dev, st.st_ino))
    return out


def _published_by_commit(folder: Path, name: str) -> bool:
    """Whether the public file is one a commit published (a hard link of a generation file),
    as opposed to one put there by hand or copied (``cp best.npz checkpoint.npz``, a copied
    folder), which is what its owner means and is never replaced behind their back."""
    try:
        st = os.stat(folder / name)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in _hidden_inodes(folder)


def committed(folder: str | os.PathLike[str], name: str) -> Path | None:
    """The file to read for public ``name``: the last commit's where the public name still
    points at an earlier commit's (a kill while publishing), else the public file itself
    (also in a folder without a manifest, and for a file put there by hand); None where
    there is no public file."""
    folder = Path(folder)
    public = folder / name
    if not public.is_file():
        return None
    manifest = read_manifest(folder)
    hidden = manifest["files"].get(name) if manifest is not None else None
    if hidden is None or not (folder / hidden).is_file():
        return public
    with contextlib.suppress(OSError):
        if os.path.samefile(folder / hidden, public):
            return public
    return folder / hidden if _published_by_commit(folder, name) else public


def _hidden_name(name: str, generation: int) -> str:
    stem, ext = os.path.splitext(name)
    return f".{stem}.g{generation:06d}{ext}"


def commit(folder: str | os.PathLike[str], files: Mapping[str, Content], what: str = "run state",
           on_error_hint: str | None = None) -> int:
    """Write ``files`` (public name -> content, see :data:`Content`) and commit them in one
    step, keeping every earlier entry of the manifest that ``files`` does not replace.
    Returns the new generation. On a failed write (disk full, ...) nothing is committed,
    the new hidden files are removed and a :class:`CheckpointError` says what happened and
    that the previous state is kept."""
    folder = Path(folder)
    manifest = read_manifest(folder) or {"format": MANIFEST_FORMAT, "generation": 0, "files": {}}
    generation = int(manifest.get("generation", 0)) + 1
    entries = dict(manifest["files"])
    written: list[Path] = []
    current = MANIFEST
    try:
        for name, content in files.items():
            if isinstance(content, str):
                continue
            current = name
            hidden = _hidden_name(name, generation)
            path = folder / hidden
            if isinstance(content, PathWriter):
                content.write(path)
            else:
                with atomic_writer(path, what=name) as handle:
                    if isinstance(content, (bytes, bytearray, memoryview)):
                        handle.write(content)
                    else:
                        content(handle)
            written.append(path)
            entries[name] = hidden
            crash_point(f"written:{name}")
        for name, content in files.items():
            if isinstance(content, str):
                entries[name] = entries[content]
        crash_point("before-manifest")
        atomic_write_text(folder / MANIFEST,
                          json.dumps({"format": MANIFEST_FORMAT, "generation": generation,
                                      "files": entries}, indent=1), what="run manifest")
    except CheckpointError as err:
        for path in [*written, folder / _hidden_name(current, generation)]:
            with contextlib.suppress(OSError):
                path.unlink()
        reason = getattr(err, "message", str(err)).replace(
            str(folder / _hidden_name(current, generation)), str(folder / current))
        hints = [h for h in (getattr(err, "hint", None), on_error_hint) if h]
        raise CheckpointError(f"could not save the {what}: {reason}",
                              hint="; ".join(hints) or "the previous checkpoint is kept unchanged"
                              ) from None
    crash_point("after-manifest")
    _publish(folder, entries)
    with contextlib.suppress(CheckpointError):  # only recover() reads it
        atomic_write_text(folder / PUBLISHED, str(generation), what="run manifest")
    _collect(folder, set(entries.values()))
    return generation


def recover(folder: str | os.PathLike[str]) -> None:
    """Make the public names agree with the last commit again and remove what a killed
    commit left (``--resume`` runs it first). Best effort: a failure here changes nothing
    that the manifest names."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        _collect(folder, None)
        return
    try:
        done = (folder / PUBLISHED).read_text(encoding="ascii").strip() == str(manifest["generation"])
    except OSError:
        done = False
    # a public name that lags is published again; a missing one only where the publishing of
    # the last commit was cut short (one the user removed stays removed)
    entries = {k: v for k, v in manifest["files"].items() if (folder / v).is_file()
               and (_published_by_commit(folder, k) or not ((folder / k).exists() or done))}
    with contextlib.suppress(CheckpointError, OSError):
        _publish(folder, entries)
    _collect(folder, set(manifest["files"].values()))


def _publish(folder: Path, entries: Mapping[str, str]) -> None:
    """Point each public name at its committed file: a hard link renamed into place (the
    same bytes, no copy), else an atomic copy."""
    for name, hidden in entries.items():
        src, dst = folder / hidden, folder / name
        with contextlib.suppress(OSError):
            if os.path.samefile(src, dst):
                continue
        tmp = folder / f".{name}.{os.getpid():x}.link"
        with contextlib.suppress(OSError):
            tmp.unlink()
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP,
                                 errno.EOPNOTSUPP, errno.EACCES):
                raise CheckpointError(f"could not update {dst}: {os_reason(exc)}",
                                      hint=f"the run's state is safe in {folder / MANIFEST}") from None
            with atomic_writer(dst, what=name) as handle, open(src, "rb") as f:
                shutil.copyfileobj(f, handle)
        crash_point(f"published:{name}")


def _collect(folder: Path, keep: set[str] | None) -> None:
    """Remove hidden generation files not in ``keep`` (None: all of them are kept) and the
    temporary files of writes a kill interrupted."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for n in names:
        stale = (_TMP.match(n) is not None or (n.startswith(".") and n.endswith(".link"))
                 or (keep is not None and _HIDDEN.match(n) is not None and n not in keep))
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(folder / n)
