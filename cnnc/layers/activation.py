"""Pointwise nonlinearities: ``relu``, ``leaky(0.1)``, ``tanh``, ``sigmoid``, ``softmax``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ArgSpec, LayerInfo, LayerType, register


@dataclass(frozen=True)
class NoConfig:
    pass


class _Pointwise(LayerType):
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        return LayerInfo(out_shape=inputs[0])


@register
class Relu(_Pointwise):
    name = "relu"
    summary = "max(x, 0)"


@dataclass(frozen=True)
class LeakyConfig:
    alpha: float = 0.01


@register
class LeakyRelu(_Pointwise):
    name = "leaky"
    aliases = ("lrelu", "leakyrelu")
    summary = "x if x > 0 else alpha*x (alpha default 0.01)"
    args = (ArgSpec("alpha", "float", 0.01, positional=True, minimum=0.0, maximum=1.0),)
    config_class = LeakyConfig

    def infer(self, cfg, inputs, ctx):
        return LayerInfo(out_shape=inputs[0], detail=f"alpha {cfg.alpha:g}")


@register
class Tanh(_Pointwise):
    name = "tanh"
    summary = "hyperbolic tangent"


@register
class Sigmoid(_Pointwise):
    name = "sigmoid"
    summary = "1/(1+exp(-x))"


@register
class Softmax(_Pointwise):
    name = "softmax"
    summary = "class probabilities; only as the last layer (fused with the cross-entropy loss)"
