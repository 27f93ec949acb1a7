"""Batch normalization (``bn``), dropout (``dropout(0.5)``) and local response normalization (``lrn``)."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .base import ArgSpec, LayerError, LayerInfo, LayerType, Op, ParamSpec, TorchCode, as4d, fmt_int, register


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
    init_transparent = True  # conv - bn - relu: the activation after the normalization decides
    absorbs_relu = True  # bn - relu: one pass over the tensor, forward and backward
    absorbs_add = True  # ( ... - bn + shortcut ) - relu: the residual sum in the same pass
    folds_into_weights = True  # inference: into the preceding conv's or fc's weights and bias
    torch_param_names = MappingProxyType({"weight": "gamma", "bias": "beta", "running_mean": "running_mean",
                                          "running_var": "running_var"})
    draw_colour = "#e6f2d9"

    def infer(self, cfg: BnConfig, inputs, ctx):
        c = inputs[0][0]
        return LayerInfo(
            out_shape=inputs[0],
            params=(ParamSpec("gamma", (c,), "ones"), ParamSpec("beta", (c,), "zeros")),
            buffers=(ParamSpec("running_mean", (c,), "zeros"), ParamSpec("running_var", (c,), "ones")),
            formula=f"2*{c} = {fmt_int(2 * c)}",
            detail=f"{c} channels, eps {cfg.eps:g}, momentum {cfg.momentum:g}")

    def make_op(self, cfg, info, in_shapes):
        return BatchNormOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        return ref.batchnorm(xs[0], params["gamma"], params["beta"], buffers["running_mean"],
                             buffers["running_var"], cfg.eps, training)

    def to_torch(self, cfg: BnConfig, info: LayerInfo, in_shapes) -> TorchCode:
        """``nn.BatchNorm2d`` on images, ``nn.BatchNorm1d`` on vectors and sequences."""
        dims = 2 if len(in_shapes[0]) == 3 else 1
        return TorchCode(f"nn.BatchNorm{dims}d({in_shapes[0][0]}, eps={cfg.eps:g}, momentum={cfg.momentum:g})",
                         "{m}({x})", extra=(("num_batches_tracked", 0),))

    def to_onnx(self, cfg: BnConfig, info: LayerInfo, ctx) -> None:
        """BatchNormalization in inference mode (running statistics). ONNX's momentum is the
        weight of the *old* running value, cnnc's (and PyTorch's) that of the new batch;
        it does not matter at inference but is written for tools that train."""
        ins = [ctx.inputs[0], ctx.param("gamma"), ctx.param("beta"), ctx.param("running_mean"),
               ctx.param("running_var")]
        ctx.node("BatchNormalization", ins, epsilon=float(cfg.eps), momentum=float(1.0 - cfg.momentum))


class BatchNormOp(Op):
    """Batch norm over (N, H, W) per channel; vectors (N, F) are treated as (N, F, 1, 1).

    With a second input (the lowering fuses ``( ... - bn + shortcut )`` and its ReLU into
    the bn: :func:`cnnc.runtime.lower.lower`), y = bn(x) + shortcut (then ReLU) in one pass, and
    the backward writes (or adds, :meth:`adds_dx`) the shortcut's gradient in the pass
    that sums the statistics."""

    def __init__(self, cfg: BnConfig, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import norm as k

        self.k = k
        self.res = len(in_shapes) > 1
        if len(in_shapes) > 2:
            raise ValueError("a batch norm fuses one residual input at most")

    def adds_dx(self, slot: int) -> bool:
        return slot == 1 and self.res

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        c = self.info.out_shape[0]
        self.mean = np.zeros(c, dtype=dtype)
        self.invstd = np.ones(c, dtype=dtype)
        self.scale = np.ones(c, dtype=dtype)  # gamma * invstd, for the inference backward
        self.trained = True  # the last forward used batch statistics

    world = None  # data-parallel training: statistics over the batches of every rank

    def join(self, world) -> None:
        self.world = world if world.size > 1 else None

    def forward(self, xs, y, training):
        p, b = self.p, self.buf
        if training and self.world is not None:
            from ..kernels.norm_sync import batchnorm_forward_sync

            batchnorm_forward_sync(self.world, as4d(xs[0]), p["gamma"], p["beta"], as4d(y), self.mean,
                            self.invstd, b["running_mean"], b["running_var"], self.cfg.momentum,
                            self.cfg.eps)
            self._shortcut_then_relu(xs, y)
        elif training:
            self.k.batchnorm_forward_train(as4d(xs[0]), p["gamma"], p["beta"], as4d(y), self.mean,
                                           self.invstd, b["running_mean"], b["running_var"],
                                           self.cfg.momentum, self.cfg.eps, self.relu,
                                           as4d(xs[1]) if self.res else None)
        else:
            self.k.batchnorm_forward_infer(as4d(xs[0]), p["gamma"], p["beta"], b["running_mean"],
                                           b["running_var"], self.cfg.eps, as4d(y),
                                           self.relu and not self.res)
            if self.res:
                self._shortcut_then_relu(xs, y)
            # the backward of an inference forward (saliency, eval-mode gradients) is that of
            # the affine map y = gamma*(x - running_mean)*invstd + beta: keep its statistics
            self.mean[...] = b["running_mean"]
            self.invstd[...] = 1.0 / (b["running_var"] + self.cfg.eps) ** 0.5
        self.trained = training

    def _shortcut_then_relu(self, xs, y) -> None:
        """After a bn computed apart from its kernel: add the shortcut, then the ReLU."""
        import numpy as np

        if self.res:
            np.add(y, xs[1], out=y)
        if self.relu:
            np.maximum(y, 0, out=y)

    def assume_trained(self) -> None:
        self.trained = True

    def backward(self, xs, y, dy, dxs, add=(False, False)):
        import numpy as np

        dres = dxs[1] if self.res else None
        if self.trained and self.world is None:
            dx = as4d(dxs[0]) if dxs[0] is not None else as4d(dy)
            self.k.batchnorm_backward(as4d(xs[0]), self.p["gamma"], as4d(dy), self.mean, self.invstd,
                                      dx, self.g["gamma"], self.g["beta"], dxs[0] is not None,
                                      as4d(y), self.relu, None if dres is None else as4d(dres),
                                      bool(add[1]))
            return
        if self.relu:  # the paths below take the gradient before the fused ReLU
            dy = np.where(y > 0, dy, np.zeros((), dy.dtype))
        if dres is not None:  # the shortcut's gradient: dy (after the ReLU's mask)
            if add[1]:
                np.add(dres, dy, out=dres)
            else:
                np.copyto(dres, dy)
        if self.trained:
            from ..kernels.norm_sync import batchnorm_backward_sync

            batchnorm_backward_sync(self.world, as4d(xs[0]), self.p["gamma"], as4d(dy), self.mean, self.invstd,
                             as4d(dxs[0]) if dxs[0] is not None else None, self.g["gamma"],
                             self.g["beta"], dxs[0] is not None)
            return
        # inference statistics are constants: dgamma, dbeta as in training, dx = gamma*invstd*dy
        self.k.batchnorm_backward(as4d(xs[0]), self.p["gamma"], as4d(dy), self.mean, self.invstd,
                                  as4d(dy), self.g["gamma"], self.g["beta"], False)
        if dxs[0] is not None:
            np.multiply(self.p["gamma"], self.invstd, out=self.scale)
            np.multiply(as4d(dy), self.scale.reshape(1, -1, 1, 1), out=as4d(dxs[0]))


@dataclass(frozen=True)
class DropoutConfig:
    p: float = 0.5


@register
class Dropout(LayerType):
    name = "dropout"
    summary = "inverted dropout with drop probability p (off at inference)"
    args = (ArgSpec("p", "float", 0.5, positional=True, minimum=0.0, maximum=0.99),)
    config_class = DropoutConfig
    identity_at_inference = True
    saved_bytes_per_output = 5  # the float32 draw and the uint8 mask

    def infer(self, cfg: DropoutConfig, inputs, ctx):
        return LayerInfo(out_shape=inputs[0], detail=f"p {cfg.p:g}")

    def draw_label(self, cfg: DropoutConfig, info: LayerInfo) -> str:
        """``dropout 0.5``: the name and the drop probability."""
        return f"{self.name} {cfg.p:g}"

    def make_op(self, cfg, info, in_shapes):
        return DropoutOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        # training draws a random mask: the registry test checks that mode statistically
        if training and cfg.p > 0:
            raise NotImplementedError("dropout in training has no deterministic reference")
        return xs[0].copy()

    def to_torch(self, cfg: DropoutConfig, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(f"nn.Dropout({cfg.p:g})", "{m}({x})")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """Off at inference: the identity."""
        ctx.node("Identity", [ctx.inputs[0]])


class DropoutOp(Op):
    """Inverted dropout: y = x * mask / (1 - p) in training, y = x at inference."""

    def __init__(self, cfg: DropoutConfig, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.k = k

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        from ..kernels import memory

        super().bind(batch, dtype, params, grads, buffers, rng)
        n = batch
        for d in self.info.out_shape:
            n *= d
        self.u = memory.empty(n, dtype)
        self.mask = memory.empty(n, np.uint8)
        self.mask.fill(1)
        self.trained = False

    def forward(self, xs, y, training):
        if training and self.cfg.p > 0:
            self.rng.random(out=self.u, dtype=self.u.dtype)
            self.k.dropout_forward(xs[0].reshape(-1), self.u, y.reshape(-1), self.mask, self.cfg.p)
            self.trained = True
        else:
            self.k.copy(y.reshape(-1), xs[0].reshape(-1))
            self.trained = False

    def assume_trained(self) -> None:
        self.trained = self.cfg.p > 0

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        if self.trained:
            self.k.dropout_backward(dy.reshape(-1), self.mask, dxs[0].reshape(-1), self.cfg.p)
        else:
            self.k.copy(dxs[0].reshape(-1), dy.reshape(-1))


@dataclass(frozen=True)
class LrnConfig:
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0


@register
class LocalResponseNorm(LayerType):
    name = "lrn"
    aliases = ("localresponsenorm",)
    summary = ("local response normalization across channels (AlexNet, Caffe): "
               "x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta")
    args = (ArgSpec("size", "int", 5, positional=True, minimum=1,
                    help="channels in the window, odd (centred on the channel)"),
            ArgSpec("alpha", "float", 1e-4, minimum=0.0, help="scale; divided by size (Caffe, PyTorch)"),
            ArgSpec("beta", "float", 0.75, minimum=0.0),
            ArgSpec("k", "float", 2.0, minimum=0.0, help="additive constant (Caffe's default is 1)"))
    config_class = LrnConfig

    def make_config(self, values):
        if values["size"] % 2 == 0:
            raise LayerError(f"lrn needs an odd size (a window centred on each channel), got {values['size']}",
                             "argument", hint=f"use size={values['size'] - 1} or size={values['size'] + 1}",
                             arg="size")
        if values["k"] == 0 and values["beta"] > 0:
            raise LayerError("lrn with k=0 divides by zero on an all-zero window", "argument",
                             hint="use k > 0 (AlexNet: 2, Caffe: 1)", arg="k")
        return LrnConfig(**values)

    def infer(self, cfg: LrnConfig, inputs, ctx):
        return LayerInfo(out_shape=inputs[0],
                         detail=f"size {cfg.size}, alpha {cfg.alpha:g}, beta {cfg.beta:g}, k {cfg.k:g}")

    def make_op(self, cfg, info, in_shapes):
        return LrnOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        return ref.lrn(xs[0], cfg.size, cfg.alpha, cfg.beta, cfg.k)

    def to_torch(self, cfg: LrnConfig, info: LayerInfo, in_shapes) -> TorchCode:
        """``nn.LocalResponseNorm`` (the same formula); a vector is seen as (N, C, 1)."""
        module = f"nn.LocalResponseNorm({cfg.size}, alpha={cfg.alpha:g}, beta={cfg.beta:g}, k={cfg.k:g})"
        return TorchCode(module, "{m}({x}.unsqueeze(-1)).squeeze(-1)" if len(in_shapes[0]) == 1 else "{m}({x})")

    def to_onnx(self, cfg: LrnConfig, info: LayerInfo, ctx) -> None:
        """ONNX LRN is defined as Caffe's and cnnc's (alpha divided by size); runtimes take it
        on (N, C, H, W) only, so sequences and vectors go through a 4-D view."""
        attrs = dict(size=cfg.size, alpha=float(cfg.alpha), beta=float(cfg.beta), bias=float(cfg.k))
        shape = tuple(ctx.in_shapes[0])
        if len(shape) == 3:
            ctx.node("LRN", [ctx.inputs[0]], **attrs)
            return
        as4d = [0, shape[0], 1, shape[1] if len(shape) == 2 else 1]
        x = ctx.node("Reshape", [ctx.inputs[0], ctx.const("shape4", as4d)], ctx.tmp("as4d"))
        y = ctx.node("LRN", [x], ctx.tmp("lrn"), **attrs)
        ctx.node("Reshape", [y, ctx.const("shape", [0, *shape])])


class LrnOp(Op):
    """x: (N, C, ...) -> y of the same shape, normalized across channels."""

    def __init__(self, cfg: LrnConfig, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import lrn as k

        self.k = k

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        self.scale = np.empty((batch, *self.info.out_shape), dtype=dtype).reshape(batch, self.info.out_shape[0], -1)

    @staticmethod
    def _flat(a):
        return a.reshape(a.shape[0], a.shape[1], -1)

    def forward(self, xs, y, training):
        c = self.cfg
        self.k.lrn_forward(self._flat(xs[0]), self._flat(y), self.scale, c.size, c.alpha, c.beta, c.k)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is not None:
            c = self.cfg
            self.k.lrn_backward(self._flat(xs[0]), self._flat(y), self.scale, self._flat(dy),
                                self._flat(dxs[0]), c.size, c.alpha, c.beta)
