"""Fully connected layers and flattening: ``fc(120)``, ``fc``, ``flatten``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ArgSpec, InferContext, LayerError, LayerInfo, LayerType, ParamSpec, Window, fmt_int, register


@dataclass(frozen=True)
class FcConfig:
    units: int | None = None  # None: `classes`, for the network's last fc only
    bias: bool = True


@register
class FullyConnected(LayerType):
    name = "fc"
    aliases = ("dense", "linear")
    summary = "fully connected (flattens its input); the last fc defaults to `classes` outputs"
    args = (ArgSpec("units", "int", None, positional=True, minimum=1,
                    help="output size (default for the last fc: classes)"),
            ArgSpec("bias", "bool", True))
    config_class = FcConfig

    def infer(self, cfg: FcConfig, inputs, ctx: InferContext) -> LayerInfo:
        units = cfg.units
        if units is None:
            if not ctx.is_last_fc:
                raise LayerError("only the network's last fc may leave out its size", "argument",
                                 hint="give the number of outputs, e.g. fc(120)", arg="units")
            if ctx.classes is None:
                raise LayerError("fc without a size needs `classes`", "argument",
                                 hint="add a header line `classes 10` (or --classes), or write fc(10)",
                                 arg="units")
            units = ctx.classes
        shape = inputs[0]
        fan_in = 1
        for d in shape:
            fan_in *= d
        in_text = "*".join(str(d) for d in shape)
        params = [ParamSpec("w", (units, fan_in), "he", fan_in, units)]
        if cfg.bias:
            params.append(ParamSpec("b", (units,), "zeros"))
            formula = f"({in_text}+1)*{units} = {fmt_int((fan_in + 1) * units)}"
        else:
            formula = f"{in_text}*{units} = {fmt_int(fan_in * units)}"
        window = Window((shape[1], shape[2]), (shape[1], shape[2]), (0, 0)) if len(shape) == 3 else None
        return LayerInfo(out_shape=(units,), params=tuple(params), formula=formula,
                         macs=fan_in * units, window=window,
                         detail=f"{fan_in} -> {units}" + ("" if cfg.bias else ", no bias"))

    def downsamples(self, cfg) -> bool:
        return False


@dataclass(frozen=True)
class NoConfig:
    pass


@register
class Flatten(LayerType):
    name = "flatten"
    summary = "CxHxW -> C*H*W (fc flattens by itself)"
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        n = 1
        for d in inputs[0]:
            n *= d
        return LayerInfo(out_shape=(n,))


__all__ = ["FullyConnected", "Flatten", "FcConfig", "LayerError"]
