"""Pooling: ``pool``/``maxpool3(stride=2)``, ``avgpool2``, ``gap``, ``maxout(2)``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import (ArgSpec, InferContext, LayerError, LayerInfo, LayerType, NoConfig, Op, Shape,
                   TorchCode, Window, as4d, one_d_window_error, register, require_spatial, shape_str, window_size)
from .conv import window_fit_error


@dataclass(frozen=True)
class PoolConfig:
    size: tuple[int, int] = (2, 2)
    stride: int | None = None  # None: the window size
    pad: int = 0
    round: str = "floor"
    edge: str = "check"  # "drop": real input no window covers is dropped silently (as PyTorch)
    size_dims: int = 1  # sizes written: 1 (pool, maxpool3: also on sequences) or 2 (maxpool2x2)

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else max(self.size)


def _rounding(cfg: PoolConfig) -> str:
    return (", ceil" if cfg.round == "ceil" else "") + (", edge drop" if cfg.edge == "drop" else "")


class _Pool(LayerType):
    suffix = "size"
    mode: str
    args = (
        ArgSpec("size", "size", (2,), help="window size (usually a suffix: maxpool3)"),
        ArgSpec("stride", "int", None, minimum=1, help="default: the window size"),
        ArgSpec("pad", "int", 0, minimum=0),
        ArgSpec("round", "choice", "floor", choices=("floor", "ceil"),
                help="how a window that does not fit is rounded"),
        ArgSpec("edge", "choice", "check", choices=("check", "drop"),
                help="drop: real input at the far edge that no window covers is dropped silently "
                     "(PyTorch's floor), instead of the 'does not fit' error"),
    )
    config_class = PoolConfig
    draw_colour = "#f9efc8"

    def make_config(self, values):
        cfg = PoolConfig(**window_size(values, (2,)))
        kh, kw = cfg.size
        if cfg.pad * 2 > min(kh, kw):
            raise LayerError(f"pad={cfg.pad} is more than half the {kh}x{kw} window",
                             "argument", hint="a window could then see only padding", arg="pad")
        return cfg

    def infer(self, cfg: PoolConfig, inputs: list[Shape], ctx: InferContext) -> LayerInfo:
        c, spatial = require_spatial(self.name, inputs[0])
        kh, kw = cfg.size
        s = cfg.step
        if len(spatial) == 1:  # a sequence (C, L): a window of kw positions
            if cfg.size_dims != 1:
                raise one_d_window_error(f"{self.name}{kh}x{kw}", f"{self.name}{kw}", inputs[0])
            label = f"{self.name}{kw}" + (f"(stride={s})" if s != kw else "")
            (out,) = window_fit_error(label, spatial, (kw,), s, (cfg.pad,), 1, is_pool=True,
                                      ceil=cfg.round == "ceil", drop=cfg.edge == "drop")
            detail = f"{kw}, stride {s}, pad {cfg.pad}" + _rounding(cfg)
            return LayerInfo(out_shape=(c, out), window=Window((kw,), (s,), (cfg.pad,)), detail=detail)
        h, w = spatial
        label = f"{self.name}{kh}" if kh == kw else f"{self.name}{kh}x{kw}"
        label += f"(stride={s})" if s != max(kh, kw) else ""
        oh, ow = window_fit_error(label, (h, w), (kh, kw), s, (cfg.pad, cfg.pad), 1,
                                  is_pool=True, ceil=cfg.round == "ceil", drop=cfg.edge == "drop")
        detail = f"{kh}x{kw}, stride {s}, pad {cfg.pad}" + _rounding(cfg)
        return LayerInfo(out_shape=(c, oh, ow), window=Window((kh, kw), (s, s), (cfg.pad, cfg.pad)),
                         detail=detail)

    def downsamples(self, cfg: PoolConfig) -> bool:
        return cfg.step > 1

    def draw_label(self, cfg: PoolConfig, info: LayerInfo) -> str:
        """``maxpool 2x2/2``: the window and the stride."""
        kh, kw = cfg.size
        return f"{self.name} {kh}x{kw}/{cfg.step}"

    def make_op(self, cfg, info, in_shapes):
        return PoolOp(cfg, info, in_shapes, self.mode)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        if xs[0].ndim == 3:
            return ref.pool1d(xs[0], cfg.size[1], cfg.step, cfg.pad, cfg.round == "ceil", self.mode)
        return ref.pool(xs[0], cfg.size, cfg.step, cfg.pad, cfg.round == "ceil", self.mode)

    def to_torch(self, cfg: PoolConfig, info: LayerInfo, in_shapes) -> TorchCode:
        """``nn.MaxPool2d``/``nn.AvgPool2d`` (1d on sequences); average pooling without the
        padding in the divisor (count_include_pad=False), ceil rounding as PyTorch's."""
        kh, kw = cfg.size
        seq = len(in_shapes[0]) == 2
        k = kw if seq or kh == kw else (kh, kw)
        args = f"{k}, stride={cfg.step}" + (f", padding={cfg.pad}" if cfg.pad else "")
        args += ", ceil_mode=True" if cfg.round == "ceil" else ""
        cls = "MaxPool" if self.mode == "max" else "AvgPool"
        if self.mode != "max":
            args += ", count_include_pad=False"
        return TorchCode(f"nn.{cls}{1 if seq else 2}d({args})", "{m}({x})")

    def to_onnx(self, cfg: PoolConfig, info: LayerInfo, ctx) -> None:
        """MaxPool/AveragePool in floor mode. Ceil rounding becomes extra padding at the
        bottom/right (runtimes disagree on ceil_mode with padding); AveragePool divides by
        the real inputs only (count_include_pad=0), as cnnc does, so the extra padding
        changes no value."""
        s, p = cfg.step, cfg.pad
        if len(ctx.in_shapes[0]) == 2:  # a sequence: one axis
            (_, w), (_, ow), kw = ctx.in_shapes[0], info.out_shape, cfg.size[-1]
            extra_w = max((ow - 1) * s + kw - (w + 2 * p), 0)
            attrs = dict(kernel_shape=[kw], strides=[s], pads=[p, p + extra_w])
        else:
            _, h, w = ctx.in_shapes[0]
            _, oh, ow = info.out_shape
            kh, kw = cfg.size
            extra_h = max((oh - 1) * s + kh - (h + 2 * p), 0)
            extra_w = max((ow - 1) * s + kw - (w + 2 * p), 0)
            attrs = dict(kernel_shape=[kh, kw], strides=[s, s], pads=[p, p, p + extra_h, p + extra_w])
        if self.mode == "max":
            ctx.node("MaxPool", [ctx.inputs[0]], **attrs)
        else:
            ctx.node("AveragePool", [ctx.inputs[0]], count_include_pad=0, **attrs)


