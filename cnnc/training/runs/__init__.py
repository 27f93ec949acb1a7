"""Training runs on disk: the run folder (:mod:`.folder`), the checkpoint format and the
training checkpoint's schema (:mod:`.checkpoint`), the history and its curves
(:mod:`.history`), and the atomic commit that writes them together (:mod:`.commit`)."""
from __future__ import annotations

from .checkpoint import (CHECKPOINT_FORMAT, FORMAT_KEY, META_FIELDS, META_KEY, TRAINING_KIND,
                         load_checkpoint, load_training_checkpoint, params_of, save_checkpoint,
                         training_arrays, training_meta)
from .folder import BEST, CHECKPOINT, CURVES, HISTORY_CSV, HISTORY_JSON, find_checkpoint, \
    find_weights, new_run_dir
from .history import history_files, plot_history, write_history
from .commit import (CRASH_ENV, MANIFEST, PathWriter, commit, committed, crash_point, read_manifest,
                     recover)

__all__ = [
    "CHECKPOINT_FORMAT", "FORMAT_KEY", "META_FIELDS", "META_KEY", "TRAINING_KIND",
    "load_checkpoint", "load_training_checkpoint", "params_of", "save_checkpoint",
    "training_arrays", "training_meta", "BEST", "CHECKPOINT", "CURVES", "HISTORY_CSV", "HISTORY_JSON",
    "find_checkpoint", "find_weights", "new_run_dir", "plot_history", "write_history",
    "history_files", "CRASH_ENV", "MANIFEST", "PathWriter", "commit", "committed", "crash_point",
    "read_manifest", "recover",
]
