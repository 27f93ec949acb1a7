"""Downloading the named data sets into the data folder, checksums verified.

Every file is written through :mod:`cnnc.atomic`: a temporary file beside the target,
renamed into place only once its checksum matched.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from ...atomic import atomic_write_bytes, atomic_writer
from ...errors import DataError
from .catalog import ALIASES, CHECKSUMS, DOWNLOAD_TIMEOUT, DOWNLOADS
from .formats.cifar import CIFAR_META, CIFAR_TEST, CIFAR_TRAIN
from .formats.common import find_first


def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``data_dir``, else ``$CNNC_DATA``, else ``~/.cache/cnnc/data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("CNNC_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnc" / "data"


def open_url(url: str, timeout: float) -> Any:
    """``urllib.request.urlopen`` (a seam for tests)."""
    req = urllib.request.Request(url, headers={"User-Agent": "cnnc"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - fixed https/http URLs


class NetworkError(DataError):
    """Every mirror was unreachable (resolve_dataset rewords it with where to put the files)."""


def download_file(url: str, dest: str | os.PathLike[str], md5: str,
                  sha256: str | None = None, *, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download ``url`` to ``dest``: into a temporary file beside it, checked against
    ``md5`` (and ``sha256``), then renamed onto ``dest``. A checksum mismatch is a DataError
    (nothing is kept); a network failure raises a DataError subclass naming the URL."""
    dest = Path(dest)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    with atomic_writer(dest, error=DataError, what="downloaded file") as out:
        try:
            resp = open_url(url, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            raise NetworkError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
        with resp:
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except (urllib.error.URLError, TimeoutError, ConnectionError, OSError,
                        EOFError, ValueError) as exc:
                    raise NetworkError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
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
    wanted = set(CIFAR_TRAIN + CIFAR_TEST + (CIFAR_META,))
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
    name = ALIASES.get(name.lower(), name)
    if name not in DOWNLOADS:
        raise DataError(f"no download is known for data set {name!r}")
    folder = Path(folder)
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # to remove if nothing comes
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder {folder}: {exc.strerror or exc}") from None
    try:
        _fetch_all(name, folder)
    except BaseException:
        for d in made:  # innermost first; only folders still empty (no partial data is kept)
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _fetch_all(name: str, folder: Path) -> None:
    for fname, md5, sha in _download_targets(name):
        dest = folder / fname
        if name != "cifar10" and find_first(folder, [fname, fname[:-3]]) is not None:
            continue
        last: str = ""
        for base in DOWNLOADS[name]:
            url = base + fname
            print(f"cnnc: downloading {url} -> {dest}", file=sys.stderr, flush=True)
            try:
                download_file(url, dest, md5, sha)
                break
            except NetworkError as exc:
                last = exc.message
        else:
            raise NetworkError(last)
        if name == "cifar10":
            _safe_extract_cifar(dest, folder)
            try:
                dest.unlink()
            except OSError:
                pass
