"""Seeing inside a trained network (``cnnc viz``): every view as a function returning arrays.

    >>> from cnnc import viz
    >>> w = viz.filters(net)                       # (F, C, KH, KW) of the first conv
    >>> grad, cls = viz.saliency(net, x)           # d score / d x for the predicted classes
    >>> occ = viz.occlusion(net, x, patch=4)       # occ.drop: (N, H, W) score drop per pixel

Inputs are batches in the network's normalized input space (as given to training).
:mod:`cnnc.viz.plot` turns each result into a PNG; :mod:`cnnc.cli.viz` is ``cnnc viz``.
"""
_WHERE = {"embedding": "feature_space", "features": "feature_space", "neighbours": "feature_space",
          "guided_backprop": "gradients", "magnitude_map": "gradients", "saliency": "gradients",
          "smoothgrad": "gradients", "activations": "maps", "filters": "maps",
          "occlusion": "occlude", "channel_activation": "synthesis", "invert": "synthesis",
          "maximize": "synthesis"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    # the views import NumPy and the compiled network: load a module when a view is asked for,
    # so building the command-line parser (cnnc.cli.viz registers its commands) stays light
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
