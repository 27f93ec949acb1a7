"""The run folder: ``runs/<model>`` (numbered so that no run is overwritten), holding
``checkpoint.npz`` (the last epoch), ``best.npz`` (the best validation accuracy),
``history.csv``, ``history.json`` and ``curves.png``."""
from __future__ import annotations

from pathlib import Path

from ...errors import CheckpointError, TrainingError, UsageError

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
        if (path / CHECKPOINT).exists():
            raise UsageError(f"{path} already holds a training run",
                             hint=f"continue it with --resume {path}, or choose another --out")
    else:
        stem = Path(model_file).stem if model_file not in ("<string>", "<expr>") else "model"
        base = Path("runs") / stem
        path, k = base, 1
        while (path / CHECKPOINT).exists():
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
    """The checkpoint to resume: ``path`` itself, or a run folder's last checkpoint."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p


def find_weights(path: str | Path) -> Path:
    """The checkpoint to evaluate: ``path`` itself, or a run folder's best checkpoint (its
    last one when it has no best)."""
    p = Path(path)
    if p.is_dir():
        p = p / BEST if (p / BEST).exists() else p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p
