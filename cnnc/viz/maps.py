"""Weights and feature maps: first-layer (or any conv's) filters, a layer's activations."""
from __future__ import annotations

import numpy as np

from .core import check_images, first_conv, resolve_layer


def filters(net, layer: str | None = None) -> np.ndarray:
    """The weights of a conv layer, (F, C/groups, KH, KW). Default: the first conv."""
    node = first_conv(net) if layer is None else resolve_layer(net, layer, fits=lambda t: t.has_filters, view="filters")
    return net.get(node, "w")


def activations(net, x, layer: str) -> np.ndarray:
    """The feature maps (N, C, H, W) of an image-shaped layer for images ``x``."""
    node = resolve_layer(net, layer, image=True, view="activations")
    return net.layer_outputs(check_images(net, x), [node])[node]
