"""Feature-space views: nearest neighbours and 2-D embeddings of a layer's features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .core import check_images, last_fc_input, resolve_layer


def features(net, x, layer: str | None = None, batch: int = 256) -> np.ndarray:
    """A layer's inference-mode output, flattened: (N, D). Default: the input of the last fc."""
    node = last_fc_input(net) if layer is None else resolve_layer(net, layer, view="features")
    x = check_images(net, x)
    v = net.layer_outputs(x, [node], batch=batch)[node]
    return v.reshape(v.shape[0], -1)


@dataclass
class Neighbours:
    indices: np.ndarray  # (Q, k) indices into the reference set, nearest first
    distances: np.ndarray  # (Q, k) Euclidean distances in feature space
    layer: str


def neighbours(net, queries, reference, k: int = 8, layer: str | None = None) -> Neighbours:
    """The ``k`` reference images nearest to each query in the feature space of ``layer``."""
    node = last_fc_input(net) if layer is None else resolve_layer(net, layer, view="neighbours")
    if k < 1:
        raise UsageError(f"-k must be at least 1, got {k}")
    fq = features(net, queries, node).astype(np.float64)
    fr = features(net, reference, node).astype(np.float64)
    k = min(k, fr.shape[0])
    d2 = (fq ** 2).sum(1)[:, None] + (fr ** 2).sum(1)[None, :] - 2 * fq @ fr.T
    np.maximum(d2, 0, out=d2)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return Neighbours(idx, np.sqrt(np.take_along_axis(d2, idx, axis=1)), node)


def embedding(net, x, layer: str | None = None, method: str = "tsne", seed: int = 0,
              perplexity: float = 30.0) -> np.ndarray:
    """2-D coordinates (N, 2) of the images' features: t-SNE or PCA (scikit-learn)."""
    f = features(net, x, layer)
    if method == "pca":
        from sklearn.decomposition import PCA

        if f.shape[0] < 2:
            raise UsageError("an embedding needs at least 2 images")
        return PCA(n_components=2, random_state=seed).fit_transform(f)
    if method == "tsne":
        from sklearn.manifold import TSNE

        if f.shape[0] < 5:
            raise UsageError("t-SNE needs at least 5 images")
        return TSNE(n_components=2, init="pca", random_state=seed, learning_rate="auto",
                    perplexity=min(perplexity, (f.shape[0] - 1) / 3)).fit_transform(f)
    raise UsageError(f"unknown embedding method {method!r}; use tsne or pca")
