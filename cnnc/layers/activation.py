"""Elementwise nonlinearities: ``relu``, ``relu6``, ``leaky(0.1)``, ``elu(1.0)``, ``tanh``, ``sigmoid``,
and ``softmax`` (fused into the loss).

An activation is one :class:`Activation` subclass: its name, its ONNX operator, its kernel pair in
:mod:`cnnc.kernels.elementwise` (``<kernel>_forward(x, y[, alpha])`` and
``<kernel>_backward(dy, ref, dx[, alpha])``, ``ref`` being the forward output ``y``, or
the input ``x`` when ``backward_reads_input``), and its NumPy formula. Adding one is
that class, its two kernels and a case row in the registry test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import ArgSpec, LayerInfo, LayerType, NoConfig, Op, TorchCode, register


@dataclass(frozen=True)
class AlphaConfig:
    """The one argument of a parametrized activation (leaky's slope, ELU's saturation)."""

    alpha: float


class ActivationOp(Op):
    """y = f(x) elementwise, on flat views of the arrays."""

    def __init__(self, cfg, info, in_shapes, layer: "Activation"):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.fwd = getattr(k, f"{layer.kernel}_forward")
        self.bwd = getattr(k, f"{layer.kernel}_backward")
        self.reads_input = layer.backward_reads_input
        self.extra = (cfg.alpha,) if isinstance(cfg, AlphaConfig) else ()

    def forward(self, xs, y, training):
        self.fwd(xs[0].reshape(-1), y.reshape(-1), *self.extra)

    def inference_call(self, xs, y):
        from ..kernels.serial import pick

        return pick(self.fwd, y.shape[0], y.size), (xs[0].reshape(-1), y.reshape(-1), *self.extra)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        ref = (xs[0] if self.reads_input else y).reshape(-1)
        self.bwd(dy.reshape(-1), ref, dxs[0].reshape(-1), *self.extra)


class ReluOp(ActivationOp):
    """ReLU; with ``guided`` set (cnnc.viz) the backward is guided backpropagation's
    dx = dy * (y > 0) * (dy > 0): only positive gradients through positive units."""

    guided = False

    def backward(self, xs, y, dy, dxs):
        if not self.guided or dxs[0] is None:
            return super().backward(xs, y, dy, dxs)
        import numpy as np

        np.multiply(dy, (y > 0) & (dy > 0), out=dxs[0])


class Activation(LayerType):
    """Base of the elementwise activations: shape unchanged, no parameters."""

    config_class = NoConfig
    is_activation = True
    kernel: ClassVar[str] = ""
    onnx_op: ClassVar[str] = ""  # the ONNX operator that computes it
    torch_function: ClassVar[str] = ""  # the PyTorch function that computes it (alpha as 2nd argument)
    backward_reads_input: ClassVar[bool] = False

    def infer(self, cfg, inputs, ctx):
        detail = f"alpha {cfg.alpha:g}" if isinstance(cfg, AlphaConfig) else ""
        return LayerInfo(out_shape=inputs[0], detail=detail)

    def draw_label(self, cfg, info: LayerInfo) -> str:
        """``leaky 0.01``, ``elu 0.7``: the name and the alpha, when the activation has one."""
        return f"{self.name} {cfg.alpha:g}" if isinstance(cfg, AlphaConfig) else self.name

    def make_op(self, cfg, info, in_shapes):
        return ActivationOp(cfg, info, in_shapes, self)

    def formula(self, x, cfg):
        """f(x) with NumPy, float64."""
        raise NotImplementedError

    def reference(self, cfg, xs, params, buffers, training):
        return self.formula(xs[0], cfg)

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        """``torch_function(x)``, with the config's alpha as its second argument."""
        alpha = f", {cfg.alpha!r}" if isinstance(cfg, AlphaConfig) else ""
        return TorchCode(None, f"{self.torch_function}({{x}}{alpha})")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """The ONNX operator ``onnx_op``, with the config's alpha as its attribute."""
        attrs = {"alpha": float(cfg.alpha)} if isinstance(cfg, AlphaConfig) else {}
        ctx.node(self.onnx_op, [ctx.inputs[0]], **attrs)


@register
class Relu(Activation):
    name = "relu"
    summary = "max(x, 0)"
    kernel = "relu"
    onnx_op = "Relu"
    torch_function = "F.relu"
    fuses_into_producer = True
    init_gain = "he"
    piecewise_linear = True
    rectifier = True

    def make_op(self, cfg, info, in_shapes):
        return ReluOp(cfg, info, in_shapes, self)

    def formula(self, x, cfg):
        import numpy as np

        return np.maximum(x, 0)


@register
class Relu6(Activation):
    name = "relu6"
    summary = "min(max(x, 0), 6) (MobileNet)"
    kernel = "relu6"
    onnx_op = "Clip"
    torch_function = "F.relu6"
    init_gain = "he"
    piecewise_linear = True

    def formula(self, x, cfg):
        import numpy as np

        return np.clip(x, 0, 6)

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """Clip with min 0 and max 6 (inputs, not attributes, from opset 11)."""
        ctx.node("Clip", [ctx.inputs[0], ctx.const("min", 0.0, "float32"), ctx.const("max", 6.0, "float32")])


@register
class LeakyRelu(Activation):
    name = "leaky"
    aliases = ("lrelu", "leakyrelu")
    summary = "x if x > 0 else alpha*x (alpha default 0.01)"
    args = (ArgSpec("alpha", "float", 0.01, positional=True, minimum=0.0, maximum=1.0),)
    config_class = AlphaConfig
    kernel = "leaky_relu"
    onnx_op = "LeakyRelu"
    torch_function = "F.leaky_relu"
    backward_reads_input = True
    init_gain = "he"
    piecewise_linear = True

    def formula(self, x, cfg):
        import numpy as np

        return np.where(x > 0, x, cfg.alpha * x)


@register
class Elu(Activation):
    name = "elu"
    summary = "x if x > 0 else alpha*(exp(x) - 1) (alpha default 1)"
    args = (ArgSpec("alpha", "float", 1.0, positional=True, minimum=0.0),)
    config_class = AlphaConfig
    kernel = "elu"
    onnx_op = "Elu"
    torch_function = "F.elu"

    def formula(self, x, cfg):
        import numpy as np

        return np.where(x > 0, x, cfg.alpha * np.expm1(np.minimum(x, 0)))


@register
class Tanh(Activation):
    name = "tanh"
    summary = "hyperbolic tangent"
    kernel = "tanh"
    onnx_op = "Tanh"
    torch_function = "torch.tanh"

    def formula(self, x, cfg):
        import numpy as np

        return np.tanh(x)


@register
class Sigmoid(Activation):
    name = "sigmoid"
    summary = "1/(1+exp(-x))"
    kernel = "sigmoid"
    onnx_op = "Sigmoid"
    torch_function = "torch.sigmoid"

    def formula(self, x, cfg):
        import numpy as np

        return 1 / (1 + np.exp(-x))


@register
class Softmax(Activation):
    name = "softmax"
    summary = "class probabilities; only as the last layer (fused with the cross-entropy loss)"
    only_last = "the loss applies softmax itself; remove it or move it to the end"
    fused_into_loss = True

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        """Written as a layer, as the ONNX export writes it: the output is probabilities."""
        return TorchCode(None, "F.softmax({x}, 1)")

    def make_op(self, cfg, info, in_shapes):
        raise AssertionError("the lowering fuses softmax into the loss")

    def formula(self, x, cfg):
        import numpy as np

        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """Exported as a layer: the model's output is then probabilities, not logits."""
        ctx.node("Softmax", [ctx.inputs[0]], axis=1)
