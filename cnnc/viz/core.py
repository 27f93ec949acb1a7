"""What every view needs from a compiled network: layer lookup with did-you-mean, layer
kinds and shapes, class scores and their input gradients.

Every use of cnnc internals by :mod:`cnnc.viz` goes through the small adapter functions at
the top of this module (the network's :class:`~cnnc.lang.infer.Analysis`) and the Network's
inspection methods (``layer_outputs``, ``input_gradient``).
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import UsageError
from ..lang.graph import INPUT

if TYPE_CHECKING:
    from ..layers import LayerType


# ---- adapters onto the network's analysis (the only places that read it)
def layer_nodes(net) -> list[str]:
    """Layers in schedule order, without the input."""
    return list(net.plan.analysis.order)


def layer_type(net, node: str) -> LayerType:
    """The layer type of ``node``: views ask it what the layer is (``has_filters``...)."""
    return net.plan.analysis.layer(node).type


def layer_kind(net, node: str) -> str:
    """The name of ``node``'s layer type, for messages."""
    return layer_type(net, node).name


def out_shape(net, node: str) -> tuple[int, ...]:
    return tuple(net.plan.analysis.shapes[node])


def layer_inputs(net, node: str) -> tuple[str, ...]:
    return tuple(net.plan.analysis.inputs(node))


def output_node(net) -> str:
    return net.plan.analysis.output


# ---- lookups
def resolve_layer(net, name: str | None, *, fits: Callable[[LayerType], bool] | None = None,
                  image: bool | None = None, view: str = "this view") -> str:
    """The graph node called ``name``; UsageError with close matches when there is none,
    or when its layer type is not one the view takes (``fits(type)`` false)."""
    names = layer_nodes(net)
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = (f"did you mean {', '.join(close)}?" if close else
                "layers: " + ", ".join(names[:12]) + (" ..." if len(names) > 12 else ""))
        raise UsageError(f"no layer {name!r} in this model", hint=hint + " (`cnnc check FILE` lists them)")
    if fits is not None and not fits(layer_type(net, name)):
        from ..layers import layer_types

        kinds = [t.name for t in layer_types() if fits(t)]
        good = [n for n in names if fits(layer_type(net, n))]
        raise UsageError(f"{view} needs a {' or '.join(kinds)} layer, "
                         f"but {name} is a {layer_kind(net, name)} layer",
                         hint=("try " + ", ".join(good[:4])) if good else None)
    if image is not None and (len(out_shape(net, name)) == 3) != image:
        shape = "x".join(map(str, out_shape(net, name)))
        fits = [n for n in names if (len(out_shape(net, n)) == 3) == image]
        raise UsageError(f"{view} needs a layer with {'an image (CxHxW)' if image else 'a vector'} output, "
                         f"but {name} outputs {shape}",
                         hint=("try " + ", ".join(fits[-4:] if not image else fits[:4])) if fits else None)
    return name


def first_conv(net) -> str:
    """The first layer with filters (``has_filters``: a conv)."""
    for n in layer_nodes(net):
        if layer_type(net, n).has_filters:
            return n
    raise UsageError("this model has no conv layer")


def last_fc_input(net) -> str:
    """The node feeding the last fc (``is_dense``): the default feature space for neighbours/embedding."""
    fcs = [n for n in layer_nodes(net) if layer_type(net, n).is_dense]
    if not fcs:
        return output_node(net)
    (src,) = layer_inputs(net, fcs[-1])
    if src == INPUT:
        raise UsageError("the last fc reads the input directly; give --layer")
    return src


def check_images(net, x) -> np.ndarray:
    """A float batch (N, C, H, W) of the model's input shape; UsageError otherwise."""
    x = np.asarray(x)
    want = tuple(net.input_shape)
    if x.ndim == len(want):
        x = x[None]
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise UsageError(f"the images have shape {'x'.join(map(str, x.shape[1:]))}, "
                         f"the model takes {'x'.join(map(str, want))}",
                         hint="resize them, or use --fit for data sets")
    return x.astype(net.dtype, copy=False)


def check_class(net, cls) -> int:
    if not 0 <= int(cls) < net.classes:
        raise UsageError(f"class {cls} is out of range: the model has classes 0..{net.classes - 1}")
    return int(cls)


# ---- scores and gradients
def logits_node(net) -> str:
    """The node whose output is the class scores: the output, or the input of a softmax
    there (``fused_into_loss``)."""
    out = output_node(net)
    return layer_inputs(net, out)[0] if layer_type(net, out).fused_into_loss else out


def class_scores(net, x) -> np.ndarray:
    """Pre-softmax class scores (N, classes), inference mode."""
    return net.forward(check_images(net, x), training=False)


def score_gradient(net, x, classes, guided: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, K), d score[i, classes[i]] / d x[i]) for a batch."""
    x = check_images(net, x)
    node = logits_node(net)
    classes = np.broadcast_to(np.asarray(classes), (x.shape[0],))
    dy = np.zeros((x.shape[0], net.classes), net.dtype)
    dy[np.arange(x.shape[0]), classes] = 1
    return net.input_gradient(x, node, dy, guided=guided)


def unit_gradient(net, x, layer: str, channel: int | None, guided: bool = False):
    """(activation, d objective / d x) where the objective is the mean of channel ``channel``
    of ``layer``'s output (an image layer) or unit ``channel`` (a vector layer); ``None``: the
    mean of the whole output."""
    x = check_images(net, x)
    shape = (x.shape[0], *out_shape(net, layer))
    dy = np.zeros(shape, net.dtype)
    if channel is None:
        dy[...] = 1.0 / np.prod(shape[1:])
    elif len(shape) == 4:
        dy[:, channel] = 1.0 / (shape[2] * shape[3])
    else:
        dy[:, channel] = 1.0
    value, dx = net.input_gradient(x, layer, dy, guided=guided)
    return value, dx


def objective(value: np.ndarray, channel: int | None) -> np.ndarray:
    """The per-image value :func:`unit_gradient` differentiates."""
    if channel is None:
        return value.reshape(value.shape[0], -1).mean(axis=1)
    v = value[:, channel]
    return v.reshape(v.shape[0], -1).mean(axis=1)

