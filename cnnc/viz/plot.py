"""PNG figures (matplotlib) for the views of :mod:`cnnc.viz`; every title says what is shown.

Each function takes arrays (images already denormalized to display values by
:func:`display`) and returns PNG bytes; the caller writes them (atomically).
"""
from __future__ import annotations

import io
import math

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _suptitle(fig, text: str, fontsize: float = 9) -> None:
    """A title wrapped to the figure's width (about 13 characters per inch at 9 points)."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 13 * 9 / fontsize))
    lines = textwrap.wrap(text, width)
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


def display(x: np.ndarray, mean=None, std=None) -> np.ndarray:
    """Normalized network inputs (N, C, H, W) back to pixel values, (N, H, W, C) or (N, H, W)."""
    x = np.asarray(x, np.float64)
    if mean is not None:
        c = x.shape[1]
        x = x * np.asarray(std, np.float64).reshape(1, c, 1, 1) + np.asarray(mean, np.float64).reshape(1, c, 1, 1)
    return x.transpose(0, 2, 3, 1)[..., 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def _scaled(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _show(ax, img, cmap=None, title=None, fontsize=8):
    img = np.asarray(img)
    if img.ndim == 3:
        ax.imshow(np.clip(_scaled(img), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img, cmap=cmap or "gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _heat(fig, ax, img, cmap: str, title: str, label: str, vmin=None, vmax=None, fontsize=8):
    """A heat map with its colour bar (``label`` says what the colours measure)."""
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.set_label(label, fontsize=6)
    return im


def _grid(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    return math.ceil(n / cols), cols


def filters_png(w: np.ndarray, layer: str) -> bytes:
    """Each filter min-max scaled on its own; RGB when it has 3 input channels, else one
    grey tile per (filter, input channel) for the first 16 channels."""
    plt = _plt()
    f, c, kh, kw = w.shape
    rgb = c == 3
    if rgb or c == 1:
        rows, cols = _grid(f)
        fig, axes = plt.subplots(rows, cols, figsize=(max(cols * 0.9 + 0.4, 4.5), rows * 0.95 + 1.2), squeeze=False, layout="constrained")
        for i, ax in enumerate(axes.ravel()):
            if i < f:
                _show(ax, w[i].transpose(1, 2, 0) if rgb else _scaled(w[i, 0]), title=str(i), fontsize=7)
            else:
                ax.axis("off")
    else:
        fs, cs = min(f, 32), min(c, 16)
        fig, axes = plt.subplots(fs, cs, figsize=(cs * 0.55 + 0.6, fs * 0.55 + 1.0), squeeze=False, layout="constrained")
        for i in range(fs):
            for j in range(cs):
                _show(axes[i, j], _scaled(w[i, j]))
            axes[i, 0].set_ylabel(str(i), fontsize=6, rotation=0, labelpad=8)
        for j in range(cs):
            axes[0, j].set_title(f"in {j}", fontsize=6)
    what = "RGB" if rgb else "grey" if c == 1 else f"rows: filters{' (first 32)' if f > 32 else ''}, columns: input channels{' (first 16)' if c > 16 else ''}"
    _suptitle(fig, f"{layer} filters: {f} x {c}x{kh}x{kw} weights ({what}; each filter scaled to its own range)",
                 fontsize=9)
    return _png(fig)


def activations_png(image: np.ndarray, acts: np.ndarray, layer: str, caption: str, limit: int = 64) -> bytes:
    plt = _plt()
    c = min(acts.shape[0], limit)
    rows, cols = _grid(c + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1 + 0.3, rows * 1.1 + 0.8), squeeze=False, layout="constrained")
    lo, hi = float(acts[:c].min()), float(acts[:c].max())
    im = None
    for i, ax in enumerate(axes.ravel()):
        if i == 0:
            _show(ax, image, title="input", fontsize=7)
        elif i <= c:
            im = ax.imshow(acts[i - 1], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"ch {i - 1}", fontsize=6)
        else:
            ax.axis("off")
    if im is not None:  # one scale for every map: one colour bar
        bar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("activation", fontsize=7)
    more = f" (first {c} of {acts.shape[0]})" if acts.shape[0] > c else ""
    _suptitle(fig, f"{layer} activations, {acts.shape[0]} channels of {acts.shape[1]}x{acts.shape[2]}{more}, "
                 f"one colour scale [{lo:.2g}, {hi:.2g}]; {caption}", fontsize=8)
    return _png(fig)


def _overlay(fig, ax, image, heat, title):
    """``heat`` (scaled to its own range) over the image in grey, with a colour bar."""
    base = image if image.ndim == 2 else _scaled(image).mean(axis=2)
    ax.imshow(_scaled(base), cmap="gray", interpolation="nearest")
    im = ax.imshow(_scaled(heat), cmap="hot", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("share of the largest", fontsize=6)


def saliency_png(images, sal, smooth, captions, samples: int, noise: float) -> bytes:
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(10.4, 2.6 * n + 0.8), squeeze=False, layout="constrained")
    for i in range(n):
        _show(axes[i, 0], images[i], title=captions[i])
        _heat(fig, axes[i, 1], sal[i], "hot", "saliency |d score/d x|", "|d score / d pixel|")
        _heat(fig, axes[i, 2], smooth[i], "hot", f"SmoothGrad ({samples} x, noise {noise:g})",
              "mean |d score / d pixel|")
        _overlay(fig, axes[i, 3], images[i], smooth[i], "SmoothGrad on the image")
    _suptitle(fig, "Saliency: gradient of the class score (pre-softmax) w.r.t. the pixels, max over channels",
                 fontsize=9)
    return _png(fig)


def guided_png(images, guided, captions) -> bytes:
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(8.2, 2.6 * n + 0.8), squeeze=False, layout="constrained")
    for i in range(n):
        _show(axes[i, 0], images[i], title=captions[i])
        g = guided[i]
        signed = g[0] if g.shape[0] == 1 else g.transpose(1, 2, 0)
        if signed.ndim == 2:
            m = float(np.abs(signed).max()) or 1.0
            _heat(fig, axes[i, 1], signed, "RdBu_r", "guided backprop (red +, blue -)", "gradient",
                  vmin=-m, vmax=m)
        else:
            _show(axes[i, 1], signed, title="guided backprop (RGB)")
        _overlay(fig, axes[i, 2], images[i], np.abs(g).max(axis=0), "|guided| on the image")
    _suptitle(fig, "Guided backpropagation: score gradient with only positive signals passed back through ReLUs",
                 fontsize=9)
    return _png(fig)


def occlusion_png(images, occ, captions) -> bytes:
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(8.2, 2.7 * n + 0.8), squeeze=False, layout="constrained")
    for i in range(n):
        _show(axes[i, 0], images[i], title=captions[i])
        _heat(fig, axes[i, 1], occ.scores[i], "viridis",
              f"score with patch at each position\n(unoccluded {occ.base[i]:.2f})", "class score")
        _overlay(fig, axes[i, 2], images[i], np.maximum(occ.drop[i], 0), "score drop per pixel")
    _suptitle(fig, f"Occlusion: a {occ.patch}x{occ.patch} gray patch slid with stride {occ.stride}; "
                 "where the class score falls, the network looks", fontsize=9)
    return _png(fig)


def synthesis_png(images, titles, suptitle, cols: int | None = None) -> bytes:
    plt = _plt()
    n = len(images)
    rows, cols = _grid(n, cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5 + 0.3, rows * 1.6 + 0.8), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            _show(ax, _scaled(images[i]), title=titles[i], fontsize=7)
        else:
            ax.axis("off")
    _suptitle(fig, suptitle, fontsize=8)
    return _png(fig)


def invert_png(originals, recon, layer, errors) -> bytes:
    plt = _plt()
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 4.0), squeeze=False, layout="constrained")
    for i in range(n):
        _show(axes[0, i], originals[i], title="original")
        _show(axes[1, i], recon[i], title=f"from {layer}\ncode error {errors[i]:.3f}")
    _suptitle(fig, f"Inversion: images whose {layer} code matches the original's "
                 "(gradient descent from noise, TV + L2 prior)", fontsize=8)
    return _png(fig)


def neighbours_png(queries, refs, nb, q_labels, r_labels, names, layer) -> bytes:
    plt = _plt()
    q, k = nb.indices.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.2 * (k + 1) + 0.3, 1.35 * q + 0.8), squeeze=False, layout="constrained")
    for i in range(q):
        _show(axes[i, 0], queries[i], title=f"query: {names(q_labels[i])}", fontsize=7)
        for j in range(k):
            r = nb.indices[i, j]
            _show(axes[i, j + 1], refs[r], title=f"#{r} {names(r_labels[r])}\nd={nb.distances[i, j]:.2f}",
                  fontsize=6)
        axes[i, 0].spines[:].set_color("red")
    _suptitle(fig, f"Nearest training images to each query (left) in the feature space of {layer} "
                 f"(Euclidean), nearest first", fontsize=8)
    return _png(fig)


def embedding_png(xy, labels, names, layer, method, data_name) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    classes = sorted(set(int(v) for v in labels))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for j, c in enumerate(classes):
        sel = labels == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap(j % cmap.N), label=names(c), alpha=0.8)
    ax.legend(markerscale=2.5, fontsize=7, loc="best", title="true class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{method.upper() if method == 'pca' else 't-SNE'} of {layer} features of "
                 f"{len(labels)} {data_name} test images, coloured by true class", fontsize=9)
    return _png(fig)
