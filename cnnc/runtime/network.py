"""A compiled, executable network: parameters, an executor per batch size, and the Python API.

    >>> net = cnnc.compile_file("models/lenet5.cnn").network(seed=0)
    >>> logits = net.forward(x)                  # x: (N, 1, 32, 32) float32
    >>> loss, grads = net.loss_and_grads(x, y)   # grads["conv_1"]["w"] ...
    >>> net.get("conv_1", "w"); net.set("fc_3", "b", np.zeros(10))
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from ..errors import UsageError
from .executor import Executor
from ..lang.graph import INPUT
from .lower import Plan


class Network:
    """A lowered network's parameters in one flat array (and gradients in another), views
    by layer name, an executor per batch size, and the Python API."""

    def __init__(self, plan: Plan, seed: int = 0, dtype: str = "float32"):
        from ..kernels import memory
        from ..kernels.threads import configure
        from .notice import watch

        if dtype not in ("float32", "float64"):
            raise UsageError(f"dtype must be float32 or float64, got {dtype!r}")
        configure()
        watch()  # a line on stderr when the first kernel compiles (cold cache)
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.classes = plan.classes
        self.input_shape = plan.input_shape
        total = sum(p.spec.size for p in plan.params)
        self.theta = memory.zeros(total, self.dtype)
        self.grad = memory.zeros(total, self.dtype)
        self.buffer_flat = memory.zeros(max(sum(b.spec.size for b in plan.buffers), 1), self.dtype)
        self.params = self._views(self.theta, plan.params)
        self.grads = self._views(self.grad, plan.params)
        self.buffers = self._views(self.buffer_flat, plan.buffers)
        self.rng = np.random.default_rng(seed)
        self._executors: dict[tuple[int, bool], Executor] = {}
        self._inference: dict[int, Executor] = {}  # forward-only executors (batch norm folded)
        self._inspection: dict[int, Executor] = {}  # unfused executors for the visualizations
        self._scratch_grads = None  # their parameter gradients, apart from self.grad
        self.init_params(seed)

    @staticmethod
    def _views(flat: np.ndarray, slots) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        offset = 0
        for slot in slots:
            p = slot.spec
            out.setdefault(slot.node, {})[p.name] = flat[offset: offset + p.size].reshape(p.shape)
            offset += p.size
        return out

    # ---- parameters
    def init_params(self, seed: int) -> None:
        """Every parameter and buffer as its plan slot says (He-normal, Glorot-uniform,
        zeros or ones: see :mod:`cnnc.runtime.lower`), from ``seed``."""
        rng = np.random.default_rng(seed)
        for slot in self.plan.params + self.plan.buffers:
            p = slot.spec
            view = self.params.get(slot.node, {}).get(p.name)
            if view is None:
                view = self.buffers[slot.node][p.name]
            if slot.init == "zeros":
                view[...] = 0
            elif slot.init == "ones":
                view[...] = 1
            elif slot.init == "he":
                view[...] = rng.standard_normal(p.shape) * np.sqrt(2.0 / p.fan_in)
            else:
                limit = np.sqrt(6.0 / (p.fan_in + p.fan_out))
                view[...] = rng.uniform(-limit, limit, p.shape)
        self.rng = np.random.default_rng(seed + 1)

    def layer_names(self) -> list[str]:
        """Layers that have parameters or buffers, in order."""
        return [n for n in self.plan.layers if n in self.params or n in self.buffers]

    def _lookup(self, layer: str, name: str) -> np.ndarray:
        for table in (self.params, self.buffers):
            if layer in table and name in table[layer]:
                return table[layer][name]
        known = {n: sorted({*self.params.get(n, {}), *self.buffers.get(n, {})}) for n in self.layer_names()}
        if layer in known:
            raise UsageError(f"layer {layer} has no parameter {name!r}; it has {', '.join(known[layer])}")
        raise UsageError(f"no layer {layer!r} with parameters; layers: {', '.join(known)}")

    def get(self, layer: str, name: str) -> np.ndarray:
        """A copy of a parameter or buffer, e.g. ``get("conv_1", "w")`` (F, C, KH, KW)."""
        return self._lookup(layer, name).copy()

    def set(self, layer: str, name: str, value) -> None:
        """Overwrite a parameter or buffer with an array of the same shape."""
        view = self._lookup(layer, name)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise UsageError(f"{layer}.{name} has shape {view.shape}, got an array of shape {value.shape}")
        view[...] = value

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as ``{"layer.name": array}`` (copies)."""
        out = {}
        for table in (self.params, self.buffers):
            for layer, d in table.items():
                for name, v in d.items():
                    out[f"{layer}.{name}"] = v.copy()
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Load what :meth:`state` returned; every key must match in name and shape."""
        expected = {f"{layer}.{name}": v for table in (self.params, self.buffers)
                    for layer, d in table.items() for name, v in d.items()}
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise UsageError("the weights do not match this model: "
                             + (f"missing {', '.join(missing[:5])}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"unexpected {', '.join(extra[:5])}" if extra else ""))
        for key, view in expected.items():
            v = np.asarray(state[key])
            if v.shape != view.shape:
                raise UsageError(f"the weights do not match this model: {key} has shape {v.shape}, "
                                 f"the model needs {view.shape}")
        for key, view in expected.items():
            view[...] = state[key]

    @property
    def num_params(self) -> int:
        return int(self.theta.size)

    # ---- execution
    def executor(self, batch: int, need_input_grad: bool = False) -> Executor:
        """The executor (buffers and bound ops) for one batch size, made once and cached."""
        key = (batch, need_input_grad)
        ex = self._executors.get(key)
        if ex is None:
            ex = Executor(self.plan, batch, self.dtype, self.params, self.grads, self.buffers,
                          self.rng, need_input_grad)
            self._executors[key] = ex
        return ex

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = tuple(self.input_shape)
        if len(want) == 2 and x.ndim == 4 and x.shape[2] == 1:  # sequences stored as (N, C, 1, L)
            x = x.reshape(x.shape[0], x.shape[1], x.shape[3])
        if x.ndim == len(want):
            x = x[None]
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise UsageError(f"input batch has shape {x.shape}; the model needs (N, {', '.join(map(str, want))})")
        return x

    def _check_y(self, y, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"labels must be {n} integers, got an array of shape {y.shape} ({y.dtype})")
        if n and (y.min() < 0 or y.max() >= self.classes):
            raise UsageError(f"labels must lie in [0, {self.classes - 1}], got {y.min()}..{y.max()}")
        return y

    def inference_executor(self, batch: int) -> Executor:
        """The forward-only executor for one batch size (made once and cached): batch norms
        folded into the conv or fc before them (refolded from the current parameters at
        every forward), dropout skipped, no gradient buffers. A network whose inference
        plan would be the same as its training plan reuses :meth:`executor`."""
        if self._inference_plan is None:
            return self.executor(batch)
        ex = self._inference.get(batch)
        if ex is None:
            ex = Executor(self._inference_plan, batch, self.dtype, self.params, self.grads, self.buffers,
                          self.rng)
            self._inference[batch] = ex
        return ex

    @cached_property
    def _inference_plan(self) -> Plan | None:
        """The forward-only plan, or None where it would schedule what the training plan does."""
        from .lower import lower

        plan = lower(self.plan.analysis, inference=True)
        same = ([(s.node, s.fused_relu, s.folded_bn) for s in plan.steps]
                == [(s.node, s.fused_relu, s.folded_bn) for s in self.plan.steps])
        return None if same else plan

    def forward(self, x, training: bool = False, batch: int = 256) -> np.ndarray:
        """Logits (N, classes) for a batch of inputs (N, C, H, W), in chunks of ``batch``;
        inference mode (``training=False``) runs :meth:`inference_executor`."""
        x = self._check_x(x)
        out = np.empty((x.shape[0], self.classes), self.dtype)
        for i in range(0, x.shape[0], batch):
            chunk = x[i: i + batch]
            n = chunk.shape[0]
            ex = self.executor(n) if training else self.inference_executor(n)
            ex.input[...] = chunk
            out[i: i + chunk.shape[0]] = ex.forward(training)
        return out

    def predict_proba(self, x, batch: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the logits), inference mode."""
        from ..kernels.loss import softmax_forward

        logits = self.forward(x, training=False, batch=batch)
        probs = np.empty_like(logits)
        softmax_forward(logits, probs)
        return probs

    def loss_and_grads(self, x, y, training: bool = True, input_grad: bool = False):
        """Mean cross-entropy on one batch and the gradients ``{layer: {name: array}}``
        (copies); with ``input_grad`` also ``grads["input"]``, d loss / d x (saliency)."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        ex = self.executor(x.shape[0], need_input_grad=input_grad)
        ex.input[...] = x
        ex.labels[...] = y
        ex.forward(training)
        loss = ex.loss()
        ex.backward()
        grads = {layer: {k: v.copy() for k, v in d.items()} for layer, d in self.grads.items()}
        if input_grad:
            grads[INPUT] = ex.grads[INPUT].copy()
        return loss, grads

    def step(self, ex: Executor, training: bool = True) -> tuple[float, int]:
        """Forward, loss and backward on what is in ``ex``'s input and label buffers;
        the gradients land in ``self.grad``. Returns (loss, correct predictions)."""
        from ..kernels.loss import count_correct

        logits = ex.forward(training)
        loss = ex.loss()
        ex.backward()
        return loss, int(count_correct(logits, ex.labels))

    # ---- views inside the network (cnnc.viz): an executor without ReLU fusion, so every
    # layer's output has its own buffer and ReLUs can run guided; its parameter gradients go
    # to a scratch array, so the training gradients in self.grad are never touched.
    def inspection_executor(self, batch: int) -> Executor:
        """An executor for one batch size with ReLUs unfused and the input gradient on."""
        ex = self._inspection.get(batch)
        if ex is None:
            from .lower import lower

            unfused = lower(self.plan.analysis, fuse_relu=False)
            if self._scratch_grads is None:
                self._scratch_grads = self._views(np.zeros_like(self.grad), unfused.params)
            ex = Executor(unfused, batch, self.dtype, self.params, self._scratch_grads,
                          self.buffers, self.rng, need_input_grad=True)
            self._inspection[batch] = ex
        return ex

    def layer_outputs(self, x, layers, batch: int = 128) -> dict[str, np.ndarray]:
        """The inference-mode outputs of the layers named ``layers`` for inputs ``x`` (copies)."""
        x = self._check_x(x)
        out: dict[str, list] = {n: [] for n in layers}
        for i in range(0, x.shape[0], batch):
            chunk = x[i: i + batch]
            ex = self.inspection_executor(chunk.shape[0])
            ex.input[...] = chunk
            ex.forward(False)
            for n in layers:
                out[n].append(ex.value(n).copy())
        return {n: np.concatenate(v) for n, v in out.items()}

    def input_gradient(self, x, layer: str, dy, guided: bool = False):
        """Inference-mode forward of ``x``, then backward from ``layer``'s output with output
        gradient ``dy`` (its shape, or a function of the output giving it): returns (the
        layer's output, d <dy, output> / d x). ``guided`` applies the guided-ReLU rule."""
        x = self._check_x(x)
        ex = self.inspection_executor(x.shape[0])
        ex.input[...] = x
        ex.forward(False)
        value = ex.value(layer).copy()
        dy = np.asarray(dy(value) if callable(dy) else dy, self.dtype)
        if dy.shape != value.shape:
            raise UsageError(f"the output gradient has shape {dy.shape}; {layer}'s output is {value.shape}")
        ex.set_guided(guided)
        try:
            ex.backward_from(layer, dy)
        finally:
            ex.set_guided(False)
        return value, ex.grads[INPUT].copy()
