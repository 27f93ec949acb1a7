"""What a layer type is: its arguments, its shape rule, its parameters, its cost.

Every rule here is a pure function of shapes (no arrays), so a whole network is checked
without allocating anything and without importing Numba. The executable side of a layer
(``make_op``) imports its kernels lazily.

Conventions (stated once): shapes are ``(C, H, W)`` for images, ``(C, L)`` for sequences
(a 1-D network, ``input CxL``) and ``(F,)`` for vectors, without the batch axis. One multiply-accumulate (MAC) is one multiply and one add;
FLOPs = 2 x MACs. Only convolutions and fully connected layers count MACs; biases,
activations, pooling, normalization and merges are not counted (torchvision's and
fvcore's convention).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

Shape = tuple[int, ...]

REQUIRED = object()


class LayerError(Exception):
    """Raised by a shape rule; the caller adds the source span and expansion notes."""

    def __init__(self, message: str, kind: str = "shape", hint: str | None = None,
                 arg: str | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.hint = hint
        self.arg = arg  # the argument the error is about, when there is one


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a layer: ``conv3(64, stride=2, pad=same)``."""

    name: str
    kind: str  # "int" | "float" | "bool" | "pad" | "choice" | "size"
    default: Any = REQUIRED
    positional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "pad":
            return "an integer >= 0, same or valid"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "size":
            return "a size like 3 (or a suffix: conv3, conv3x1)"
        text = {"int": "an integer", "float": "a number"}[self.kind]
        if self.minimum is not None and self.maximum is not None:
            text += f" in [{self.minimum:g}, {self.maximum:g}]"
        elif self.minimum is not None:
            text += f" >= {self.minimum:g}"
        return text


@dataclass(frozen=True)
class ParamSpec:
    """A learnable parameter or a buffer: name, shape and how to initialize it."""

    name: str
    shape: Shape
    init: str  # "fan" (He before a ReLU-family layer, Glorot otherwise: see lower.py) | "zeros" | "ones"
    fan_in: int = 0
    fan_out: int = 0

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Window:
    """The spatial footprint of one output position, for the receptive field: one entry
    per spatial axis (two for images, one for sequences)."""

    size: tuple[int, ...]  # effective (dilated) window
    stride: tuple[int, ...]
    pad: tuple[int, ...]


@dataclass(frozen=True)
class TorchCode:
    """How ``cnnc export --format torch`` writes one layer: the ``nn.Module`` it constructs
    (source text, or None for a function of its inputs) and the forward expression, where
    ``{m}`` is the module (``self.conv_1``), ``{x}`` the first input and ``{xs}`` every
    input joined by ``join``. ``extra``: buffers PyTorch's module has and cnnc does not
    keep, with the value to save (batch norm's ``num_batches_tracked``)."""

    module: str | None
    expr: str
    join: str = ", "
    extra: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    """Everything ``cnnc check`` knows about one layer instance."""

    out_shape: Shape
    params: tuple[ParamSpec, ...] = ()
    buffers: tuple[ParamSpec, ...] = ()
    formula: str = ""
    macs: int = 0
    window: Window | None = None  # None: pointwise (receptive field unchanged)
    detail: str = ""  # the resolved configuration, defaults shown

    @property
    def param_count(self) -> int:
        return sum(p.size for p in self.params)


@dataclass(frozen=True)
class InferContext:
    """What a shape rule may know besides its inputs."""

    width: int  # the current default filter count
    classes: int | None
    is_last_fc: bool = False


