"""Merges made by the compiler for ``( a | b )`` (concat) and ``( a + b )`` (add), and ``id``."""
from __future__ import annotations

from .base import LayerError, LayerInfo, LayerType, NoConfig, Op, TorchCode, as4d, register, shape_str


@register
class Identity(LayerType):
    name = "id"
    aliases = ("identity",)
    summary = "the identity (a residual's shortcut branch: ( ... + id ))"
    config_class = NoConfig
    elided = True

    def infer(self, cfg, inputs, ctx):
        return LayerInfo(out_shape=inputs[0])

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(None, "{x}")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        """(The graph builder elides `id`; a stray one is exported as Identity.)"""
        ctx.node("Identity", [ctx.inputs[0]])


class MergeError(LayerError):
    pass


@register
class Concat(LayerType):
    name = "concat"
    internal = True
    summary = "channel concatenation of branches: ( a | b )"
    config_class = NoConfig
    merge_verb = "concatenated"
    branch_form = "concat"
    draw_colour = "#ecd9f2"

    def infer(self, cfg, inputs, ctx):
        ranks = {len(s) for s in inputs}
        if len(ranks) == 1 and ranks <= {2, 3} and len({s[1:] for s in inputs}) == 1:
            return LayerInfo(out_shape=(sum(s[0] for s in inputs), *inputs[0][1:]),
                             detail=" | ".join(str(s[0]) for s in inputs) + " channels")
        if ranks == {1}:
            return LayerInfo(out_shape=(sum(s[0] for s in inputs),))
        raise MergeError("branches of ( | ) cannot be concatenated on the channel axis: "
                         + ", ".join(f"branch {i + 1} gives {shape_str(s)}" for i, s in enumerate(inputs)),
                         "merge", hint="concatenated branches need the same height and width (length, for sequences)")

    def make_op(self, cfg, info, in_shapes):
        return ConcatOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        import numpy as np

        return np.concatenate(xs, axis=1)

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(None, "torch.cat([{xs}], 1)")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        ctx.node("Concat", list(ctx.inputs), axis=1)


class ConcatOp(Op):
    """Channel concatenation: each input is copied into its slice of y."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.k = k
        self.offsets = []
        c0 = 0
        for s in in_shapes:
            self.offsets.append(c0)
            c0 += s[0]

    def forward(self, xs, y, training):
        y4 = as4d(y)
        for x, c0 in zip(xs, self.offsets):
            self.k.concat_channels_forward(as4d(x), y4, c0)

    def backward(self, xs, y, dy, dxs):
        dy4 = as4d(dy)
        for dx, c0 in zip(dxs, self.offsets):
            if dx is not None:
                self.k.concat_channels_backward(dy4, as4d(dx), c0)


@register
class Add(LayerType):
    name = "add"
    internal = True
    summary = "elementwise sum of branches: ( a + b )"
    config_class = NoConfig
    merge_verb = "added"
    branch_form = "sum"
    sums_inputs = True
    absorbs_relu = True  # ( a + b ) - relu, the residual block's end: one pass
    draw_colour = "#ecd9f2"

    def infer(self, cfg, inputs, ctx):
        if len(set(inputs)) == 1:
            return LayerInfo(out_shape=inputs[0])
        raise MergeError("branches of ( + ) cannot be added: "
                         + ", ".join(f"branch {i + 1} gives {shape_str(s)}" for i, s in enumerate(inputs)),
                         "merge", hint="summed branches need identical shapes; a shortcut that changes "
                                       "size or channels needs a conv1(c, stride=s) branch instead of id")

    def make_op(self, cfg, info, in_shapes):
        return AddOp(cfg, info, in_shapes)

    def reference(self, cfg, xs, params, buffers, training):
        return sum(xs[1:], xs[0].copy())

    def to_torch(self, cfg, info: LayerInfo, in_shapes) -> TorchCode:
        return TorchCode(None, "{xs}", join=" + ")

    def to_onnx(self, cfg, info: LayerInfo, ctx) -> None:
        ctx.node("Sum", list(ctx.inputs))


class AddOp(Op):
    """y = x0 + x1 + ... (then ReLU, when fused); every input's gradient is dy (masked by
    y > 0 with the ReLU)."""

    def __init__(self, cfg, info, in_shapes):
        super().__init__(cfg, info, in_shapes)
        from ..kernels import elementwise as k

        self.k = k

    def inference_call(self, xs, y):
        if len(xs) == 2:
            from ..kernels.serial import pick

            kernel = self.k.add_relu_forward if self.relu else self.k.add_forward
            return (pick(kernel, y.shape[0], y.size),
                    (xs[0].reshape(-1), xs[1].reshape(-1), y.reshape(-1)))
        return super().inference_call(xs, y)

    def forward(self, xs, y, training):
        y1 = y.reshape(-1)
        if len(xs) == 2 and self.relu:
            self.k.add_relu_forward(xs[0].reshape(-1), xs[1].reshape(-1), y1)
            return
        self.k.add_forward(xs[0].reshape(-1), xs[1].reshape(-1), y1)
        for x in xs[2:]:
            self.k.accumulate(y1, x.reshape(-1))
        if self.relu:
            self.k.relu_forward(y1, y1)

    def backward(self, xs, y, dy, dxs):
        g = dy.reshape(-1)
        first = None
        for dx in dxs:
            if dx is None:
                continue
            if first is None and self.relu:
                self.k.relu_backward(g, y.reshape(-1), dx.reshape(-1))
                g = first = dx.reshape(-1)  # the masked gradient, copied to the other inputs
            else:
                self.k.copy(dx.reshape(-1), g)
