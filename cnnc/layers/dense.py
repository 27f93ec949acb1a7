"""Fully connected layers and flattening: ``fc(120)``, ``fc``, ``flatten``."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .base import (ArgSpec, InferContext, LayerError, LayerInfo, LayerType, NoConfig, Op, ParamSpec,
                   TorchCode, Window, fmt_int, register)


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
    takes_classes = True
    absorbs_relu = True
    folds_bn = True  # inference: a following bn folds into w and b
    is_dense = True
    torch_param_names = MappingProxyType({"weight": "w", "bias": "b"})
    draw_colour = "#f7dccf"

    def draw_label(self, cfg: FcConfig, info: LayerInfo) -> str:
        """``fc 400 -> 120``: the sizes in and out."""
        return f"{self.name} {info.detail}" if info.detail else self.name

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
        params = [ParamSpec("w", (units, fan_in), "fan", fan_in, units)]
        if cfg.bias:
            params.append(ParamSpec("b", (units,), "zeros"))
            formula = f"({in_text}+1)*{units} = {fmt_int((fan_in + 1) * units)}"
        else:
            formula = f"{in_text}*{units} = {fmt_int(fan_in * units)}"
        window = Window(shape[1:], shape[1:], (0,) * (len(shape) - 1)) if len(shape) > 1 else None
        return LayerInfo(out_shape=(units,), params=tuple(params), formula=formula,
                         macs=fan_in * units, window=window,
                         detail=f"{fan_in} -> {units}" + ("" if cfg.bias else ", no bias"))

    def downsamples(self, cfg) -> bool:
        return False

    def make_op(self, cfg, info, in_shapes):
        return FcOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        y = xs[0].reshape(xs[0].shape[0], -1) @ params["w"].T
        return y + params["b"] if "b" in params else y

    def to_torch(self, cfg: FcConfig, info: LayerInfo, in_shapes) -> TorchCode:
        """``nn.Linear`` on the C-order flattening (``torch.flatten``), as cnnc flattens."""
        units, fan_in = info.params[0].shape
        module = f"nn.Linear({fan_in}, {units}" + ("" if cfg.bias else ", bias=False") + ")"
        return TorchCode(module, "{m}({x})" if len(in_shapes[0]) == 1 else "{m}(torch.flatten({x}, 1))")

    def to_onnx(self, cfg: FcConfig, info: LayerInfo, ctx) -> None:
        """Flatten (C-order, as cnnc flattens) then Gemm with transB=1: W is (out, in)."""
        x = ctx.inputs[0]
        if len(ctx.in_shapes[0]) != 1:
            x = ctx.node("Flatten", [x], ctx.tmp("flatten"), axis=1)
        inputs = [x, ctx.param("w")] + ([ctx.param("b")] if cfg.bias else [])
        ctx.node("Gemm", inputs, transB=1)


class FcOp(Op):
    """x: (N, ...) flattened to (N, K) -> y: (N, M) = x w^T + b, ReLU optionally fused."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import dense as k

        self.k = k
        self.units, self.fan_in = info.params[0].shape

    def bind(self, batch, dtype, params, grads, buffers, rng):
        super().bind(batch, dtype, params, grads, buffers, rng)
        self.w, self.b = params["w"], params.get("b")
        self.gw, self.gb = grads["w"], grads.get("b")

    def forward(self, xs, y, training):
        x = xs[0].reshape(xs[0].shape[0], self.fan_in)
        self.k.fc_forward(x, self.w, self.b, y, self.cfg.bias, self.relu)

    def inference_call(self, xs, y):
        return self.k.fc_forward_call(xs[0].reshape(xs[0].shape[0], self.fan_in), self.w, self.b, y,
                                      self.cfg.bias, self.relu)

    def backward(self, xs, y, dy, dxs):
        n = xs[0].shape[0]
        dx = dxs[0].reshape(n, self.fan_in) if dxs[0] is not None else None
        self.k.fc_backward(xs[0].reshape(n, self.fan_in), self.w, y, dy, dx, self.gw, self.gb,
                           self.cfg.bias, self.relu, dx is not None)


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

    def make_op(self, cfg, info, in_shapes):
        return CopyOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        return xs[0].reshape(xs[0].shape[0], -1)

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(None, "torch.flatten({x}, 1)")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        ctx.node("Flatten", [ctx.inputs[0]], axis=1)


class CopyOp(Op):
    """y = x reshaped (flatten)."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.k = k

    def forward(self, xs, y, training):
        self.k.copy(y.reshape(-1), xs[0].reshape(-1))

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is not None:
            self.k.copy(dxs[0].reshape(-1), dy.reshape(-1))


__all__ = ["FullyConnected", "Flatten", "FcConfig", "LayerError"]
