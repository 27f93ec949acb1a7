"""Static analysis of a layer graph: shapes, parameters, MACs, receptive field.

Pure functions of shapes: nothing is allocated and nothing is compiled, and the graph is
only read. :func:`infer` returns a frozen :class:`Analysis`; memory at a given batch size is
a report on it (:meth:`Analysis.memory`). Conventions: one multiply-accumulate (MAC) = one
multiply + one add, FLOPs = 2 x MACs, only conv and fc count MACs; memory in float32
(4 bytes per value).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Mapping

from ..errors import OptionalDoesNotFit, SourceError
from .graph import INPUT, LayerGraph, LayerNode
from ..layers import InferContext, LayerError, LayerInfo, Shape
from ..layers.merge import MergeError

BYTES = 4  # float32


@dataclass(frozen=True)
class ReceptiveField:
    """The input region one output position sees: size, jump (input pixels between
    neighbouring outputs) and start (centre of the first output's region, in input pixels,
    0-based)."""

    size: tuple[int, ...]  # one entry per spatial axis: (H, W) for images, (L,) for sequences
    jump: tuple[int, ...]
    start: tuple[float, ...]

    def grow(self, window) -> "ReceptiveField":
        if window is None:
            return self
        size, jump, start = [], [], []
        for a in range(len(self.size)):
            k, s, p = window.size[a], window.stride[a], window.pad[a]
            size.append(self.size[a] + (k - 1) * self.jump[a])
            start.append(self.start[a] + ((k - 1) / 2 - p) * self.jump[a])
            jump.append(self.jump[a] * s)
        return ReceptiveField(tuple(size), tuple(jump), tuple(start))


@dataclass(frozen=True)
class LayerRow:
    """One layer of the analysis, as the summary table shows it."""

    name: str
    type: str
    text: str
    detail: str
    line: int
    column: int
    output_shape: Shape
    params: int
    formula: str
    macs: int
    receptive_field: ReceptiveField
    activation_bytes: int  # per image

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape)
        rf = self.receptive_field
        d["receptive_field"] = {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start)}
        return d


@dataclass(frozen=True)
class Memory:
    """Memory of a network at one batch size, in bytes (float32)."""

    batch: int
    inference: int  # weights + peak live activations
    training: int  # the sum of `parts`
    parts: Mapping[str, object]  # weights, gradients, optimizer state, activations, ...


@dataclass(frozen=True)
class Analysis:
    """What static analysis knows about a network: per node its layer, shape, info and
    receptive field, and the totals. Nodes are in execution (topological) order."""

    graph: LayerGraph  # frozen; read only
    input_shape: Shape
    classes: int | None
    output: str  # the last node
    order: tuple[str, ...]  # every layer node, without INPUT
    shapes: Mapping[str, Shape]  # node (and INPUT) -> output shape, without the batch axis
    info: Mapping[str, LayerInfo]
    fields: Mapping[str, ReceptiveField]
    rows: tuple[LayerRow, ...]
    total_params: int
    buffer_values: int  # batch-norm running statistics (not learned)
    total_macs: int
    activation_bytes: int  # per image, all layer outputs
    peak_live_bytes: int  # per image, the most activation memory alive at once

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    def layer(self, node: str) -> LayerNode:
        return self.graph.nodes[node]["layer"]

    def inputs(self, node: str) -> tuple[str, ...]:
        return self.graph.nodes[node]["inputs"]

    def add_absorber(self, node: str, readers: Mapping[str, int]) -> str | None:
        """The layer that computes the add ``node`` in training plans (cnnc.runtime.lower's fusion
        rule, also counted by :attr:`stored_activation_bytes`): a two-input add whose first
        input is a layer that can add (``absorbs_add``: bn) read by nothing else
        (``readers``: value -> how many step inputs read it). None for any other node."""
        ins = self.inputs(node)
        if not self.layer(node).type.sums_inputs or len(ins) != 2:
            return None
        p = ins[0]
        if p != INPUT and ins[1] != p and self.layer(p).type.absorbs_add and readers.get(p) == 1:
            return p
        return None

    @property
    def stored_activation_bytes(self) -> int:
        """Per image, the layer outputs a training step keeps in buffers of their own: every
        layer's output except a ReLU that runs inside the conv or fc before it (the
        lowering's fusion rule, cnnc.runtime.lower: ``fuses_into_producer`` after an
        ``absorbs_relu`` layer that feeds nothing else), a two-input add computed inside the
        layer before it (``absorbs_add``, that layer feeding nothing else: they share one
        buffer) and a softmax folded into the loss."""
        consumers: dict[str, int] = {}
        for n in self.order:
            for s in self.inputs(n):
                consumers[s] = consumers.get(s, 0) + 1
        total = 0
        for n in self.order:
            t = self.layer(n).type
            if t.fused_into_loss:
                continue
            if self.add_absorber(n, consumers) is not None:
                continue
            if t.fuses_into_producer:
                (src,) = self.inputs(n)
                if src != INPUT and self.layer(src).type.absorbs_relu and consumers.get(src) == 1:
                    continue
            total += _prod(self.shapes[n]) * BYTES
        return total

    @property
    def saved_bytes(self) -> int:
        """Per image, what ops keep for backward besides their outputs (pooling indices,
        dropout masks: ``saved_bytes_per_output``)."""
        return sum(_prod(self.shapes[n]) * self.layer(n).type.saved_bytes_per_output for n in self.order)

    def memory(self, batch: int) -> Memory:
        """Inference and training memory at ``batch`` (training: SGD with momentum)."""
        weights = (self.total_params + self.buffer_values) * BYTES
        stored = self.stored_activation_bytes
        parts = {
            "weights": weights,
            "gradients": self.total_params * BYTES,
            "optimizer_state": self.total_params * BYTES,
            "activations": stored * batch,
            "activation_gradients": stored * batch,
            "saved_for_backward": self.saved_bytes * batch,
            "input_batch": _prod(self.input_shape) * BYTES * batch,
            "note": "activations are kept for backward (a ReLU fused into its conv or fc "
                    "shares its buffer); optimizer state is SGD momentum (Adam keeps twice as "
                    "much); kernel workspaces (im2col, Winograd: a few MiB) are not counted",
        }
        training = sum(v for k, v in parts.items() if k != "note")
        return Memory(batch, weights + self.peak_live_bytes * batch, training, MappingProxyType(parts))


def _prod(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _merge_message(node: LayerNode, err: MergeError, shapes: list[Shape], source: str) -> str:
    parts = []
    for i, (span, shape) in enumerate(zip(node.branch_spans, shapes)):
        text = " ".join(source[span.start:span.end].split())
        text = text if len(text) <= 28 else text[:25] + "..."
        parts.append(f"branch {i + 1} ({text}) gives {'x'.join(map(str, shape))}")
    return f"branches cannot be {node.type.merge_verb}: " + ", ".join(parts)


def infer(graph: LayerGraph, input_shape: Shape, classes: int | None, width: int,
          source: str = "", filename: str = "<string>") -> Analysis:
    """Shapes, parameters, MACs and receptive field of every node. Raises SourceError."""
    try:
        return _infer(graph, tuple(input_shape), classes, width, source)
    except SourceError as err:
        raise err.with_source(source, filename)


def _infer(graph: LayerGraph, input_shape: Shape, classes: int | None, width: int,
           source: str) -> Analysis:
    order = tuple(n for n in graph.nodes if n != INPUT)  # insertion order is topological
    layer = {n: graph.nodes[n]["layer"] for n in order}
    takes_classes = [n for n in order if layer[n].type.takes_classes]
    last_classifier = takes_classes[-1] if takes_classes else None
    output = graph.graph["output"]
    shapes: dict[str, Shape] = {INPUT: input_shape}
    rank = max(len(input_shape) - 1, 1)  # spatial axes: 2 for images, 1 for sequences
    fields: dict[str, ReceptiveField] = {INPUT: ReceptiveField((1,) * rank, (1,) * rank, (0.0,) * rank)}
    downs: dict[str, int] = {INPUT: 0}
    infos: dict[str, LayerInfo] = {}
    rows: list[LayerRow] = []
    for n in order:
        node: LayerNode = layer[n]
        srcs = list(graph.nodes[n]["inputs"])
        in_shapes = [shapes[u] for u in srcs]
        d = max(downs[u] for u in srcs) + (1 if node.type.downsamples(node.config) else 0)
        ctx = InferContext(width=width * 2 ** d, classes=classes, is_last_fc=(n == last_classifier))
        if node.type.only_last and n != output:
            raise node.error(LayerError(f"{node.type.name} is only allowed as the last layer", "argument",
                                        hint=node.type.only_last))
        try:
            info: LayerInfo = node.type.infer(node.config, in_shapes, ctx)
        except MergeError as err:
            raise SourceError(_merge_message(node, err, in_shapes, source), node.span, "merge",
                              hint=err.hint, notes=node.notes()) from None
        except LayerError as err:
            key = graph.nodes[n].get("optional")
            if key is not None and err.kind in ("fit", "empty"):  # pool? that does not fit: left out
                e = node.error(err)
                raise OptionalDoesNotFit(e.message, e.span, e.kind, hint=e.hint, notes=e.notes,
                                         key=key) from None
            raise node.error(err) from None
        downs[n] = d
        shapes[n] = info.out_shape
        base_rf = max((fields[u] for u in srcs), key=lambda r: _prod(r.size))
        fields[n] = base_rf.grow(info.window)
        infos[n] = info
        rows.append(LayerRow(
            name=n, type=node.type.name, text=node.text, detail=info.detail,
            line=node.span.line, column=node.span.column, output_shape=info.out_shape,
            params=info.param_count, formula=info.formula, macs=info.macs,
            receptive_field=fields[n], activation_bytes=_prod(info.out_shape) * BYTES))
    return Analysis(
        graph=graph, input_shape=input_shape, classes=classes, output=output, order=order,
        shapes=MappingProxyType(shapes), info=MappingProxyType(infos),
        fields=MappingProxyType(fields), rows=tuple(rows),
        total_params=sum(r.params for r in rows),
        buffer_values=sum(b.size for i in infos.values() for b in i.buffers),
        total_macs=sum(r.macs for r in rows),
        activation_bytes=sum(r.activation_bytes for r in rows),
        peak_live_bytes=_peak_live_bytes(graph, (INPUT, *order), shapes))


def _peak_live_bytes(graph: LayerGraph, order: tuple[str, ...], shapes: Mapping[str, Shape]) -> int:
    """Largest sum of activations alive at once when ``order`` (the input first) runs, per image."""
    position = {n: i for i, n in enumerate(order)}
    freed_after: dict[int, list[str]] = {}
    for n in order:
        last = max((position[v] for v in graph.successors(n)), default=position[n])
        freed_after.setdefault(last, []).append(n)
    live = peak = 0
    for i, n in enumerate(order):
        live += _prod(shapes[n])
        peak = max(peak, live)
        for m in freed_after.get(i, ()):
            live -= _prod(shapes[m])
    return peak * BYTES
