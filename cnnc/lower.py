"""Layer graph -> executable program: schedule, fusions, buffer plan.

* **Schedule**: the graph's topological (insertion) order.
* **Fusions**: a ReLU that is the only consumer of a conv or fc runs inside that layer's
  kernel (bias is always fused); a final softmax is fused into the cross-entropy loss.
  Concatenation copies its branches into channel slices: with batch-first NCHW buffers
  a channel slice is strided, and the kernels write contiguous outputs, so branches do
  not write into the concat buffer directly.
* **Buffers**: one value and one gradient buffer per scheduled node, allocated once per
  batch size (:class:`Program`) and reused by every step. A node feeding several
  consumers gets its gradient summed: the first consumer's backward writes it, later
  ones write a scratch buffer that is then accumulated.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from .errors import UsageError
from .graph import INPUT, LayerNode

RELU_FUSABLE = {"conv", "fc"}


@dataclass(frozen=True)
class Step:
    node: str  # the graph node whose op runs
    inputs: tuple[str, ...]  # value keys of its inputs (INPUT for the network input)
    output: str  # its own value key


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    logits: str  # value key of the logits (the input of a final softmax)
    fused_relu: frozenset[str]  # conv/fc nodes that apply the following ReLU
    alias: dict  # graph node -> the value key that holds its output


def plan(graph: nx.DiGraph, fuse_relu: bool = True) -> Plan:
    """Schedule and fuse; no arrays yet. ``fuse_relu=False`` (viz hook) keeps every ReLU
    a step of its own, so each layer's output has its own buffer (cnnc.viz)."""
    order = [n for n in graph.nodes if n != INPUT]
    output = graph.graph["output"]
    consumers: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for n in order:
        for src in graph.nodes[n]["inputs"]:
            consumers[src].append(n)
    alias: dict[str, str] = {INPUT: INPUT}
    fused: set[str] = set()
    steps: list[Step] = []
    logits = None
    for n in order:
        node: LayerNode = graph.nodes[n]["layer"]
        srcs = tuple(alias[s] for s in graph.nodes[n]["inputs"])
        kind = node.type.name
        if kind == "softmax":
            alias[n] = srcs[0]
            logits = srcs[0]
            continue
        if kind == "relu":
            (src,) = graph.nodes[n]["inputs"]
            if (fuse_relu and src != INPUT and graph.nodes[src]["layer"].type.name in RELU_FUSABLE
                    and consumers[src] == [n] and alias[src] == src and src not in fused):
                fused.add(src)
                alias[n] = src
                continue
        alias[n] = n
        steps.append(Step(n, srcs, n))
    if logits is None:
        logits = alias[output]
    return Plan(tuple(steps), logits, frozenset(fused), alias)


