"""``cnnc train --viz``: after every epoch, the first conv's filters and the activation maps
of a few fixed validation images, written to ``<run>/viz/`` (like ConvNetJS' live views).

Only inference-mode forwards run (no random numbers drawn, no batch-norm statistics
updated, the training gradients untouched), so a run with ``--viz`` trains exactly as one
without.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import plot


class EpochViz:
    def __init__(self, conv: str | None, layers: list[str], images: int = 3):
        self.conv, self.layers, self.images = conv, layers, images

    @classmethod
    def for_model(cls, model, images: int = 3) -> "EpochViz":
        """The first conv (``has_filters``) and the first image-shaped ReLU (``rectifier``),
        else the conv itself."""
        a = model.analysis
        nodes = list(a.order)
        kind = {n: a.layer(n).type for n in nodes}
        shapes = a.shapes
        conv = next((n for n in nodes if kind[n].has_filters), None)
        if conv is None:
            raise UsageError("--viz shows conv filters and feature maps, but this model has no conv layer")
        relu = next((n for n in nodes if kind[n].rectifier and len(shapes[n]) == 3), conv)
        return cls(conv, [relu], images)

    def __call__(self, net, data, out_dir: Path | None, epoch: int) -> None:
        if out_dir is None:
            return
        from ..atomic import atomic_write_bytes

        folder = Path(out_dir) / "viz"
        folder.mkdir(parents=True, exist_ok=True)
        files = {f"filters-{self.conv}-epoch{epoch:03d}.png":
                 plot.filters_png(net.get(self.conv, "w"), f"{self.conv} after epoch {epoch}")}
        pool = data.x_val if len(data.x_val) else data.x_train
        x = np.ascontiguousarray(pool[: self.images])
        if len(x):
            probs = net.predict_proba(x)
            shown = plot.display(x, data.mean, data.std)
            labels = data.y_val if len(data.x_val) else data.y_train
            for layer in self.layers:
                acts = net.layer_outputs(x, [layer])[layer]
                for i in range(len(x)):
                    cap = (f"after epoch {epoch}; validation image {i}, true {_name(data, labels[i])}, "
                           f"predicted {_name(data, probs[i].argmax())} ({probs[i].max():.2f})")
                    files[f"activations-{layer}-epoch{epoch:03d}-{i}.png"] = plot.activations_png(
                        shown[i], acts[i], layer, cap)
        for name, png in files.items():
            atomic_write_bytes(folder / name, png, error=UsageError, what="picture")


def _name(data, c) -> str:
    c = int(c)
    names = data.class_names
    return names[c] if c < len(names) else str(c)