class LayerType:
    """Base class of a layer type. Subclasses set the class attributes and rules."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    suffix: ClassVar[str | None] = None  # the argument a size suffix fills (conv3)
    args: ClassVar[tuple[ArgSpec, ...]] = ()
    summary: ClassVar[str] = ""
    internal: ClassVar[bool] = False  # made by the compiler (merges), not written by users
    config_class: ClassVar[type]

    # What the stages ask of a layer type (never its name):
    elided: ClassVar[bool] = False  # the builder passes its input through (id): no graph node
    takes_classes: ClassVar[bool] = False  # the last such layer may leave out its size (fc)
    only_last: ClassVar[str | None] = None  # allowed only as the last layer; the hint why
    merge_verb: ClassVar[str] = ""  # merges: "concatenated" / "added", for error messages
    fused_into_loss: ClassVar[bool] = False  # the lowering folds it into the loss (softmax)
    absorbs_relu: ClassVar[bool] = False  # its op can apply a following ReLU (conv, fc)
    absorbs_add: ClassVar[bool] = False  # its op can add a second input to its output (bn)
    fuses_into_producer: ClassVar[bool] = False  # a ReLU: runs inside an absorbing producer
    init_gain: ClassVar[str | None] = None  # "he": weights feeding this layer get He init
    init_transparent: ClassVar[bool] = False  # initialization looks through it (bn)
    # Inference plans (cnnc.runtime.lower.lower(..., inference=True)):
    folds_bn: ClassVar[bool] = False  # a following bn folds into its weights (axis 0) and bias; config has `bias`
    folds_into_weights: ClassVar[bool] = False  # bn: folds into a ``folds_bn`` producer at inference
    identity_at_inference: ClassVar[bool] = False  # dropout: no step at inference
    # Training memory (cnnc check): bytes per output element the op keeps besides its output
    # for the backward pass (max pooling's int32 argmax, dropout's random draw and mask)
    saved_bytes_per_output: ClassVar[int] = 0
    # The graph builder and the add fusion:
    # merges: the branch syntax the builder makes it for, "concat" ( a | b ) or "sum" ( a + b )
    branch_form: ClassVar[str | None] = None
    sums_inputs: ClassVar[bool] = False  # its output is the elementwise sum of its inputs (add)
    # Tools and views:
    piecewise_linear: ClassVar[bool] = False  # kinks (relu, maxpool): gradcheck's looser tolerance
    rectifier: ClassVar[bool] = False  # max(x, 0): output and gradient 0 where the input is negative (relu)
    has_filters: ClassVar[bool] = False  # its weights are spatial filters, shown as images (conv)
    is_activation: ClassVar[bool] = False  # an elementwise nonlinearity (cnnc import: a block's tail)
    is_dense: ClassVar[bool] = False  # every output reads the whole flattened input (fc)
    # cnnc import-weights: PyTorch's parameter names -> cnnc's, in PyTorch's order
    torch_param_names: ClassVar[Mapping[str, str]] = MappingProxyType({})
    draw_colour: ClassVar[str] = "#f2f2f2"  # the fill of its box in ``cnnc draw``

    def make_config(self, values: dict[str, Any]) -> Any:
        """Check arguments against each other; return the frozen config."""
        return self.config_class(**values)

    def infer(self, cfg: Any, inputs: list[Shape], ctx: InferContext) -> LayerInfo:
        raise NotImplementedError

    def downsamples(self, cfg: Any) -> bool:
        """True when the layer halves (or more) the spatial size: the width doubles after it."""
        return False

    def draw_label(self, cfg: Any, info: LayerInfo) -> str:
        """The title of the layer's box in ``cnnc draw``: its name, with what sets it apart."""
        return self.name

    def make_op(self, cfg: Any, info: LayerInfo, in_shapes: list[Shape]):
        """The executable op for this layer (imports kernels lazily)."""
        raise NotImplementedError(f"layer {self.name} cannot be executed yet")

    def reference(self, cfg: Any, xs: list, params: dict, buffers: dict, training: bool):
        """The layer's output computed naively with NumPy (float64), batch axis first:
        the independent reference the registry test compares the kernels with."""
        raise NotImplementedError(f"layer {self.name} has no NumPy reference")

    def to_onnx(self, cfg: Any, info: LayerInfo, ctx) -> None:
        """Emit the ONNX nodes computing this layer at inference (``ctx``: an
        :class:`cnnc.tools.export_onnx.OnnxContext`). A layer type without a mapping says so."""
        raise LayerError(f"layer type {self.name} has no ONNX mapping", "export")

    def to_torch(self, cfg: Any, info: LayerInfo, in_shapes: list[Shape]) -> TorchCode:
        """The PyTorch module and forward expression computing this layer (``cnnc export
        --format torch``; parameters keep their ``torch_param_names``). A layer type without
        a mapping says so."""
        raise LayerError(f"layer type {self.name} has no PyTorch mapping", "export")


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, LayerType] = {}
SUFFIX_RE = re.compile(r"^([A-Za-z_]*[A-Za-z_])(\d+(?:x\d+)?)$")


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator: add a layer type under its name and aliases; duplicates refused."""
    inst = cls()
    for key in (cls.name, *cls.aliases):
        if key in _REGISTRY:
            raise RuntimeError(f"layer name {key!r} registered twice")
        _REGISTRY[key] = inst
    return cls


def registry() -> dict[str, LayerType]:
    """Every layer type by name and alias (filled when :mod:`cnnc.layers` imports its families)."""
    return _REGISTRY


def layer_types() -> list[LayerType]:
    """Each layer type once (aliases folded)."""
    seen: dict[str, LayerType] = {}
    for t in registry().values():
        seen.setdefault(t.name, t)
    return list(seen.values())


@dataclass(frozen=True)
class Resolved:
    """A name resolved against the registry: the type and the size from a suffix."""

    layer: LayerType
    suffix: tuple[int, ...] | None  # as written: (3,) for conv3, (3, 3) for conv3x3


def resolve_name(name: str) -> Resolved | None:
    reg = registry()
    found = reg.get(name)
    if found is not None and not found.internal:
        return Resolved(found, None)
    m = SUFFIX_RE.match(name)
    if m:
        base = reg.get(m.group(1))
        if base is not None and not base.internal and base.suffix:
            parts = tuple(int(p) for p in m.group(2).split("x"))
            if len(parts) > 2:
                return None
            return Resolved(base, parts)
    return None


def suffix_base(name: str) -> LayerType | None:
    m = SUFFIX_RE.match(name)
    if m:
        t = registry().get(m.group(1))
        if t is not None and not t.internal:
            return t
    return None


# ---------------------------------------------------------------------------
# Shape arithmetic shared by convolution and pooling
# ---------------------------------------------------------------------------


def fmt_int(n: int) -> str:
    return f"{n:,}"


def shape_str(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def require_spatial(layer: str, shape: Shape) -> tuple[int, tuple[int, ...]]:
    """Channels and spatial sizes of an image (C, H, W) or a sequence (C, L)."""
    if len(shape) not in (2, 3):
        raise LayerError(
            f"{layer} needs an image (CxHxW) or a sequence (CxL), but its input is a vector of "
            f"{shape_str(shape)}", "shape", hint="image and sequence layers must come before fc/gap/flatten")
    return shape[0], tuple(shape[1:])


def one_d_window_error(label: str, written: str, in_shape: Shape) -> LayerError:
    """A 2-D window (``conv3x3``, ``maxpool2x2``) written in a 1-D network."""
    return LayerError(
        f"{label} has a 2-D window, but the network is 1-D (its input here is a sequence "
        f"{shape_str(in_shape)}, channels x length)", "shape",
        hint=f"write {written} for a window of that many positions")


def axis_name(axis: int, count: int, rank: int = 2) -> str:
    word = "position" if rank == 1 else "row" if axis == 0 else "column"
    return word if count == 1 else word + "s"


@dataclass(frozen=True)
class AxisFit:
    out: int
    lost_first: int  # 1-based index of the first real position never covered (0: none lost)
    lost_last: int


def window_output(size: int, window: int, stride: int, pad: int, ceil: bool) -> AxisFit:
    """Output length of a sliding window along one axis, and the real input lost.

    Floor rounding drops what is left at the far edge; that is an error only when the
    lost positions are real input (not padding) beyond the gap the stride leaves
    between windows anyway (docs/language.md, "Doesn't fit").
    """
    span = size + 2 * pad - window
    if span < 0:
        return AxisFit(span // stride + 1 if span >= -stride else 0, 0, 0)
    if ceil:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:  # last window must start inside the input or left pad
            out -= 1
        return AxisFit(out, 0, 0)
    out = span // stride + 1
    last_end = (out - 1) * stride - pad + window - 1  # 0-based, in input coordinates
    uncovered = size - 1 - last_end
    if uncovered > max(stride - window, 0):
        return AxisFit(out, last_end + 2, size)
    return AxisFit(out, 0, 0)


def fit_suggestions(size: int, window: int, stride: int, pad: int, dilation: int,
                    is_pool: bool, kind_of_pad: str = "pad") -> str:
    """Ways to make a window fit: another pad, another stride, or ceil rounding.

    Only a handful of candidates are tried (nearby paddings and strides), so absurd
    sizes cost nothing."""
    tips: list[str] = []
    for p in range(pad + 1, pad + min(window, 8) + 1):
        if window_output(size, window, stride, p, False).lost_first == 0:
            tips.append(f"{kind_of_pad}={p}")
            break
    for s in range(stride - 1, max(stride - 9, 0), -1):
        if window_output(size, window, s, pad, False).lost_first == 0:
            tips.append(f"stride={s}")
            break
    if is_pool:
        tips.append("round=ceil")
    return "try " + " or ".join(tips) if tips else ""


def window_size(values: dict[str, Any], default: tuple[int, ...]) -> dict[str, Any]:
    """``size`` as written, (k,) or (kh, kw), made ``(kh, kw)`` plus ``size_dims``: how many
    sizes were written (1: ``conv3``, ``size=3``, usable on sequences; 2: ``conv3x3``)."""
    size = values.get("size") or default
    return {**values, "size": (size[0], size[-1]), "size_dims": len(size)}


@dataclass(frozen=True)
class NoConfig:
    """The configuration of a layer without arguments."""


def as4d(a):
    """A (N, C) array seen as (N, C, 1, 1) and a sequence (N, C, L) as (N, C, 1, L), so
    channel and image kernels serve vectors and sequences too (a view, no copy)."""
    if a.ndim == 4:
        return a
    if a.ndim == 3:
        return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2])
    return a.reshape(a.shape[0], a.shape[1], 1, 1)


class Op:
    """The executable half of a layer instance, made by :meth:`LayerType.make_op`.

    Arrays carry the batch axis first. :meth:`bind` is called once per batch size with the
    layer's parameter, gradient and buffer views (dicts by parameter name) and allocates
    whatever the kernels need (workspaces, argmax, masks): nothing is allocated per step.
    ``forward`` overwrites ``y``; ``backward`` overwrites the gradients of the parameters
    and each ``dxs[i]`` that is not None.
    """

    relu = False  # conv/fc: a following ReLU fused into this op by the lowering

    def __init__(self, cfg: Any, info: LayerInfo, in_shapes: list[Shape]):
        self.cfg = cfg
        self.info = info
        self.in_shapes = in_shapes

    def bind(self, batch: int, dtype, params: dict, grads: dict, buffers: dict, rng) -> None:
        self.p, self.g, self.buf, self.rng = params, grads, buffers, rng

    def forward(self, xs: list, y, training: bool) -> None:
        raise NotImplementedError

    def inference_call(self, xs: list, y) -> tuple:
        """:meth:`forward` in inference mode on exactly these buffers, as ``(fn, args)`` with
        ``fn(*args)`` doing it: an inference executor binds its steps once and then runs
        them without re-deciding anything per call (views, kernel paths, thread pieces),
        which is most of a small layer's time at batch 1. Ops whose kernel choice depends
        only on shapes return the kernel itself; the default is the op's own forward."""
        return self.forward, (xs, y, False)

    def backward(self, xs: list, y, dy, dxs: list) -> None:
        raise NotImplementedError

    def adds_dx(self, slot: int) -> bool:
        """Can :meth:`backward` add input ``slot``'s gradient to what ``dxs[slot]`` holds?
        Ops that can take ``add`` (one bool per input) in :meth:`backward`; the executor
        then sums a value's gradients in place instead of through a scratch buffer."""
        return False

    def assume_trained(self) -> None:
        """Take the state a training forward leaves (which kernels the backward calls), without
        computing anything: the compile helper (:mod:`cnnc.training.precompile`) runs backward passes
        on zeros before their forward, to compile their kernels early."""

    def join(self, world) -> None:
        """Data-parallel training: ``world`` (:class:`cnnc.runtime.distributed.World`) holds the other
        ranks. Ops whose result depends on the whole batch (batch norm) sum over it; others
        need nothing."""
