"""Merges made by the compiler for ``( a | b )`` (concat) and ``( a + b )`` (add), and ``id``."""
from __future__ import annotations

from dataclasses import dataclass

from .base import LayerError, LayerInfo, LayerType, register, shape_str


@dataclass(frozen=True)
class NoConfig:
    pass


@register
class Identity(LayerType):
    name = "id"
    aliases = ("identity",)
    summary = "the identity (a residual's shortcut branch: ( ... + id ))"
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        return LayerInfo(out_shape=inputs[0])


class MergeError(LayerError):
    pass


@register
class Concat(LayerType):
    name = "concat"
    internal = True
    min_inputs = 2
    max_inputs = 1 << 30
    summary = "channel concatenation of branches: ( a | b )"
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        ranks = {len(s) for s in inputs}
        if len(ranks) == 1 and ranks == {3} and len({s[1:] for s in inputs}) == 1:
            return LayerInfo(out_shape=(sum(s[0] for s in inputs), *inputs[0][1:]),
                             detail=" | ".join(str(s[0]) for s in inputs) + " channels")
        if ranks == {1}:
            return LayerInfo(out_shape=(sum(s[0] for s in inputs),))
        raise MergeError("branches of ( | ) cannot be concatenated on the channel axis: "
                         + ", ".join(f"branch {i + 1} gives {shape_str(s)}" for i, s in enumerate(inputs)),
                         "merge", hint="concatenated branches need the same height and width")


@register
class Add(LayerType):
    name = "add"
    internal = True
    min_inputs = 2
    max_inputs = 1 << 30
    summary = "elementwise sum of branches: ( a + b )"
    config_class = NoConfig

    def infer(self, cfg, inputs, ctx):
        if len(set(inputs)) == 1:
            return LayerInfo(out_shape=inputs[0])
        raise MergeError("branches of ( + ) cannot be added: "
                         + ", ".join(f"branch {i + 1} gives {shape_str(s)}" for i, s in enumerate(inputs)),
                         "merge", hint="summed branches need identical shapes; a shortcut that changes "
                                       "size or channels needs a conv1(c, stride=s) branch instead of id")
