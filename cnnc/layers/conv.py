"""Convolution: ``conv3``, ``conv5(16, pad=valid)``, ``conv3(64, stride=2, groups=4)``."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .base import (ArgSpec, InferContext, LayerError, LayerInfo, LayerType, ParamSpec, Shape,
                   Op, TorchCode, Window, as4d, axis_name, fit_suggestions, fmt_int, one_d_window_error, register,
                   require_spatial, shape_str, window_output, window_size)


@dataclass(frozen=True)
class ConvConfig:
    size: tuple[int, int]
    filters: int | None = None  # None: the current width (docs/language.md, width rule)
    stride: int = 1
    pad: int | str = "default"  # int, "same", "valid" or "default"
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    edge: str = "check"  # "drop": real input no window covers is dropped silently (as PyTorch)
    size_dims: int = 1  # sizes written: 1 (conv3: also a window on sequences) or 2 (conv3x3)

    def padding(self) -> tuple[int, int]:
        if self.pad == "valid":
            return (0, 0)
        if isinstance(self.pad, int):
            return (self.pad, self.pad)
        if self.pad == "default" and self.stride != 1:
            return (0, 0)
        kh, kw = self.size
        return (self.dilation * (kh - 1) // 2, self.dilation * (kw - 1) // 2)


def _shape_text(sizes: tuple[int, ...], what: str = "") -> str:
    if len(sizes) == 1:  # a sequence
        return f"{sizes[0]}-{what}" if what else f"length-{sizes[0]}"
    return "x".join(str(v) for v in sizes)


def window_fit_error(layer: str, in_hw: tuple[int, ...], window: tuple[int, ...],
                     stride: int, pad: tuple[int, ...], dilation: int, is_pool: bool,
                     ceil: bool = False, drop: bool = False) -> tuple[int, ...]:
    """Output sizes of a sliding window, one per spatial axis ((H', W') for images, (L',)
    for sequences); raise LayerError when it leaves nothing or, unless ``drop``
    (``edge=drop``), does not fit (real input rows/columns/positions never covered)."""
    rank = len(in_hw)
    outs, lost = [], []
    for axis in range(rank):
        size, win, p = in_hw[axis], window[axis], pad[axis]
        fit = window_output(size, win, stride, p, ceil)
        exact = (size + 2 * p - win) / stride + 1
        formula = f"({size} + {2 * p} - {win})/{stride} + 1 = {exact:.3g}"
        if fit.out <= 0 or size + 2 * p < win:
            raise LayerError(
                f"{layer} leaves nothing: its {_shape_text(window, 'position')} window is larger than "
                f"its padded {_shape_text(in_hw)} input ({formula})",
                "empty", hint="use a smaller window, more padding, or fewer down-samplings before it")
        if fit.lost_first and not drop:
            n = fit.lost_last - fit.lost_first + 1
            where = str(fit.lost_first) if n == 1 else f"{fit.lost_first}-{fit.lost_last}"
            tip = fit_suggestions(size, win, stride, p, dilation, is_pool)
            lost.append((axis_name(axis, n, rank), where, n, formula, tip))
        outs.append(fit.out)
    if lost:
        words = " and ".join(f"{name} {where}" for name, where, _, _, _ in lost)
        plural = len(lost) > 1 or lost[0][2] > 1
        tip = lost[0][4]
        raise LayerError(
            f"{layer} does not fit its {_shape_text(in_hw)} input: {lost[-1][3]}", "fit",
            hint=f"{words} of the input {'are' if plural else 'is'} never covered"
                 + (f"; {tip}" if tip else "") + " (or edge=drop to drop them, as PyTorch does)")
    return tuple(outs)


def _filters_and_groups(cfg: ConvConfig, c: int, ctx: InferContext) -> tuple[int, int]:
    """The filter count (the current width when not given) and the groups, which must divide
    both the input channels and the filters."""
    f = cfg.filters if cfg.filters is not None else ctx.width
    g = cfg.groups
    if c % g or f % g:
        raise LayerError(f"groups={g} must divide both the input channels ({c}) and the filters ({f})",
                         "argument", arg="groups")
    return f, g


@register
class Conv(LayerType):
    name = "conv"
    suffix = "size"
    summary = "convolution (size suffix: conv3, conv5, conv1x7; on sequences conv3 is a window of 3)"
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
        ArgSpec("edge", "choice", "check", choices=("check", "drop"),
                help="drop: real input at the far edge that no window covers is dropped silently "
                     "(PyTorch's floor), instead of the 'does not fit' error"),
    )
    config_class = ConvConfig
    absorbs_relu = True
    folds_bn = True  # inference: a following bn folds into w and b
    has_filters = True
    torch_param_names = MappingProxyType({"weight": "w", "bias": "b"})
    draw_colour = "#cfe3f7"

    def make_config(self, values):
        if values.get("size") is None:
            raise LayerError("conv needs a window size", "argument",
                             hint="write it as a suffix, conv3, or as size=3", arg="size")
        values = window_size(values, values["size"])
        kh, kw = values["size"]
        if values.get("pad") == "same" and (kh % 2 == 0 or kw % 2 == 0):
            shown = f"{kh}x{kw}" if values["size_dims"] == 2 else f"{kw}"
            raise LayerError(f"pad=same needs an odd window, but the window is {shown}",
                             "argument", hint=f"give the padding as a number, e.g. pad={(kh - 1) // 2}",
                             arg="pad")
        return ConvConfig(**values)

    def draw_label(self, cfg: ConvConfig, info: LayerInfo) -> str:
        """``conv 3x3/2, 64, groups 2``: the window, a stride other than 1, the filters, the groups."""
        kh, kw = cfg.size
        label = f"conv {kh}x{kw}" + (f"/{cfg.stride}" if cfg.stride != 1 else "") + f", {info.out_shape[0]}"
        return label + (f", groups {cfg.groups}" if cfg.groups != 1 else "")

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
        if cfg.edge == "drop":
            parts.append("edge drop")
        return ", ".join(parts)

    def infer(self, cfg: ConvConfig, inputs: list[Shape], ctx: InferContext) -> LayerInfo:
        c, spatial = require_spatial("conv", inputs[0])
        if len(spatial) == 1:
            return self.infer_1d(cfg, inputs[0], ctx)
        h, w = spatial
        f, g = _filters_and_groups(cfg, c, ctx)
        kh, kw = cfg.size
        d = cfg.dilation
        eff = (d * (kh - 1) + 1, d * (kw - 1) + 1)
        pad = cfg.padding()
        label = f"conv{kh}" if kh == kw else f"conv{kh}x{kw}"
        label += f"(stride={cfg.stride})" if cfg.stride != 1 else ""
        oh, ow = window_fit_error(label, (h, w), eff, cfg.stride, pad, d, is_pool=False,
                                  drop=cfg.edge == "drop")
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

    def infer_1d(self, cfg: ConvConfig, shape: Shape, ctx: InferContext) -> LayerInfo:
        """A window of ``k`` positions on a sequence (C, L) -> (F, L'); weights (F, C/groups, k)
        as PyTorch's Conv1d holds them."""
        c, length = shape
        kh, k = cfg.size
        if cfg.size_dims != 1:
            raise one_d_window_error(f"conv{kh}x{k}", f"conv{k}", shape)
        f, g = _filters_and_groups(cfg, c, ctx)
        d = cfg.dilation
        eff = d * (k - 1) + 1
        pad = cfg.padding()[1]
        label = f"conv{k}" + (f"(stride={cfg.stride})" if cfg.stride != 1 else "")
        (out,) = window_fit_error(label, (length,), (eff,), cfg.stride, (pad,), d, is_pool=False,
                                  drop=cfg.edge == "drop")
        cin = c // g
        fan_in = cin * k
        params = [ParamSpec("w", (f, cin, k), "fan", fan_in, (f // g) * k)]
        cin_text = f"{c}/{g}" if g != 1 else f"{c}"
        if cfg.bias:
            params.append(ParamSpec("b", (f,), "zeros"))
            formula = f"({k}*{cin_text}+1)*{f} = {fmt_int((fan_in + 1) * f)}"
        else:
            formula = f"{k}*{cin_text}*{f} = {fmt_int(fan_in * f)}"
        parts = [f"{k}", f"{f} filter{'s' if f != 1 else ''}", f"stride {cfg.stride}",
                 f"pad {pad}" + _pad_mode(cfg, pad, k)]
        if d != 1:
            parts.append(f"dilation {d}")
        if g != 1:
            parts.append(f"groups {g}")
        if not cfg.bias:
            parts.append("no bias")
        if cfg.edge == "drop":
            parts.append("edge drop")
        return LayerInfo(out_shape=(f, out), params=tuple(params), formula=formula,
                         macs=f * out * fan_in, window=Window((eff,), (cfg.stride,), (pad,)),
                         detail=", ".join(parts))

    def downsamples(self, cfg: ConvConfig) -> bool:
        return cfg.stride > 1

    def make_op(self, cfg, info, in_shapes):
        return ConvOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        from . import reference as ref

        if xs[0].ndim == 3:
            return ref.conv1d(xs[0], params["w"], params.get("b"), cfg.stride, cfg.padding()[1],
                              cfg.dilation, cfg.groups)
        return ref.conv(xs[0], params["w"], params.get("b"), cfg.stride, cfg.padding(), cfg.dilation,
                        cfg.groups)

    def to_torch(self, cfg: ConvConfig, info: LayerInfo, in_shapes) -> TorchCode:
        """``nn.Conv2d`` (``nn.Conv1d`` on sequences); PyTorch floors as cnnc does (edge=drop)."""
        c, f = in_shapes[0][0], info.out_shape[0]
        ph, pw = cfg.padding()
        if len(in_shapes[0]) == 2:
            dims, k, pad = 1, cfg.size[-1], pw
        else:
            dims, pad = 2, ph if ph == pw else (ph, pw)
            k = cfg.size[0] if cfg.size[0] == cfg.size[1] else tuple(cfg.size)
        args = f"{c}, {f}, kernel_size={k}"
        args += f", stride={cfg.stride}" if cfg.stride != 1 else ""
        args += f", padding={pad}" if pad else ""
        args += f", dilation={cfg.dilation}" if cfg.dilation != 1 else ""
        args += f", groups={cfg.groups}" if cfg.groups != 1 else ""
        args += "" if cfg.bias else ", bias=False"
        return TorchCode(f"nn.Conv{dims}d({args})", "{m}({x})")

    def to_onnx(self, cfg: ConvConfig, info: LayerInfo, ctx) -> None:
        """Conv; W is (F, C/groups, KH, KW) in both (F, C/groups, K) for sequences; ONNX pads
        are the begins of every axis, then their ends."""
        ph, pw = cfg.padding()
        inputs = [ctx.inputs[0], ctx.param("w")] + ([ctx.param("b")] if cfg.bias else [])
        if len(ctx.in_shapes[0]) == 2:  # a sequence: one axis
            ctx.node("Conv", inputs, kernel_shape=[cfg.size[-1]], strides=[cfg.stride], pads=[pw, pw],
                     dilations=[cfg.dilation], group=cfg.groups)
            return
        ctx.node("Conv", inputs, kernel_shape=list(cfg.size), strides=[cfg.stride, cfg.stride],
                 pads=[ph, pw, ph, pw], dilations=[cfg.dilation, cfg.dilation], group=cfg.groups)


def _pad_mode(cfg: ConvConfig, pad: int, k: int) -> str:
    if isinstance(cfg.pad, int):
        return ""
    if cfg.pad == "default":
        if cfg.stride != 1:
            return " (valid)"
        return " (same)" if 2 * pad == cfg.dilation * (k - 1) else ""
    return {"same": " (same)", "valid": " (valid)"}.get(cfg.pad, "")


class ConvOp(Op):
    """x: (N, C, H, W) -> y: (N, F, H', W'), bias and ReLU optionally fused. A sequence
    x: (N, C, L) -> y: (N, F, L') runs the same kernel on (N, C, 1, L) views with a 1 x k
    window (weights (F, C/groups, k) seen as (F, C/groups, 1, k))."""

    def __init__(self, cfg: ConvConfig, info: LayerInfo, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels.conv import dispatch as k
        from ..kernels.conv.geometry import ConvGeometry

        self.k = k
        self.seq = len(in_shapes[0]) == 2
        ph, pw = cfg.padding()
        if self.seq:  # height 1: window 1, stride/dilation 1 and no padding on that axis
            self.geom = ConvGeometry(1, cfg.stride, 0, pw, 1, cfg.dilation, cfg.groups)
        else:
            self.geom = ConvGeometry(cfg.stride, cfg.stride, ph, pw, cfg.dilation, cfg.dilation,
                                     cfg.groups)

    def bind(self, batch, dtype, params, grads, buffers, rng):
        from ..kernels import memory

        super().bind(batch, dtype, params, grads, buffers, rng)
        c, *hw = self.in_shapes[0]
        f, *ohw = self.info.out_shape
        kh, kw = self.cfg.size
        if self.seq:
            hw, ohw, kh = [1, hw[0]], [1, ohw[0]], 1
        shapes = ((batch, c, hw[0], hw[1]), (f, c // self.geom.groups, kh, kw),
                  (batch, f, ohw[0], ohw[1]))
        size = self.k.conv2d_workspace_size(*shapes, self.geom)
        self.ws = memory.empty(max(size, 1), dtype)
        self.w, self.b = self._view(params["w"]), params.get("b")
        self.gw, self.gb = self._view(grads["w"]), grads.get("b")
        self._adds = self.k.conv2d_backward_adds(*shapes, self.geom, self.ws.size, self.relu)

    def adds_dx(self, slot: int) -> bool:
        return self._adds

    def _view(self, a):
        return as4d(a) if a is not None and self.seq else a

    def forward(self, xs, y, training):
        self.k.conv2d_forward(self._view(xs[0]), self.w, self.b, self._view(y), self.ws, self.geom,
                              self.cfg.bias, self.relu)

    def inference_call(self, xs, y):
        return self.k.conv2d_forward_call(self._view(xs[0]), self.w, self.b, self._view(y), self.ws,
                                          self.geom, self.cfg.bias, self.relu)

    def backward(self, xs, y, dy, dxs, add=(False,)):
        self.k.conv2d_backward(self._view(xs[0]), self.w, self._view(y), self._view(dy), self._view(dxs[0]),
                               self.gw, self.gb, self.ws, self.geom, self.cfg.bias, self.relu,
                               dxs[0] is not None, add[0])


__all__ = ["Conv", "ConvConfig", "window_fit_error", "shape_str"]
