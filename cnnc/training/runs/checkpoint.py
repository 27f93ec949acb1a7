"""The checkpoint file: its container format and the schema of a training checkpoint.

Container. A checkpoint is an ordinary NumPy ``.npz`` archive (a zip of ``.npy`` files)
that any NumPy can open without cnnc and without pickle:

* one entry per array in ``arrays`` (its name is the dictionary key);
* one reserved entry, ``__meta__``: a 1-D ``uint8`` array holding UTF-8 JSON (the
  ``meta`` dictionary plus ``"checkpoint_format": CHECKPOINT_FORMAT``).

Nothing is ever pickled: object arrays are refused when saving, and loading uses
``allow_pickle=False``. Files are written with :func:`cnnc.atomic.atomic_writer`.

Training schema (:func:`training_arrays`, :func:`training_meta`,
:func:`load_training_checkpoint`). Arrays:
``param.<layer>.<name>`` for every parameter and buffer of the network, the optimizer's
state (:meth:`cnnc.runtime.optim.Optimizer.state`), and ``data.mean`` / ``data.std``, the input
normalization. Meta (:data:`META_FIELDS`): ``kind`` (:data:`TRAINING_KIND`), the model
(``model_text``, ``model_file``, ``input_shape``, ``classes``), the data (``class_names``,
``data_name``), ``config`` (the :class:`~cnnc.training.train.TrainConfig` as a dict, with the data
source as a name or an absolute path), ``design`` (the design variables and optional-layer
switches the model was compiled with, ``--set``; absent in older checkpoints), the training
position (``position``, ``rng``: generator states, ``history``, ``best_val_accuracy``,
``best_score``, ``finished``).
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import os_reason, atomic_writer
from ...errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT", "META_KEY", "FORMAT_KEY", "TRAINING_KIND", "META_FIELDS",
    "save_checkpoint", "load_checkpoint", "load_training_checkpoint",
    "training_arrays", "training_meta", "params_of", "check_finite",
]

#: Version of the checkpoint layout written by :func:`save_checkpoint`. A reader refuses
#: checkpoints whose version is newer than the one it knows.
CHECKPOINT_FORMAT = 1
#: The reserved archive entry that holds the JSON metadata.
META_KEY = "__meta__"
#: The metadata key that records :data:`CHECKPOINT_FORMAT`.
FORMAT_KEY = "checkpoint_format"
#: ``meta["kind"]`` of a checkpoint written by training.
TRAINING_KIND = "cnnc-training"
#: The keys of a training checkpoint's metadata (besides :data:`FORMAT_KEY`).
META_FIELDS = ("kind", "model_text", "model_file", "input_shape", "classes", "class_names",
               "data_name", "config", "design", "position", "rng", "history", "best_val_accuracy",
               "best_score", "finished")
PARAM_PREFIX = "param."


def training_arrays(params: Mapping[str, np.ndarray], optimizer_state: Mapping[str, np.ndarray],
                    mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of a training checkpoint (see the module notes)."""
    arrays = {PARAM_PREFIX + k: v for k, v in params.items()}
    arrays.update(optimizer_state)
    arrays["data.mean"] = mean
    arrays["data.std"] = std
    return arrays


def training_meta(**values: Any) -> dict[str, Any]:
    """The metadata of a training checkpoint: ``kind`` and exactly the other
    :data:`META_FIELDS` (a missing or unknown one is a bug in the caller)."""
    given, expected = set(values), set(META_FIELDS) - {"kind"}
    if given != expected:
        raise TypeError(f"training_meta: missing {sorted(expected - given)}, "
                        f"unknown {sorted(given - expected)}")
    return {"kind": TRAINING_KIND, **values}


def params_of(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The network state (``Network.load_state``'s argument) held in checkpoint arrays."""
    return {k[len(PARAM_PREFIX):]: v for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}


def load_training_checkpoint(path: str | os.PathLike[str],
                             named: Any = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`load_checkpoint`, refusing a file that training did not write. ``named``:
    how the message names the file (default: its path)."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != TRAINING_KIND:
        raise CheckpointError(f"{named if named is not None else Path(path)}: "
                              "not a cnnc training checkpoint")
    check_finite(arrays, named if named is not None else Path(path))
    return arrays, meta


def check_finite(arrays: Mapping[str, np.ndarray], where: Any) -> None:
    """Refuse arrays holding NaN or infinite values, naming the first such tensor: weights
    that are not numbers give garbage without a word (``cnnc eval`` printed a confusion
    matrix of one class). Training that diverges stops at the step instead, before saving."""
    for key, value in arrays.items():
        if np.issubdtype(value.dtype, np.inexact) and value.size and not np.isfinite(value).all():
            bad = value[~np.isfinite(value)]
            nan = int(np.isnan(bad).sum())
            what = ", ".join(f"{n} {w}" for n, w in ((nan, "NaN"), (bad.size - nan, "infinite"))
                             if n)
            name = key[len(PARAM_PREFIX):] if key.startswith(PARAM_PREFIX) else key
            raise CheckpointError(f"{where}: tensor {name!r} holds values that are not numbers "
                                  f"({what} of {value.size})",
                                  hint="these weights cannot be used; take an earlier checkpoint "
                                       "or train again")


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
        raise CheckpointError(f"cannot read checkpoint {target}: {os_reason(exc)}") from None
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

