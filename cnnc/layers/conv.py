"""Convolution: ``conv3``, ``conv5(16, pad=valid)``, ``conv3(64, stride=2, groups=4)``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import (ArgSpec, InferContext, LayerError, LayerInfo, LayerType, ParamSpec, Shape,
                   Op, Window, axis_name, fit_suggestions, fmt_int, register, require_image,
                   shape_str, window_output)


@dataclass(frozen=True)
class ConvConfig:
    size: tuple[int, int]
    filters: int | None = None  # None: the current width (DESIGN.md defaults)
    stride: int = 1
    pad: int | str = "default"  # int, "same", "valid" or "default"
    dilation: int = 1
    groups: int = 1
    bias: bool = True

    def padding(self) -> tuple[int, int]:
        if self.pad == "valid":
            return (0, 0)
        if isinstance(self.pad, int):
            return (self.pad, self.pad)
        if self.pad == "default" and self.stride != 1:
            return (0, 0)
        kh, kw = self.size
        return (self.dilation * (kh - 1) // 2, self.dilation * (kw - 1) // 2)


def window_fit_error(layer: str, in_hw: tuple[int, int], window: tuple[int, int],
                     stride: int, pad: tuple[int, int], dilation: int, is_pool: bool,
                     ceil: bool = False) -> tuple[int, int]:
    """Output (H', W') of a sliding window; raise LayerError when it leaves nothing or
    does not fit (real input rows/columns never covered)."""
    outs, lost = [], []
    for axis in (0, 1):
        size, win, p = in_hw[axis], window[axis], pad[axis]
        fit = window_output(size, win, stride, p, ceil)
        exact = (size + 2 * p - win) / stride + 1
        formula = f"({size} + {2 * p} - {win})/{stride} + 1 = {exact:.3g}"
        if fit.out <= 0 or size + 2 * p < win:
            raise LayerError(
                f"{layer} leaves nothing: its {window[0]}x{window[1]} window is larger than "
                f"its padded {in_hw[0]}x{in_hw[1]} input ({formula})",
                "empty", hint="use a smaller window, more padding, or fewer down-samplings before it")
        if fit.lost_first:
            n = fit.lost_last - fit.lost_first + 1
            where = str(fit.lost_first) if n == 1 else f"{fit.lost_first}-{fit.lost_last}"
            tip = fit_suggestions(size, win, stride, p, dilation, is_pool)
            lost.append((axis_name(axis, n), where, n, formula, tip))
        outs.append(fit.out)
    if lost:
        words = " and ".join(f"{name} {where}" for name, where, _, _, _ in lost)
        plural = len(lost) > 1 or lost[0][2] > 1
        tip = lost[0][4]
        raise LayerError(
            f"{layer} does not fit its {in_hw[0]}x{in_hw[1]} input: {lost[-1][3]}", "fit",
            hint=f"{words} of the input {'are' if plural else 'is'} never covered"
                 + (f"; {tip}" if tip else ""))
    return outs[0], outs[1]


@register
class Conv(LayerType):
    name = "conv"
    suffix = "size"
    summary = "2-D convolution (size suffix: conv3, conv5, conv1x7)"
    args = (
        ArgSpec("filters", "int", None, positional=True, minimum=1,
                help="number of filters (default: the current width)"),
        ArgSpec("size", "size", None, help="window size (usually given as a suffix: conv3)"),
        ArgSpec("stride", "int", 1, minimum=1),
        ArgSpec("pad", "pad", "default",
                help="zero padding: an integer, same, or valid (default: same at stride 1, else 0)"),
        ArgSpec("dilation", "int", 1, minimum=1),
        ArgSpec("groups", "int", 1, minimum=1),
        ArgSpec("bias", "bool", True),
    )
    config_class = ConvConfig
    absorbs_relu = True
    folds_bn = True  # inference: a following bn folds into w and b

    def make_config(self, values):
        if values.get("size") is None:
            raise LayerError("conv needs a window size", "argument",
                             hint="write it as a suffix, conv3, or as size=3", arg="size")
        kh, kw = values["size"]
        if values.get("pad") == "same" and (kh % 2 == 0 or kw % 2 == 0):
            raise LayerError(f"pad=same needs an odd window, but the window is {kh}x{kw}",
                             "argument", hint=f"give the padding as a number, e.g. pad={(kh - 1) // 2}",
                             arg="pad")
        return ConvConfig(**values)

    def describe(self, cfg: ConvConfig, filters: int) -> str:
        kh, kw = cfg.size
        ph, pw = cfg.padding()
        pad = f"{ph}" if ph == pw else f"{ph}x{pw}"
        mode = {"default": (" (same)" if cfg.stride == 1 and 2 * ph == cfg.dilation * (kh - 1)
                            else " (valid)" if cfg.stride != 1 else ""),
                "same": " (same)", "valid": " (valid)"}.get(cfg.pad, "") if not isinstance(cfg.pad, int) else ""
        parts = [f"{kh}x{kw}", f"{filters} filters", f"stride {cfg.stride}", f"pad {pad}{mode}"]
        if cfg.dilation != 1:
            parts.append(f"dilation {cfg.dilation}")
        if cfg.groups != 1:
            parts.append(f"groups {cfg.groups}")
        if not cfg.bias:
            parts.append("no bias")
        return ", ".join(parts)

    def infer(self, cfg: ConvConfig, inputs: list[Shape], ctx: InferContext) -> LayerInfo:
        c, h, w = require_image("conv", inputs[0])
        f = cfg.filters if cfg.filters is not None else ctx.width
        g = cfg.groups
        if c % g or f % g:
            raise LayerError(
                f"groups={g} must divide both the input channels ({c}) and the filters ({f})",
                "argument", arg="groups")
        kh, kw = cfg.size
        d = cfg.dilation
        eff = (d * (kh - 1) + 1, d * (kw - 1) + 1)
        pad = cfg.padding()
        label = f"conv{kh}" if kh == kw else f"conv{kh}x{kw}"
        label += f"(stride={cfg.stride})" if cfg.stride != 1 else ""
        oh, ow = window_fit_error(label, (h, w), eff, cfg.stride, pad, d, is_pool=False)
        cin = c // g
        fan_in = cin * kh * kw
        params = [ParamSpec("w", (f, cin, kh, kw), "fan", fan_in, (f // g) * kh * kw)]
        cin_text = f"{c}/{g}" if g != 1 else f"{c}"
        if cfg.bias:
            params.append(ParamSpec("b", (f,), "zeros"))
            formula = f"({kh}*{kw}*{cin_text}+1)*{f} = {fmt_int((fan_in + 1) * f)}"
        else:
            formula = f"{kh}*{kw}*{cin_text}*{f} = {fmt_int(fan_in * f)}"
        return LayerInfo(
            out_shape=(f, oh, ow), params=tuple(params), formula=formula,
            macs=f * oh * ow * fan_in, window=Window(eff, (cfg.stride, cfg.stride), pad),
            detail=self.describe(cfg, f))

    def downsamples(self, cfg: ConvConfig) -> bool:
        return cfg.stride > 1

    def make_op(self, cfg, info, in_shapes):
        return ConvOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        return ref.conv(xs[0], params["w"], params.get("b"), cfg.stride, cfg.padding(), cfg.dilation,
                        cfg.groups)


class ConvOp(Op):
    """x: (N, C, H, W) -> y: (N, F, H', W'), bias and ReLU optionally fused."""

    def __init__(self, cfg: ConvConfig, info: LayerInfo, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import conv as k

        self.k = k
        self.ph, self.pw = cfg.padding()
        self.s, self.d, self.groups = cfg.stride, cfg.dilation, cfg.groups

    def bind(self, batch, dtype, params, grads, buffers, rng):
        import numpy as np

        super().bind(batch, dtype, params, grads, buffers, rng)
        c, h, w = self.in_shapes[0]
        f, oh, ow = self.info.out_shape
        kh, kw = self.cfg.size
        size = self.k.conv2d_workspace_size(batch, c, h, w, f, kh, kw, oh, ow, self.groups)
        self.ws = np.empty(max(size, 1), dtype=dtype)
        self.w, self.b = params["w"], params.get("b")
        self.gw, self.gb = grads["w"], grads.get("b")

    def forward(self, xs, y, training):
        self.k.conv2d_forward(xs[0], self.w, self.b, y, self.ws, self.s, self.s, self.ph, self.pw,
                              self.d, self.d, self.groups, self.cfg.bias, self.relu)

    def backward(self, xs, y, dy, dxs):
        self.k.conv2d_backward(xs[0], self.w, y, dy, dxs[0], self.gw, self.gb, self.ws, self.s, self.s,
                               self.ph, self.pw, self.d, self.d, self.groups, self.cfg.bias, self.relu,
                               dxs[0] is not None)


__all__ = ["Conv", "ConvConfig", "window_fit_error", "shape_str"]
