"""Occlusion sensitivity (Zeiler and Fergus 2014): slide a gray patch over the image and
record the class score. Gray is 0 in the network's normalized input space, which is the
training set's mean colour."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .core import check_class, check_images, class_scores


@dataclass
class Occlusion:
    scores: np.ndarray  # (N, rows, cols): the class score with the patch at each position
    drop: np.ndarray  # (N, H, W): base score minus the mean score of the patches covering a pixel
    base: np.ndarray  # (N,): the score without a patch
    classes: np.ndarray  # (N,)
    patch: int
    stride: int


def _starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # the last patch touches the far edge
        starts.append(size - patch)
    return starts


def occlusion(net, x, classes=None, patch: int = 4, stride: int = 2, fill: float = 0.0,
              batch: int = 256) -> Occlusion:
    x = check_images(net, x)
    n, c, h, w = x.shape
    if patch < 1 or stride < 1:
        raise UsageError(f"--patch and --stride must be at least 1, got {patch} and {stride}")
    if patch > min(h, w):
        raise UsageError(f"the patch ({patch}x{patch}) is larger than the image ({h}x{w})")
    logits = class_scores(net, x)
    cls = logits.argmax(axis=1) if classes is None else np.broadcast_to(np.asarray(classes), (n,)).copy()
    for v in set(cls.tolist()):
        check_class(net, v)
    base = logits[np.arange(n), cls]
    rows, cols = _starts(h, patch, stride), _starts(w, patch, stride)
    positions = [(r, q) for r in rows for q in cols]
    scores = np.empty((n, len(rows), len(cols)), net.dtype)
    drop_sum = np.zeros((n, h, w), np.float64)
    cover = np.zeros((h, w), np.float64)
    for i in range(n):
        for j in range(0, len(positions), batch):
            chunk = positions[j: j + batch]
            xs = np.repeat(x[i: i + 1], len(chunk), axis=0)
            for k, (r, q) in enumerate(chunk):
                xs[k, :, r: r + patch, q: q + patch] = fill
            s = class_scores(net, xs)[:, cls[i]]
            for k, (r, q) in enumerate(chunk):
                scores[i, rows.index(r), cols.index(q)] = s[k]
                drop_sum[i, r: r + patch, q: q + patch] += base[i] - s[k]
                if i == 0:
                    cover[r: r + patch, q: q + patch] += 1
    return Occlusion(scores, (drop_sum / cover).astype(net.dtype), base, cls, patch, stride)
