"""Batch normalization (``bn``) and dropout (``dropout(0.5)``)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ArgSpec, LayerInfo, LayerType, ParamSpec, fmt_int, register


@dataclass(frozen=True)
class BnConfig:
    eps: float = 1e-5
    momentum: float = 0.1


@register
class BatchNorm(LayerType):
    name = "bn"
    aliases = ("batchnorm",)
    summary = "batch normalization per channel (per feature on vectors)"
    args = (ArgSpec("eps", "float", 1e-5, minimum=0.0),
            ArgSpec("momentum", "float", 0.1, minimum=0.0, maximum=1.0,
                    help="weight of the new batch in the running statistics"))
    config_class = BnConfig

    def infer(self, cfg: BnConfig, inputs, ctx):
        c = inputs[0][0]
        return LayerInfo(
            out_shape=inputs[0],
            params=(ParamSpec("gamma", (c,), "ones"), ParamSpec("beta", (c,), "zeros")),
            buffers=(ParamSpec("running_mean", (c,), "zeros"), ParamSpec("running_var", (c,), "ones")),
            formula=f"2*{c} = {fmt_int(2 * c)}",
            detail=f"{c} channels, eps {cfg.eps:g}, momentum {cfg.momentum:g}")


@dataclass(frozen=True)
class DropoutConfig:
    p: float = 0.5


@register
class Dropout(LayerType):
    name = "dropout"
    summary = "inverted dropout with drop probability p (off at inference)"
    args = (ArgSpec("p", "float", 0.5, positional=True, minimum=0.0, maximum=0.99),)
    config_class = DropoutConfig

    def infer(self, cfg: DropoutConfig, inputs, ctx):
        return LayerInfo(out_shape=inputs[0], detail=f"p {cfg.p:g}")
