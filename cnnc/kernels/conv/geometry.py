"""What a convolution call is asked: its geometry, and the path a test may force.

:class:`ConvGeometry` is built once per layer (when its op is constructed) and handed to the
Python-level entry points of :mod:`cnnc.kernels.conv.dispatch` at every call; the ``@njit``
kernels themselves take its fields as scalar arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

# Paths (:data:`cnnc.kernels.conv.dispatch.FORCE_PATH`, ``CNNC_CONV_PATH``): 0 = automatic,
# 1 = compact im2col, 2 = the contiguous im2col layouts ("wide" at stride 1, "phase" at
# stride 2), 3 = Winograd F(4x4,3x3) wherever it applies, 4 = the direct micro-kernel
# wherever it applies (both fall back to im2col elsewhere).
PATH_AUTO, PATH_COMPACT, PATH_WIDE, PATH_WINO, PATH_DIRECT = 0, 1, 2, 3, 4
PATH_NAMES = ("auto", "compact", "wide", "wino", "direct")  # by path number


@dataclass(frozen=True, slots=True)
class ConvGeometry:
    """Strides, zero padding, dilations and group count of a 2-D convolution (NCHW)::

        x: (N, C, H, W), w: (F, C // groups, KH, KW)  ->  y: (N, F, H', W')
        H' = (H + 2*pad_h - dilation_h*(KH - 1) - 1) // stride_h + 1      (W' likewise)

    ``pad_h`` / ``pad_w`` are added on both sides of their axis.  C and F are multiples of
    ``groups``.  A sequence convolution (N, C, L) runs as height 1: ``stride_h``,
    ``dilation_h`` 1 and ``pad_h`` 0.
    """

    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    #: the seven fields in the order above, the kernels' scalar arguments: one attribute
    #: read per call where the entry points need them all
    scalars: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        values = (self.stride_h, self.stride_w, self.pad_h, self.pad_w, self.dilation_h,
                  self.dilation_w, self.groups)
        for name, v in zip(("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
                            "dilation_w", "groups"), values):
            if not isinstance(v, Integral) or isinstance(v, bool):
                raise TypeError(f"ConvGeometry.{name} must be an int, not {v!r}")
            if v < (0 if name.startswith("pad") else 1):
                raise ValueError(f"ConvGeometry.{name} out of range: {v}")
        object.__setattr__(self, "scalars", tuple(int(v) for v in values))

    @classmethod
    def square(cls, stride: int = 1, pad: int = 0, dilation: int = 1,
               groups: int = 1) -> ConvGeometry:
        """The same stride, padding and dilation on both axes."""
        return cls(stride, stride, pad, pad, dilation, dilation, groups)

    def output_hw(self, H: int, W: int, KH: int, KW: int) -> tuple[int, int]:
        """(H', W') of an H x W input under a KH x KW window."""
        return ((H + 2 * self.pad_h - self.dilation_h * (KH - 1) - 1) // self.stride_h + 1,
                (W + 2 * self.pad_w - self.dilation_w * (KW - 1) - 1) // self.stride_w + 1)