class Program:
    """A plan with buffers for one batch size: forward, loss, backward, no allocation.

    ``params``/``grads``/``buffers`` map node -> {name: view}; they are views into the
    network's flat arrays, shared by every program of that network.
    """

    def __init__(self, graph: nx.DiGraph, the_plan: Plan, batch: int, dtype, params, grads, buffers,
                 rng, need_input_grad: bool = False):
        from .kernels import loss as loss_kernels
        from .kernels.elementwise import accumulate

        self.plan = the_plan
        self.batch = batch
        self.dtype = np.dtype(dtype)
        self._loss = loss_kernels
        self._accumulate = accumulate
        shapes = graph.graph["shapes"]
        self.values: dict[str, np.ndarray] = {INPUT: np.zeros((batch, *shapes[INPUT]), self.dtype)}
        self.grads: dict[str, np.ndarray | None] = {INPUT: None}
        if need_input_grad:
            self.grads[INPUT] = np.zeros((batch, *shapes[INPUT]), self.dtype)
        self.ops = {}
        for step in the_plan.steps:
            n = step.node
            node: LayerNode = graph.nodes[n]["layer"]
            info = graph.nodes[n]["info"]
            in_shapes = [shapes[s] for s in graph.nodes[n]["inputs"]]
            op = node.type.make_op(node.config, info, in_shapes)
            op.relu = n in the_plan.fused_relu
            op.bind(batch, self.dtype, params.get(n, {}), grads.get(n, {}), buffers.get(n, {}), rng)
            self.ops[n] = op
            self.values[n] = np.zeros((batch, *shapes[n]), self.dtype)
            self.grads[n] = np.zeros((batch, *shapes[n]), self.dtype)
        # how many times each value is consumed (its gradient is a sum over consumers)
        uses: dict[str, int] = {}
        for step in the_plan.steps:
            for s in step.inputs:
                uses[s] = uses.get(s, 0) + 1
        self.uses = uses
        self.scratch: dict[tuple, np.ndarray] = {}
        for step in the_plan.steps:
            for slot, s in enumerate(step.inputs):
                if uses.get(s, 0) > 1 and self.grads.get(s) is not None:
                    key = (self.values[s].shape, slot)
                    if key not in self.scratch:
                        self.scratch[key] = np.zeros(self.values[s].shape, self.dtype)
        k = shapes[graph.graph["output"]][0] if the_plan.logits != INPUT else None
        self.logits = self.values[the_plan.logits]
        self.probs = np.zeros(self.logits.shape, self.dtype)
        self.labels = np.zeros(batch, np.int64)
        self.classes = k

    @property
    def input(self) -> np.ndarray:
        return self.values[INPUT]

    def forward(self, training: bool) -> np.ndarray:
        values = self.values
        for step in self.plan.steps:
            self.ops[step.node].forward([values[s] for s in step.inputs], values[step.output], training)
        return self.logits

    def loss(self) -> float:
        """Mean softmax cross-entropy of the logits against ``self.labels``."""
        return float(self._loss.softmax_xent_forward(self.logits, self.labels, self.probs))

    def backward(self) -> None:
        """Gradients of the last :meth:`loss` w.r.t. every parameter (and the input)."""
        self._loss.softmax_xent_backward(self.probs, self.labels, self.grads[self.plan.logits])
        written: dict[str, int] = {}
        values, grads = self.values, self.grads
        for step in reversed(self.plan.steps):
            targets = []
            pending = []
            for slot, s in enumerate(step.inputs):
                g = grads.get(s)
                if g is None:
                    targets.append(None)
                elif written.get(s, 0) == 0 and s not in step.inputs[:slot]:
                    targets.append(g)
                    written[s] = 1
                else:
                    buf = self.scratch[(g.shape, slot)]
                    targets.append(buf)
                    pending.append((g, buf))
            self.ops[step.node].backward([values[s] for s in step.inputs], values[step.output],
                                         grads[step.output], targets)
            for g, buf in pending:
                self._accumulate(g.reshape(-1), buf.reshape(-1))

    # ---- viz hooks: intermediate values, backward from any layer, guided ReLU (cnnc.viz)
    def value(self, node: str) -> np.ndarray:  # viz hook
        """The buffer holding graph node ``node``'s output after :meth:`forward`. In a plan
        with fused ReLUs a conv/fc followed by its ReLU holds the ReLU's output."""
        return self.values[self.plan.alias[node]]

    def backward_from(self, node: str, dy: np.ndarray) -> None:  # viz hook
        """Backward from ``node``'s output with output gradient ``dy`` (after a forward):
        only the steps ``node`` depends on run; the input gradient lands in
        ``grads[INPUT]`` (when the program was made with ``need_input_grad``)."""
        key = self.plan.alias[node]
        if key == INPUT:
            raise UsageError("the backward pass must start at a layer, not at the input")
        self.grads[key][...] = dy
        live = {key}
        written: dict[str, int] = {}
        values, grads = self.values, self.grads
        for step in reversed(self.plan.steps):
            if step.output not in live:
                continue
            live.update(step.inputs)
            targets, pending = [], []
            for slot, s in enumerate(step.inputs):
                g = grads.get(s)
                if g is None:
                    targets.append(None)
                elif written.get(s, 0) == 0 and s not in step.inputs[:slot]:
                    targets.append(g)
                    written[s] = 1
                else:
                    buf = self.scratch[(g.shape, slot)]
                    targets.append(buf)
                    pending.append((g, buf))
            self.ops[step.node].backward([values[s] for s in step.inputs], values[step.output],
                                         grads[step.output], targets)
            for g, buf in pending:
                self._accumulate(g.reshape(-1), buf.reshape(-1))

    def set_guided(self, on: bool) -> None:  # viz hook
        """Guided backpropagation (Springenberg et al. 2015): every ReLU's backward also drops
        negative output gradients. Needs a plan without fused ReLUs."""
        if on and self.plan.fused_relu:
            raise UsageError("guided backpropagation needs a plan without fused ReLUs (plan(graph, fuse_relu=False))")
        for op in self.ops.values():
            if hasattr(op, "guided"):
                op.guided = on


def require_classifier(graph: nx.DiGraph, classes: int | None) -> int:
    """The number of classes the network's output scores; UsageError if it is no classifier."""
    shape = graph.graph["shapes"][graph.graph["output"]]
    if len(shape) != 1:
        raise UsageError(
            f"the network ends in {'x'.join(map(str, shape))}, but training needs one score per class",
            hint="end the network with fc (or gap - fc)")
    if classes is not None and shape[0] != classes:
        raise UsageError(f"the network ends in {shape[0]} outputs but there are {classes} classes",
                         hint="end the network with a plain `fc`, which gets `classes` outputs")
    return shape[0]
