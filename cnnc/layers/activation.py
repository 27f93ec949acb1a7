"""Pointwise nonlinearities: ``relu``, ``leaky(0.1)``, ``tanh``, ``sigmoid``, ``softmax``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ArgSpec, LayerInfo, LayerType, NoConfig, Op, register


class PointwiseOp(Op):
    """y = f(x) elementwise, on flat views; the backward reads y (or x for leaky)."""

    def __init__(self, cfg, info, in_shapes, fwd: str, bwd: str, use_x: bool = False, alpha=None):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.fwd, self.bwd = getattr(k, fwd), getattr(k, bwd)
        self.use_x, self.alpha = use_x, alpha

    def forward(self, xs, y, training):
        if self.alpha is None:
            self.fwd(xs[0].reshape(-1), y.reshape(-1))
        else:
            self.fwd(xs[0].reshape(-1), y.reshape(-1), self.alpha)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        ref = (xs[0] if self.use_x else y).reshape(-1)
        if self.alpha is None:
            self.bwd(dy.reshape(-1), ref, dxs[0].reshape(-1))
        else:
            self.bwd(dy.reshape(-1), ref, dxs[0].reshape(-1), self.alpha)


class _Pointwise(LayerType):
    config_class = NoConfig
    kernel = ""

    def infer(self, cfg, inputs, ctx):
        return LayerInfo(out_shape=inputs[0])

    def make_op(self, cfg, info, in_shapes):
        return PointwiseOp(cfg, info, in_shapes, f"{self.kernel}_forward", f"{self.kernel}_backward")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """The ONNX op of the same name: Relu, Tanh, Sigmoid."""
        ctx.node(self.kernel.capitalize(), [ctx.inputs[0]])


@register
class Relu(_Pointwise):
    name = "relu"
    summary = "max(x, 0)"
    kernel = "relu"


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

    def make_op(self, cfg, info, in_shapes):
        return PointwiseOp(cfg, info, in_shapes, "leaky_relu_forward", "leaky_relu_backward",
                           use_x=True, alpha=cfg.alpha)

    def to_onnx(self, cfg: LeakyConfig, info: LayerInfo, ctx) -> None:
        ctx.node("LeakyRelu", [ctx.inputs[0]], alpha=float(cfg.alpha))


@register
class Tanh(_Pointwise):
    name = "tanh"
    summary = "hyperbolic tangent"
    kernel = "tanh"


@register
class Sigmoid(_Pointwise):
    name = "sigmoid"
    summary = "1/(1+exp(-x))"
    kernel = "sigmoid"


@register
class Softmax(_Pointwise):
    name = "softmax"
    summary = "class probabilities; only as the last layer (fused with the cross-entropy loss)"

    def make_op(self, cfg, info, in_shapes):
        raise AssertionError("the lowering fuses softmax into the loss")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """Exported as a layer: the model's output is then probabilities, not logits."""
        ctx.node("Softmax", [ctx.inputs[0]], axis=1)
