"""Batch normalization (``bn``) and dropout (``dropout(0.5)``)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import ArgSpec, LayerInfo, LayerType, Op, ParamSpec, as4d, fmt_int, register


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
    folds_into_weights = True  # inference: into the preceding conv's or fc's weights and bias

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


class BatchNormOp(Op):
    """Batch norm over (N, H, W) per channel; vectors (N, F) are treated as (N, F, 1, 1)."""

    def __init__(self, cfg: BnConfig, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import norm as k

        self.k = k

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
            from ..distributed import bn_forward_sync

            bn_forward_sync(self.world, as4d(xs[0]), p["gamma"], p["beta"], as4d(y), self.mean,
                            self.invstd, b["running_mean"], b["running_var"], self.cfg.momentum,
                            self.cfg.eps)
        elif training:
            self.k.batchnorm_forward_train(as4d(xs[0]), p["gamma"], p["beta"], as4d(y), self.mean,
                                           self.invstd, b["running_mean"], b["running_var"],
                                           self.cfg.momentum, self.cfg.eps)
        else:
            self.k.batchnorm_forward_infer(as4d(xs[0]), p["gamma"], p["beta"], b["running_mean"],
                                           b["running_var"], self.cfg.eps, as4d(y))
            # the backward of an inference forward (saliency, eval-mode gradients) is that of
            # the affine map y = gamma*(x - running_mean)*invstd + beta: keep its statistics
            self.mean[...] = b["running_mean"]
            self.invstd[...] = 1.0 / (b["running_var"] + self.cfg.eps) ** 0.5
        self.trained = training

    def backward(self, xs, y, dy, dxs):
        import numpy as np

        if self.trained and self.world is not None:
            from ..distributed import bn_backward_sync

            bn_backward_sync(self.world, as4d(xs[0]), self.p["gamma"], as4d(dy), self.mean, self.invstd,
                             as4d(dxs[0]) if dxs[0] is not None else None, self.g["gamma"],
                             self.g["beta"], dxs[0] is not None)
            return
        if self.trained:
            dx = as4d(dxs[0]) if dxs[0] is not None else as4d(dy)
            self.k.batchnorm_backward(as4d(xs[0]), self.p["gamma"], as4d(dy), self.mean, self.invstd,
                                      dx, self.g["gamma"], self.g["beta"], dxs[0] is not None)
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

    def make_op(self, cfg, info, in_shapes):
        return DropoutOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        # training draws a random mask: the registry test checks that mode statistically
        if training and cfg.p > 0:
            raise NotImplementedError("dropout in training has no deterministic reference")
        return xs[0].copy()


class DropoutOp(Op):
    """Inverted dropout: y = x * mask / (1 - p) in training, y = x at inference."""

    def __init__(self, cfg: DropoutConfig, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.k = k

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        n = batch
        for d in self.info.out_shape:
            n *= d
        self.u = np.empty(n, dtype=dtype)
        self.mask = np.ones(n, dtype=np.uint8)
        self.trained = False

    def forward(self, xs, y, training):
        if training and self.cfg.p > 0:
            self.rng.random(out=self.u, dtype=self.u.dtype)
            self.k.dropout_forward(xs[0].reshape(-1), self.u, y.reshape(-1), self.mask, self.cfg.p)
            self.trained = True
        else:
            self.k.copy(y.reshape(-1), xs[0].reshape(-1))
            self.trained = False

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        if self.trained:
            self.k.dropout_backward(dy.reshape(-1), self.mask, dxs[0].reshape(-1), self.cfg.p)
        else:
            self.k.copy(dxs[0].reshape(-1), dy.reshape(-1))
