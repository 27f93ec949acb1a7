"""Static analysis of a layer graph: shapes, parameters, MACs, receptive field, memory.

Pure functions of shapes: nothing is allocated and nothing is compiled. Conventions:
one multiply-accumulate (MAC) = one multiply + one add, FLOPs = 2 x MACs, only conv and
fc count MACs; memory in float32 (4 bytes per value).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import networkx as nx

from .errors import SourceError
from .graph import INPUT, LayerNode
from .layers import InferContext, LayerError, LayerInfo, Shape
from .layers.merge import MergeError

BYTES = 4  # float32


@dataclass(frozen=True)
class ReceptiveField:
    """The input region one output position sees: size, jump (input pixels between
    neighbouring outputs) and start (centre of the first output's region, in input pixels,
    0-based)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def grow(self, window) -> "ReceptiveField":
        if window is None:
            return self
        size, jump, start = [], [], []
        for a in (0, 1):
            k, s, p = window.size[a], window.stride[a], window.pad[a]
            size.append(self.size[a] + (k - 1) * self.jump[a])
            start.append(self.start[a] + ((k - 1) / 2 - p) * self.jump[a])
            jump.append(self.jump[a] * s)
        return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]))


@dataclass(frozen=True)
class LayerRow:
    """One row of the summary."""

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
class Summary:
    """The whole static report of a network."""

    filename: str
    input_shape: Shape
    classes: int | None
    output_shape: Shape
    rows: tuple[LayerRow, ...]
    total_params: int
    buffer_values: int  # batch-norm running statistics (not learned)
    total_macs: int
    batch: int
    activation_bytes: int  # per image, all layer outputs
    inference_bytes: int  # weights + peak live activations at `batch`
    training_bytes: int  # at `batch`, SGD with momentum
    training_parts: dict

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def to_dict(self) -> dict:
        return {
            "file": self.filename,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "buffers": self.buffer_values,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "conventions": "1 MAC = 1 multiply + 1 add; FLOPs = 2 x MACs; only conv and fc count; "
                           "memory in float32 bytes",
            "batch": self.batch,
            "activation_bytes_per_image": self.activation_bytes,
            "inference_memory_bytes": self.inference_bytes,
            "training_memory_bytes": self.training_bytes,
            "training_memory": self.training_parts,
            "layers": [r.to_dict() for r in self.rows],
        }


def _prod(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _merge_message(node: LayerNode, err: MergeError, shapes: list[Shape], source: str) -> str:
    sym = "|" if node.type.name == "concat" else "+"
    parts = []
    for i, (span, shape) in enumerate(zip(node.branch_spans, shapes)):
        text = " ".join(source[span.start:span.end].split())
        text = text if len(text) <= 28 else text[:25] + "..."
        parts.append(f"branch {i + 1} ({text}) gives {'x'.join(map(str, shape))}")
    verb = "concatenated" if sym == "|" else "added"
    return f"branches cannot be {verb}: " + ", ".join(parts)


def infer(graph: nx.DiGraph, input_shape: Shape, classes: int | None, width: int,
          batch: int = 1, source: str = "", filename: str = "<string>") -> Summary:
    """Annotate every node with ``info`` and ``rf``; return the :class:`Summary`."""
    try:
        return _infer(graph, input_shape, classes, width, batch, source, filename)
    except SourceError as err:
        raise err.with_source(source, filename)


def _infer(graph, input_shape, classes, width, batch, source, filename) -> Summary:
    order = list(graph.nodes)  # insertion order is topological (the builder adds inputs first)
    fc_nodes = [n for n in order if n != INPUT and graph.nodes[n]["layer"].type.name == "fc"]
    last_fc = fc_nodes[-1] if fc_nodes else None
    output = graph.graph["output"]
    shapes: dict[str, Shape] = {INPUT: tuple(input_shape)}
    fields: dict[str, ReceptiveField] = {INPUT: ReceptiveField((1, 1), (1, 1), (0.0, 0.0))}
    downs: dict[str, int] = {INPUT: 0}
    rows: list[LayerRow] = []
    for n in order:
        if n == INPUT:
            continue
        node: LayerNode = graph.nodes[n]["layer"]
        srcs = list(graph.nodes[n]["inputs"])
        in_shapes = [shapes[u] for u in srcs]
        d = max(downs[u] for u in srcs) + (1 if node.type.downsamples(node.config) else 0)
        ctx = InferContext(width=width * 2 ** d, classes=classes, is_last_fc=(n == last_fc))
        if node.type.name == "softmax" and n != output:
            raise node.error(LayerError("softmax is only allowed as the last layer", "argument",
                                        hint="the loss applies softmax itself; remove it or move it to the end"))
        try:
            info: LayerInfo = node.type.infer(node.config, in_shapes, ctx)
        except MergeError as err:
            raise SourceError(_merge_message(node, err, in_shapes, source), node.span, "merge",
                              hint=err.hint, notes=node.notes()) from None
        except LayerError as err:
            raise node.error(err) from None
        downs[n] = d
        shapes[n] = info.out_shape
        base_rf = max((fields[u] for u in srcs), key=lambda r: r.size[0] * r.size[1])
        rf = base_rf.grow(info.window)
        fields[n] = rf
        graph.nodes[n]["info"] = info
        graph.nodes[n]["rf"] = rf
        rows.append(LayerRow(
            name=n, type=node.type.name, text=node.text, detail=info.detail,
            line=node.span.line, column=node.span.column, output_shape=info.out_shape,
            params=info.param_count, formula=info.formula, macs=info.macs, receptive_field=rf,
            activation_bytes=_prod(info.out_shape) * BYTES))
    graph.graph["shapes"] = shapes
    total_params = sum(r.params for r in rows)
    buffers = sum(p.size for n in order if n != INPUT for p in graph.nodes[n]["info"].buffers)
    act = sum(r.activation_bytes for r in rows)
    weights = (total_params + buffers) * BYTES
    peak = _peak_live_bytes(graph, order, shapes) * batch
    parts = {
        "weights": weights,
        "gradients": total_params * BYTES,
        "optimizer_state": total_params * BYTES,
        "activations": act * batch,
        "activation_gradients": act * batch,
        "input_batch": _prod(input_shape) * BYTES * batch,
        "note": "activations are kept for backward; optimizer state is SGD momentum "
                "(Adam keeps twice as much)",
    }
    training = sum(v for k, v in parts.items() if k != "note")
    return Summary(
        filename=filename, input_shape=tuple(input_shape), classes=classes,
        output_shape=shapes[output], rows=tuple(rows), total_params=total_params,
        buffer_values=buffers, total_macs=sum(r.macs for r in rows), batch=batch,
        activation_bytes=act, inference_bytes=weights + peak, training_bytes=training,
        training_parts=parts)


def _peak_live_bytes(graph: nx.DiGraph, order: list[str], shapes: dict[str, Shape]) -> int:
    """Largest sum of activations alive at once when layers run in ``order`` (per image)."""
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
