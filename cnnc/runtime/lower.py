"""Analysis -> plan: schedule, fusions, buffer shapes, parameter layout and initialization.

* **Schedule**: the graph's topological (insertion) order.
* **Fusions**: a ReLU (``fuses_into_producer``) that is the only consumer of a layer whose
  op can apply it (``absorbs_relu``: conv, fc) runs inside that layer's kernel (bias is
  always fused); a last layer ``fused_into_loss`` (softmax) is folded into the
  cross-entropy loss. In training plans, an add of two branches whose first one ends in a
  layer that can add (``absorbs_add``: bn) feeding nothing else runs inside that layer at
  the add's place, its ReLU too: ``( ... - bn + shortcut ) - relu`` is one pass forward and
  one backward, and the bn's own output needs no buffer. Concatenation copies its branches into channel slices: with
  batch-first NCHW buffers a channel slice is strided, and the kernels write contiguous
  outputs, so branches do not write into the concat buffer directly.
* **Buffers**: one value and one gradient buffer per scheduled step (their shapes are in
  the plan; :class:`cnnc.runtime.executor.Executor` allocates them for one batch size). A value
  feeding several consumers gets its gradient summed.
* **Parameters**: every learnable array and buffer in order, each with its initializer:
  He-normal for weights feeding a layer with ``init_gain == "he"`` (ReLU, leaky ReLU),
  looking through ``init_transparent`` layers (bn), Glorot-uniform otherwise.

The plan is a frozen value: it names no arrays, and one plan serves every batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..errors import UsageError
from ..lang.graph import INPUT, LayerNode
from ..lang.infer import Analysis
from ..layers import LayerInfo, ParamSpec, Shape


@dataclass(frozen=True)
class Step:
    """One scheduled op: the layer of ``node`` reading ``inputs`` and writing ``output``
    (value keys; :data:`INPUT` for the network input)."""

    node: str
    layer: LayerNode
    info: LayerInfo
    in_shapes: tuple[Shape, ...]
    inputs: tuple[str, ...]
    output: str
    fused_relu: bool  # the op applies the ReLU that follows it
    folded_bn: str | None = None  # inference plans: the bn node folded into this op's weights and bias
    fused_add: str | None = None  # the add node this op also computes (its other input: inputs[1])


@dataclass(frozen=True)
class ParamSlot:
    """A parameter or buffer of one layer, with its resolved initializer."""

    node: str
    spec: ParamSpec
    init: str  # "he" | "glorot" | "zeros" | "ones"


@dataclass(frozen=True)
class Plan:
    """Everything needed to run the network, without arrays."""

    input_shape: Shape
    classes: int
    steps: tuple[Step, ...]
    logits: str  # value key of the logits (the input of a fused softmax)
    alias: Mapping[str, str]  # graph node -> the value key that holds its output
    value_shapes: Mapping[str, Shape]  # value key -> shape without the batch axis
    params: tuple[ParamSlot, ...]
    buffers: tuple[ParamSlot, ...]
    layers: tuple[str, ...]  # every layer node in order
    analysis: Analysis  # what the plan was lowered from
    inference: bool = False  # an inference plan: batch norms folded, dropout skipped, no backward

    @property
    def fused_relu(self) -> frozenset[str]:
        """The nodes whose op applies the ReLU that follows them."""
        return frozenset(s.node for s in self.steps if s.fused_relu)

    @property
    def uses(self) -> Mapping[str, int]:
        """How many step inputs read each value (a gradient is summed over them)."""
        count: dict[str, int] = {}
        for step in self.steps:
            for s in step.inputs:
                count[s] = count.get(s, 0) + 1
        return count


def lower(analysis: Analysis, fuse_relu: bool = True, inference: bool = False,
          classifier: bool = True) -> Plan:
    """Schedule, fuse and lay out parameters. Raises UsageError if the network is not a
    classifier (training and inference need one score per class). ``fuse_relu=False`` keeps
    every ReLU a step of its own, with its own buffer (the visualizations read and guide
    each layer's output). ``classifier=False`` lowers any network, for its schedule alone
    (``cnnc gradcheck`` checks networks that end in an image too; they cannot be trained).

    ``inference=True`` lowers a forward-only plan: a bn (``folds_into_weights``) that is the
    only consumer of a conv or fc (``folds_bn``) folds into that layer's weights and bias
    (the executor refolds them from the parameters and running statistics at every
    forward, so they never go stale), a ReLU after the folded bn fuses into the conv, and
    ``identity_at_inference`` layers (dropout) vanish. The parameter layout is the same as
    the training plan's."""
    classes = _require_classifier(analysis) if classifier else 0  # 0: the plan only schedules
    graph = analysis.graph
    consumers: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for n in analysis.order:
        for src in analysis.inputs(n):
            consumers[src].append(n)
    alias: dict[str, str] = {INPUT: INPUT}
    fused: set[str] = set()
    folded: dict[str, str] = {}  # producer -> the bn folded into it
    # training plans: an add that a layer can compute (Analysis.add_absorber: a bn feeding
    # nothing else) runs inside that layer, at the add's place
    absorbs: dict[str, str] = {}  # add -> the layer computing it
    if fuse_relu and not inference:
        readers = {v: len(c) for v, c in consumers.items()}
        for n in analysis.order:
            p = analysis.add_absorber(n, readers)
            if p is not None:
                absorbs[n] = p
    deferred = set(absorbs.values())
    added: dict[str, str] = {}  # layer -> the add it computes
    pending: list[tuple[str, tuple[str, ...]]] = []
    logits = None
    for n in analysis.order:
        node = analysis.layer(n)
        srcs = tuple(alias[s] for s in analysis.inputs(n))
        if n in deferred:  # runs with the add it absorbs
            alias[n] = n
            continue
        if n in absorbs:
            p = absorbs[n]
            alias[n] = p
            added[p] = n
            pending.append((p, (alias[analysis.inputs(p)[0]], srcs[1])))
            continue
        if node.type.fused_into_loss:
            alias[n] = logits = srcs[0]
            continue
        if inference and node.type.identity_at_inference:
            alias[n] = srcs[0]
            continue
        if inference and node.type.folds_into_weights:
            (src,) = analysis.inputs(n)
            if (src != INPUT and analysis.layer(src).type.folds_bn and consumers[src] == [n]
                    and alias[src] == src and src not in fused and src not in folded):
                folded[src] = n
                alias[n] = src
                continue
        if node.type.fuses_into_producer:
            (src,) = analysis.inputs(n)
            p = alias[src]  # the step writing src's value (src itself, or a conv src folded into)
            if (fuse_relu and p != INPUT and analysis.layer(p).type.absorbs_relu and consumers[src] == [n]
                    and (p == src or folded.get(p) == src or added.get(p) == src) and p not in fused):
                fused.add(p)
                alias[n] = p
                continue
        alias[n] = n
        pending.append((n, srcs))
    steps = tuple(
        Step(node=n, layer=analysis.layer(n), info=analysis.info[n],
             in_shapes=tuple(analysis.shapes[s] for s in analysis.inputs(n))
             + ((analysis.shapes[n],) if n in added else ()), inputs=srcs, output=n,
             fused_relu=n in fused, folded_bn=folded.get(n), fused_add=added.get(n))
        for n, srcs in pending)
    values = {INPUT: analysis.input_shape, **{s.output: analysis.shapes[s.node] for s in steps}}
    params, buffers = [], []
    for n in analysis.order:
        info = analysis.info[n]
        params += [ParamSlot(n, p, _initializer(analysis, n, p)) for p in info.params]
        buffers += [ParamSlot(n, b, _initializer(analysis, n, b)) for b in info.buffers]
    return Plan(input_shape=analysis.input_shape, classes=classes, steps=steps,
                logits=logits if logits is not None else alias[analysis.output],
                alias=MappingProxyType(alias), value_shapes=MappingProxyType(values),
                params=tuple(params), buffers=tuple(buffers), layers=analysis.order,
                analysis=analysis, inference=inference)


def _initializer(analysis: Analysis, node: str, spec: ParamSpec) -> str:
    if spec.init != "fan":
        return spec.init
    consumer = _next_layer(analysis, node)
    while consumer is not None and consumer.type.init_transparent:
        consumer = _next_layer(analysis, consumer.id)
    return "he" if consumer is not None and consumer.type.init_gain == "he" else "glorot"


def _next_layer(analysis: Analysis, node: str) -> LayerNode | None:
    succ = list(analysis.graph.successors(node))
    return analysis.layer(succ[0]) if len(succ) == 1 else None


def _require_classifier(analysis: Analysis) -> int:
    """The number of classes the network's output scores; UsageError if it is no classifier."""
    shape = analysis.output_shape
    if len(shape) != 1:
        raise UsageError(
            f"the network ends in {'x'.join(map(str, shape))}, but training needs one score per class",
            hint="end the network with fc (or gap - fc)")
    if analysis.classes is not None and shape[0] != analysis.classes:
        raise UsageError(f"the network ends in {shape[0]} outputs but there are {analysis.classes} classes",
                         hint="end the network with a plain `fc`, which gets `classes` outputs")
    return shape[0]
