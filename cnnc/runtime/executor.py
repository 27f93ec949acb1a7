"""Runs a :class:`~cnnc.runtime.lower.Plan` at one batch size: forward, loss, backward, no allocation.

The executor owns the value and gradient buffers of one batch size and the ops bound to
them; the parameters, their gradients and the buffers (``params``/``grads``/``buffers``:
node -> {name: view}) are views into the network's flat arrays, shared by every executor
of that network.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..lang.graph import INPUT
from .lower import Plan


class Executor:
    """Buffers and bound ops for ``batch`` images; see :meth:`forward`, :meth:`loss`,
    :meth:`backward`. Fill :attr:`input` (and :attr:`labels`) before a step."""

    def __init__(self, plan: Plan, batch: int, dtype, params, grads, buffers, rng,
                 need_input_grad: bool = False):
        from ..kernels import loss as loss_kernels
        from ..kernels import memory
        from ..kernels.elementwise import accumulate

        self.plan = plan
        self.batch = batch
        self.dtype = np.dtype(dtype)
        self._loss = loss_kernels
        self._accumulate = accumulate
        shapes = plan.value_shapes
        self.values: dict[str, np.ndarray] = {INPUT: memory.zeros((batch, *shapes[INPUT]), self.dtype)}
        self.grads: dict[str, np.ndarray | None] = {INPUT: None}
        if need_input_grad:
            self.grads[INPUT] = memory.zeros((batch, *shapes[INPUT]), self.dtype)
        self.ops = {}
        self._folds: list[tuple] = []  # inference plans: (w, b, bn params..., folded w, folded b)
        for step in plan.steps:
            n = step.node
            cfg, own = step.layer.config, params.get(n, {})
            if step.folded_bn is not None:
                cfg, own = self._fold_slot(step, cfg, own, params, buffers)
            op = step.layer.type.make_op(cfg, step.info, list(step.in_shapes))
            op.relu = step.fused_relu
            op.bind(batch, self.dtype, own, grads.get(n, {}), buffers.get(n, {}), rng)
            self.ops[n] = op
            self.values[step.output] = memory.zeros((batch, *shapes[step.output]), self.dtype)
            # an inference plan has no backward: no gradient buffers
            self.grads[step.output] = None if plan.inference else memory.zeros((batch, *shapes[step.output]), self.dtype)
        # a value read by several step inputs gets its gradient summed: the first reader's
        # backward writes it, later ones write a scratch buffer that is then accumulated
        uses = plan.uses
        self.scratch: dict[tuple, np.ndarray] = {}
        self._orders: dict[tuple, tuple] = {}  # backward orders of step lists (by node names)
        for step in plan.steps:
            for slot, s in enumerate(step.inputs):
                if uses.get(s, 0) > 1 and self.grads.get(s) is not None:
                    key = (self.values[s].shape, slot)
                    if key not in self.scratch:
                        self.scratch[key] = memory.zeros(self.values[s].shape, self.dtype)
        self.logits = self.values[plan.logits]
        self.probs = memory.zeros(self.logits.shape, self.dtype)
        self.labels = np.zeros(batch, np.int64)
        self.label_smoothing = 0.0  # > 0: loss and backward use smoothed targets
        self._calls: tuple | None = None  # inference-mode forward, bound (see forward)

    @property
    def input(self) -> np.ndarray:
        return self.values[INPUT]

    def _fold_slot(self, step, cfg, own, params, buffers):
        """The config (with a bias) and folded weight and bias arrays of a conv or fc that a
        batch norm folds into; :meth:`refold` fills them from the current parameters."""
        import dataclasses

        from ..kernels import memory

        bn = self.plan.analysis.layer(step.folded_bn)
        w, b = own["w"], own.get("b")
        wf = memory.empty(w.shape, w.dtype)
        bf = memory.empty(w.shape[0], self.dtype)
        p, s = params[bn.id], buffers[bn.id]
        self._folds.append((w.reshape(w.shape[0], -1), b if b is not None else bf, b is not None,
                            p["gamma"], p["beta"], s["running_mean"], s["running_var"],
                            float(bn.config.eps), wf.reshape(w.shape[0], -1), bf))
        return dataclasses.replace(cfg, bias=True), {"w": wf, "b": bf}

    def refold(self) -> None:
        """Fold the batch norms into the weights and biases before them, from the current
        parameters and running statistics (inference plans; :meth:`forward` calls it)."""
        from ..kernels.norm import fold_batchnorm

        for args in self._folds:
            fold_batchnorm(*args)

    def forward(self, training: bool) -> np.ndarray:
        """The logits of what :attr:`input` holds. In inference mode (``training=False``) the
        steps run as bound kernel calls (:meth:`cnnc.layers.base.Op.inference_call`, made at
        the first such forward): the views, kernel paths and work split of every step are
        decided once per executor, not at every call."""
        values = self.values
        if not training:
            if self.plan.inference:
                self.refold()  # from the current parameters: folded weights cannot go stale
            for fn, args in self.inference_calls():
                fn(*args)
            return self.logits
        if self.plan.inference:
            raise UsageError("an inference plan runs only in inference mode")
        for step in self.plan.steps:
            self.ops[step.node].forward([values[s] for s in step.inputs], values[step.output], training)
        return self.logits

    def inference_calls(self) -> tuple:
        """The inference-mode forward as ``(fn, args)`` per scheduled step, in order (made
        once): running ``fn(*args)`` for each, after refolding an inference plan's batch
        norms, is :meth:`forward` with ``training=False``."""
        if self._calls is None:
            values = self.values
            self._calls = tuple(
                self.ops[step.node].inference_call([values[s] for s in step.inputs], values[step.output])
                for step in self.plan.steps)
        return self._calls

    def loss(self) -> float:
        """Mean softmax cross-entropy of the logits against ``self.labels`` (smoothed by
        :attr:`label_smoothing` where it is > 0)."""
        if self.label_smoothing > 0:
            return float(self._loss.smoothed_xent_forward(self.logits, self.labels, self.probs,
                                                           self.label_smoothing))
        return float(self._loss.softmax_xent_forward(self.logits, self.labels, self.probs))

    def backward(self) -> None:
        """Gradients of the last :meth:`loss` w.r.t. every parameter (and the input)."""
        if self.plan.inference:
            raise UsageError("an inference plan has no backward pass; use the training executor")
        if self.label_smoothing > 0:
            self._loss.smoothed_xent_backward(self.probs, self.labels, self.grads[self.plan.logits],
                                              self.label_smoothing)
        else:
            self._loss.softmax_xent_backward(self.probs, self.labels, self.grads[self.plan.logits])
        self._run_backward(self.plan.steps)

    def value(self, node: str) -> np.ndarray:
        """The buffer holding layer ``node``'s output after :meth:`forward` (with fusions,
        a conv or fc followed by its ReLU holds the ReLU's output, and a bn that computes a
        residual add holds the add's; plans lowered with ``fuse_relu=False``, as
        :meth:`cnnc.runtime.network.Network.inspection_executor` uses, keep every layer's own)."""
        return self.values[self.plan.alias[node]]

    def backward_from(self, node: str, dy: np.ndarray) -> None:
        """Backward from ``node``'s output with output gradient ``dy`` (after a forward):
        only the steps ``node`` depends on run; the input gradient lands in
        ``grads[INPUT]`` (when the executor was made with ``need_input_grad``)."""
        key = self.plan.alias[node]
        if key == INPUT:
            raise UsageError("the backward pass must start at a layer, not at the input")
        self.grads[key][...] = dy
        live = {key}
        steps = []
        for step in reversed(self.plan.steps):
            if step.output in live:
                live.update(step.inputs)
                steps.append(step)
        self._run_backward(tuple(reversed(steps)))

    def set_guided(self, on: bool) -> None:
        """Guided backpropagation (Springenberg et al. 2015): every ReLU's backward also drops
        negative output gradients. Needs a plan without fused ReLUs."""
        if on and self.plan.fused_relu:
            raise UsageError("guided backpropagation needs a plan without fused ReLUs "
                             "(lower(analysis, fuse_relu=False))")
        for op in self.ops.values():
            if hasattr(op, "guided"):
                op.guided = on

    def _backward_order(self, steps) -> tuple:
        """The order of ``steps``' backward passes: each after every step reading its output
        (a reverse topological order), and of the steps ready, the one scheduled first in the
        forward pass. Where branches meet, the first-written branch (a residual block's
        main path) runs first and writes the shared gradient; the last (the shortcut, whose
        strided 1x1 kernel writes a quarter of the positions) adds to it."""
        key = tuple(s.node for s in steps)
        order = self._orders.get(key)
        if order is None:
            import heapq

            index = {s.output: i for i, s in enumerate(steps)}
            readers = [0] * len(steps)
            for s in steps:
                for v in set(s.inputs):
                    if v in index:
                        readers[index[v]] += 1
            ready = [i for i, n in enumerate(readers) if n == 0]
            heapq.heapify(ready)
            out = []
            while ready:
                i = heapq.heappop(ready)
                out.append(steps[i])
                for v in set(steps[i].inputs):
                    j = index.get(v)
                    if j is not None:
                        readers[j] -= 1
                        if readers[j] == 0:
                            heapq.heappush(ready, j)
            order = self._orders[key] = tuple(out)
        return order

    def _run_backward(self, steps) -> None:
        """The backward of ``steps`` (in :meth:`_backward_order`), their output gradients
        already set; a value read by several inputs gets the sum of their gradients: the
        first backward to reach it writes it, later ones add to it (:meth:`Op.adds_dx`) or
        write a scratch buffer that is then added."""
        written: dict[str, int] = {}
        values, grads = self.values, self.grads
        for step in self._backward_order(steps):
            op = self.ops[step.node]
            targets = []
            pending = []
            adds = []
            for slot, s in enumerate(step.inputs):
                g = grads.get(s)
                add = False
                if g is None:
                    targets.append(None)
                elif written.get(s, 0) == 0 and s not in step.inputs[:slot]:
                    targets.append(g)
                    written[s] = 1
                elif s not in step.inputs[:slot] and op.adds_dx(slot):
                    targets.append(g)
                    add = True
                else:
                    buf = self.scratch[(g.shape, slot)]
                    targets.append(buf)
                    pending.append((g, buf))
                adds.append(add)
            xs = [values[s] for s in step.inputs]
            if any(adds):
                op.backward(xs, values[step.output], grads[step.output], targets, add=tuple(adds))
            else:
                op.backward(xs, values[step.output], grads[step.output], targets)
            for g, buf in pending:
                self._accumulate(g.reshape(-1), buf.reshape(-1))