class PoolOp(Op):
    """Max or average pooling, x: (N, C, H, W) -> y: (N, C, H', W')."""

    def __init__(self, cfg: PoolConfig, info, in_shapes, mode: str):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import pool as k

        self.k, self.mode = k, mode
        kh, kw = cfg.size
        if len(in_shapes[0]) == 2:  # sequences run as (N, C, 1, L) with a 1 x k window
            self.window = (1, kw, 1, cfg.step, 0, cfg.pad)
        else:
            self.window = (kh, kw, cfg.step, cfg.step, cfg.pad, cfg.pad)

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        from ..kernels import memory

        super().bind(batch, dtype, params, grads, buffers, rng)
        if self.mode == "max":
            self.argmax = as4d(memory.empty((batch, *self.info.out_shape), np.int32))

    def forward(self, xs, y, training):
        if self.mode == "max":
            self.k.maxpool2d_forward(as4d(xs[0]), as4d(y), self.argmax, *self.window)
        else:
            self.k.avgpool2d_forward(as4d(xs[0]), as4d(y), *self.window)

    def inference_call(self, xs, y):
        if self.mode == "max":
            return self.k.maxpool2d_forward_call(as4d(xs[0]), as4d(y), self.argmax, *self.window)
        return self.k.avgpool2d_forward, (as4d(xs[0]), as4d(y), *self.window)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        if self.mode == "max":
            self.k.maxpool2d_backward(as4d(dy), self.argmax, as4d(dxs[0]), self.window)
        else:
            self.k.avgpool2d_backward(as4d(dy), as4d(dxs[0]), *self.window)


@register
class MaxPool(_Pool):
    name = "maxpool"
    aliases = ("pool",)
    summary = "max pooling (window 2, stride = window unless given)"
    mode = "max"
    saved_bytes_per_output = 4  # int32 argmax
    piecewise_linear = True


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
    draw_colour = "#f9efc8"

    def infer(self, cfg, inputs, ctx):
        c, spatial = require_spatial("gap", inputs[0])
        return LayerInfo(out_shape=(c,), window=Window(spatial, spatial, (0,) * len(spatial)),
                         detail=f"mean over {shape_str(spatial)}")

    def downsamples(self, cfg) -> bool:
        return True

    def make_op(self, cfg, info, in_shapes):
        return GapOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        return xs[0].mean(axis=tuple(range(2, xs[0].ndim)))

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(None, "{x}.mean(2)" if len(in_shapes[0]) == 2 else "{x}.mean((2, 3))")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """GlobalAveragePool gives (N, C, 1, 1) (or (N, C, 1)); cnnc's gap gives (N, C)."""
        pooled = ctx.node("GlobalAveragePool", [ctx.inputs[0]], ctx.tmp("pool"))
        ctx.node("Flatten", [pooled], axis=1)


class GapOp(Op):
    """x: (N, C, H, W) -> y: (N, C), the mean of each plane."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import pool as k

        self.k = k

    def forward(self, xs, y, training):
        self.k.global_avgpool_forward(as4d(xs[0]), y)

    def inference_call(self, xs, y):
        from ..kernels.serial import pick

        x = as4d(xs[0])
        return pick(self.k.global_avgpool_forward, x.shape[0], x.size), (x, y)

    def backward(self, xs, y, dy, dxs):
        if dxs[0] is not None:
            self.k.global_avgpool_backward(dy, as4d(dxs[0]))


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
    piecewise_linear = True

    def draw_label(self, cfg: MaxoutConfig, info: LayerInfo) -> str:
        """``maxout 2``: the name and how many channels each output takes the max of."""
        return f"{self.name} {cfg.k}"

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

    def to_torch(self, cfg: MaxoutConfig, info: LayerInfo, in_shapes) -> TorchCode:
        c = in_shapes[0][0]
        return TorchCode(None, f"{{x}}.unflatten(1, ({c // cfg.k}, {cfg.k})).amax(2)")

    def to_onnx(self, cfg: MaxoutConfig, info: LayerInfo, ctx) -> None:
        """No native op: reshape (N, C, ...) to (N, C/k, k, ...), the k *consecutive* channels
        of a group on axis 2, then ReduceMax over it (axes an input from opset 18)."""
        c, *rest = ctx.in_shapes[0]
        grouped = ctx.node("Reshape", [ctx.inputs[0], ctx.const("shape", [0, c // cfg.k, cfg.k, *rest])],
                           ctx.tmp("groups"))
        if ctx.opset >= 18:
            ctx.node("ReduceMax", [grouped, ctx.const("axes", [2])], keepdims=0)
        else:
            ctx.node("ReduceMax", [grouped], axes=[2], keepdims=0)


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
