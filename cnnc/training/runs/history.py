"""A run's history: one row per epoch, written as CSV and JSON, and plotted as curves."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .commit import commit
from .folder import CURVES, HISTORY_CSV, HISTORY_JSON


def history_files(history: list[dict], title: str, curves: bool = True) -> dict[str, bytes]:
    """The bytes of ``history.csv``, ``history.json`` and (with ``curves``) ``curves.png``,
    by file name, for one commit of the run folder (:mod:`.commit`). Drawing the curves
    costs about 0.2 s (and importing matplotlib more), so the training loop redraws them only
    now and then (:class:`cnnc.training.train.Trainer`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    files = {HISTORY_CSV: buf.getvalue().encode("utf-8"),
             HISTORY_JSON: json.dumps(history, indent=1).encode("utf-8")}
    if curves:
        files[CURVES] = plot_history(history, title)
    return files


def write_history(out_dir: Path, history: list[dict], title: str, curves: bool = True) -> None:
    """:func:`history_files` committed to the run folder ``out_dir`` in one step."""
    commit(out_dir, history_files(history, title, curves), what="history")


def plot_history(history: list[dict], title: str) -> bytes:
    """PNG bytes of the loss and accuracy curves (``title``: the model and its data set);
    the epoch axis has whole-number ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("loss", "accuracy"), ("cross-entropy loss", "accuracy")):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
        if any(h[f"val_{metric}"] is not None for h in history):
            ax.plot(epochs, [h[f"val_{metric}"] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
