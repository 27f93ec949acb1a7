"""Softmax and softmax cross-entropy kernels.

logits, probs, dlogits: (N, K), C-contiguous, one float dtype; labels: int64 (N,) with
values in [0, K). The batch is small (N*K is a few thousand elements), so these run serially.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "softmax_forward",
    "softmax_xent_forward",
    "softmax_xent_backward",
    "smoothed_xent_forward",
    "smoothed_xent_backward",
    "count_correct",
]


@njit(cache=True, error_model="numpy")
def softmax_forward(logits, probs):
    """Row softmax (stable: the row max is subtracted). logits: (N, K) -> probs: (N, K)."""
    n_rows, k = logits.shape
    for i in range(n_rows):
        mx = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > mx:
                mx = logits[i, j]
        s = 0.0
        for j in range(k):
            e = math.exp(logits[i, j] - mx)
            probs[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(k):
            probs[i, j] *= inv


@njit(cache=True, error_model="numpy")
def softmax_xent_forward(logits, labels, probs):
    """Softmax + cross-entropy. logits: (N, K), labels: int64 (N,) -> probs: (N, K).

    Returns the mean over the batch of ``logsumexp(logits[i]) - logits[i, labels[i]]``
    (float64 accumulation). Raises ValueError on a label outside [0, K).
    """
    n_rows, k = logits.shape
    total = 0.0
    for i in range(n_rows):
        lab = labels[i]
        if lab < 0 or lab >= k:
            raise ValueError("softmax_xent_forward: label out of range")
        mx = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > mx:
                mx = logits[i, j]
        s = 0.0
        for j in range(k):
            e = math.exp(logits[i, j] - mx)
            probs[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(k):
            probs[i, j] *= inv
        total += math.log(s) - (logits[i, lab] - mx)
    return total / n_rows


@njit(cache=True, error_model="numpy")
def softmax_xent_backward(probs, labels, dlogits):
    """Gradient of the mean cross-entropy: dlogits = (probs - onehot(labels)) / N.

    probs: (N, K), labels: int64 (N,) -> dlogits: (N, K), overwritten (may be probs).
    """
    n_rows, k = probs.shape
    inv_n = 1.0 / n_rows
    for i in range(n_rows):
        lab = labels[i]
        p_lab = probs[i, lab]
        for j in range(k):
            dlogits[i, j] = probs[i, j] * inv_n
        dlogits[i, lab] = (p_lab - 1.0) * inv_n


@njit(cache=True, error_model="numpy")
def smoothed_xent_forward(logits, labels, probs, smoothing):
    """Softmax + cross-entropy against smoothed targets ``q = (1 - e) onehot + e / K``
    (``e = smoothing``, as ``torch.nn.functional.cross_entropy(label_smoothing=e)``).
    logits: (N, K), labels: int64 (N,) -> probs: (N, K). Returns the batch mean of
    ``logsumexp(z) - (1 - e) z[label] - (e / K) sum(z)`` (float64 accumulation)."""
    n_rows, k = logits.shape
    total = 0.0
    spread = smoothing / k
    for i in range(n_rows):
        lab = labels[i]
        if lab < 0 or lab >= k:
            raise ValueError("smoothed_xent_forward: label out of range")
        mx = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > mx:
                mx = logits[i, j]
        s = 0.0
        zsum = 0.0
        for j in range(k):
            e = math.exp(logits[i, j] - mx)
            probs[i, j] = e
            s += e
            zsum += logits[i, j] - mx
        inv = 1.0 / s
        for j in range(k):
            probs[i, j] *= inv
        total += math.log(s) - (1.0 - smoothing) * (logits[i, lab] - mx) - spread * zsum
    return total / n_rows


@njit(cache=True, error_model="numpy")
def smoothed_xent_backward(probs, labels, dlogits, smoothing):
    """Gradient of :func:`smoothed_xent_forward`: dlogits = (probs - q) / N, q the smoothed
    targets. probs: (N, K), labels: int64 (N,) -> dlogits: (N, K), overwritten (may be probs)."""
    n_rows, k = probs.shape
    inv_n = 1.0 / n_rows
    spread = smoothing / k
    for i in range(n_rows):
        lab = labels[i]
        p_lab = probs[i, lab]
        for j in range(k):
            dlogits[i, j] = (probs[i, j] - spread) * inv_n
        dlogits[i, lab] = (p_lab - spread - (1.0 - smoothing)) * inv_n


@njit(cache=True, error_model="numpy")
def count_correct(logits, labels):
    """Number of rows whose argmax (first on ties) equals the label. logits: (N, K)."""
    n_rows, k = logits.shape
    correct = 0
    for i in range(n_rows):
        best = 0
        mx = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > mx:
                mx = logits[i, j]
                best = j
        if best == labels[i]:
            correct += 1
    return correct
