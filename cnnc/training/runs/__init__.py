"""Training runs on disk: the run folder (:mod:`.folder`), the checkpoint format and the
training checkpoint's schema (:mod:`.checkpoint`), the history and its curves
(:mod:`.history`)."""
from __future__ import annotations

from .checkpoint import (CHECKPOINT_FORMAT, FORMAT_KEY, META_FIELDS, META_KEY, TRAINING_KIND,
                         load_checkpoint, load_training_checkpoint, params_of, save_checkpoint,
                         training_arrays, training_meta)
from .folder import BEST, CHECKPOINT, CURVES, HISTORY_CSV, HISTORY_JSON, find_checkpoint, \
    find_weights, new_run_dir
from .history import plot_history, write_history

__all__ = [
    "CHECKPOINT_FORMAT", "FORMAT_KEY", "META_FIELDS", "META_KEY", "TRAINING_KIND",
    "load_checkpoint", "load_training_checkpoint", "params_of", "save_checkpoint",
    "training_arrays", "training_meta", "BEST", "CHECKPOINT", "CURVES", "HISTORY_CSV", "HISTORY_JSON",
    "find_checkpoint", "find_weights", "new_run_dir", "plot_history", "write_history",
]
