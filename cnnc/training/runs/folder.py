"""The run folder: ``runs/<model>`` (numbered so that no run is overwritten), holding
``checkpoint.npz`` (the last epoch), ``best.npz`` (the best validation accuracy),
``history.csv``, ``history.json`` and ``curves.png``, committed together through the
manifest ``run.json`` (:mod:`.commit`)."""
from __future__ import annotations

from pathlib import Path

from ...errors import CheckpointError, TrainingError, UsageError
from .commit import MANIFEST, committed

CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
CURVES = "curves.png"


def new_run_dir(model_file: str, out: str | None) -> Path:
    """``out`` as given (refused if it already holds a run), else ``runs/<model>``, numbered
    ``-2``, ``-3``... so that no earlier run is overwritten."""
    if out is not None:
        path = Path(out)
        if (path / CHECKPOINT).exists() or (path / MANIFEST).exists():
            raise UsageError(f"{path} already holds a training run",
                             hint=f"continue it with --resume {path}, or choose another --out")
    else:
        stem = Path(model_file).stem if model_file not in ("<string>", "<expr>") else "model"
        base = Path("runs") / stem
        path, k = base, 1
        while (path / CHECKPOINT).exists() or (path / MANIFEST).exists():
            k += 1
            path = base.parent / f"{base.name}-{k}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the output folder {path}: {err.strerror or err}",
                            hint="choose a writable folder with --out") from None
    return path


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint to resume: ``path`` itself, or a run folder's last committed checkpoint
    (:func:`~.commit.committed`, so a kill between two writes never mixes epochs)."""
    p = Path(path)
    if p.is_dir():
        p = committed(p, CHECKPOINT) or p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p


def find_weights(path: str | Path) -> Path:
    """The checkpoint to evaluate: ``path`` itself, or a run folder's best checkpoint (its
    last one when it has no best), as last committed."""
    p = Path(path)
    if p.is_dir():
        p = committed(p, BEST) or committed(p, CHECKPOINT) or p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p
