"""Seeing inside a trained network (``cnnc viz``): every view as a function returning arrays.

    >>> from cnnc import viz
    >>> w = viz.filters(net)                       # (F, C, KH, KW) of the first conv
    >>> grad, cls = viz.saliency(net, x)           # d score / d x for the predicted classes
    >>> occ = viz.occlusion(net, x, patch=4)       # occ.drop: (N, H, W) score drop per pixel

Inputs are batches in the network's normalized input space (as given to training).
:mod:`cnnc.viz.plot` turns each result into a PNG; :mod:`cnnc.viz.command` is ``cnnc viz``.
"""
from .features import embedding, features, neighbours
from .gradients import guided_backprop, magnitude_map, saliency, smoothgrad
from .maps import activations, filters
from .occlusion import occlusion
from .synthesis import channel_activation, invert, maximize

__all__ = ["activations", "channel_activation", "embedding", "features", "filters", "guided_backprop",
           "invert", "magnitude_map", "maximize", "neighbours", "occlusion", "saliency", "smoothgrad"]
