"""Gradient views of a class score: saliency, SmoothGrad and guided backpropagation.

* saliency (Simonyan, Vedaldi, Zisserman 2014): d score_c / d x, shown as its absolute
  value, maximum over the colour channels;
* SmoothGrad (Smilkov et al. 2017): the same gradient averaged over copies of the image
  with Gaussian noise added (``noise`` is the noise's standard deviation as a fraction of
  the image's value range);
* guided backpropagation (Springenberg et al. 2015): backward through every ReLU passes
  only positive gradients at positive inputs; the "deconvolution" view of what an image
  region contributes.

The score is the pre-softmax logit. ``classes=None`` takes each image's predicted class.
"""
from __future__ import annotations

import numpy as np

from .core import check_class, check_images, class_scores, score_gradient


def _classes(net, x, classes) -> np.ndarray:
    if classes is None:
        return class_scores(net, x).argmax(axis=1)
    c = np.broadcast_to(np.asarray(classes, dtype=np.int64), (x.shape[0],)).copy()
    for v in set(c.tolist()):
        check_class(net, v)
    return c


def saliency(net, x, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(d score / d x of shape (N, C, H, W), the classes used (N,))."""
    x = check_images(net, x)
    cls = _classes(net, x, classes)
    _, grad = score_gradient(net, x, cls)
    return grad, cls


def smoothgrad(net, x, classes=None, samples: int = 25, noise: float = 0.15,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SmoothGrad: the score gradient averaged over ``samples`` noisy copies of each image."""
    x = check_images(net, x)
    cls = _classes(net, x, classes)
    rng = np.random.default_rng(seed)
    sigma = noise * float(x.max() - x.min() or 1.0)
    total = np.zeros_like(x)
    for _ in range(samples):
        noisy = x + rng.normal(0.0, sigma, x.shape).astype(x.dtype)
        total += score_gradient(net, noisy, cls)[1]
    return total / samples, cls


def guided_backprop(net, x, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """(guided-backpropagation gradient (N, C, H, W), the classes used)."""
    x = check_images(net, x)
    cls = _classes(net, x, classes)
    _, grad = score_gradient(net, x, cls, guided=True)
    return grad, cls


def magnitude_map(grad: np.ndarray) -> np.ndarray:
    """|gradient|, maximum over channels: (N, H, W)."""
    return np.abs(grad).max(axis=1)
