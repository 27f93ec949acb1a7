"""Pooling: ``pool``/``maxpool3(stride=2)``, ``avgpool2``, ``gap``, ``maxout(2)``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import (ArgSpec, InferContext, LayerError, LayerInfo, LayerType, NoConfig, Op, Shape,
                   Window, as4d, register, require_image, shape_str)
from .conv import window_fit_error


@dataclass(frozen=True)
class PoolConfig:
    size: tuple[int, int] = (2, 2)
    stride: int | None = None  # None: the window size
    pad: int = 0
    round: str = "floor"

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else max(self.size)


class _Pool(LayerType):
    suffix = "size"
    mode: str
    args = (
        ArgSpec("size", "size", (2, 2), help="window size (usually a suffix: maxpool3)"),
        ArgSpec("stride", "int", None, minimum=1, help="default: the window size"),
        ArgSpec("pad", "int", 0, minimum=0),
        ArgSpec("round", "choice", "floor", choices=("floor", "ceil"),
                help="how a window that does not fit is rounded"),
    )
    config_class = PoolConfig

    def make_config(self, values):
        values = {k: v for k, v in values.items() if v is not None or k != "size"}
        cfg = PoolConfig(**values)
        kh, kw = cfg.size
        if cfg.pad * 2 > min(kh, kw):
            raise LayerError(f"pad={cfg.pad} is more than half the {kh}x{kw} window",
                             "argument", hint="a window could then see only padding", arg="pad")
        return cfg

    def infer(self, cfg: PoolConfig, inputs: list[Shape], ctx: InferContext) -> LayerInfo:
        c, h, w = require_image(self.name, inputs[0])
        kh, kw = cfg.size
        s = cfg.step
        label = f"{self.name}{kh}" if kh == kw else f"{self.name}{kh}x{kw}"
        label += f"(stride={s})" if s != max(kh, kw) else ""
        oh, ow = window_fit_error(label, (h, w), (kh, kw), s, (cfg.pad, cfg.pad), 1,
                                  is_pool=True, ceil=cfg.round == "ceil")
        detail = f"{kh}x{kw}, stride {s}, pad {cfg.pad}" + (", ceil" if cfg.round == "ceil" else "")
        return LayerInfo(out_shape=(c, oh, ow), window=Window((kh, kw), (s, s), (cfg.pad, cfg.pad)),
                         detail=detail)

    def downsamples(self, cfg: PoolConfig) -> bool:
        return cfg.step > 1

    def make_op(self, cfg, info, in_shapes):
        return PoolOp(cfg, info, in_shapes, self.mode)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        return ref.pool(xs[0], cfg.size, cfg.step, cfg.pad, cfg.round == "ceil", self.mode)


class PoolOp(Op):
    """Max or average pooling, x: (N, C, H, W) -> y: (N, C, H', W')."""

    def __init__(self, cfg: PoolConfig, info, in_shapes, mode: str):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import pool as k

        self.k, self.mode = k, mode
        kh, kw = cfg.size
        self.window = (kh, kw, cfg.step, cfg.step, cfg.pad, cfg.pad)

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        if self.mode == "max":
            self.argmax = np.empty((batch, *self.info.out_shape), dtype=np.int32)

    def forward(self, xs, y, training):
        if self.mode == "max":
            self.k.maxpool2d_forward(xs[0], y, self.argmax, *self.window)
        else:
            self.k.avgpool2d_forward(xs[0], y, *self.window)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        if self.mode == "max":
            self.k.maxpool2d_backward(dy, self.argmax, dxs[0])
        else:
            self.k.avgpool2d_backward(dy, dxs[0], *self.window)


@register
class MaxPool(_Pool):
    name = "maxpool"
    aliases = ("pool",)
    summary = "max pooling (window 2, stride = window unless given)"
    mode = "max"
    saved_bytes_per_output = 4  # int32 argmax


@register
class AvgPool(_Pool):
    name = "avgpool"
    summary = "average pooling; the divisor counts real inputs only, not padding"
    mode = "avg"


@register
class GlobalAvgPool(LayerType):
    name = "gap"
    aliases = ("globalavgpool",)
    summary = "global average pooling: CxHxW -> C"
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        c, h, w = require_image("gap", inputs[0])
        return LayerInfo(out_shape=(c,), window=Window((h, w), (h, w), (0, 0)),
                         detail=f"mean over {h}x{w}")

    def downsamples(self, cfg) -> bool:
        return True

    def make_op(self, cfg, info, in_shapes):
        return GapOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        return xs[0].mean(axis=(2, 3))


class GapOp(Op):
    """x: (N, C, H, W) -> y: (N, C), the mean of each plane."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import pool as k

        self.k = k

    def forward(self, xs, y, training):
        self.k.global_avgpool_forward(xs[0], y)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is not None:
            self.k.global_avgpool_backward(dy, dxs[0])


@dataclass(frozen=True)
class MaxoutConfig:
    k: int = 2


@register
class Maxout(LayerType):
    name = "maxout"
    aliases = ("channelpool",)
    summary = "cross-channel max pooling: the max of each k consecutive channels"
    args = (ArgSpec("k", "int", 2, positional=True, minimum=2),)
    config_class = MaxoutConfig
    saved_bytes_per_output = 4  # int32 argmax

    def infer(self, cfg: MaxoutConfig, inputs, ctx):
        shape = inputs[0]
        if shape[0] % cfg.k:
            raise LayerError(
                f"maxout({cfg.k}) needs a channel count divisible by {cfg.k}, "
                f"but its input is {shape_str(shape)}", "shape", arg="k")
        return LayerInfo(out_shape=(shape[0] // cfg.k, *shape[1:]), detail=f"max over {cfg.k} channels")

    def make_op(self, cfg, info, in_shapes):
        return MaxoutOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        x = xs[0]
        return x.reshape(x.shape[0], x.shape[1] // cfg.k, cfg.k, *x.shape[2:]).max(axis=2)


class MaxoutOp(Op):
    """x: (N, C, ...) -> y: (N, C/k, ...), the max over each k consecutive channels."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import pool as k

        self.k = k

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        self.argmax = as4d(np.empty((batch, *self.info.out_shape), dtype=np.int32))

    def forward(self, xs, y, training):
        self.k.channel_maxpool_forward(as4d(xs[0]), as4d(y), self.argmax, self.cfg.k)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is not None:
            self.k.channel_maxpool_backward(as4d(dy), self.argmax, as4d(dxs[0]), self.cfg.k)
