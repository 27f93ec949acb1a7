"""A compiled, executable network: parameters, programs per batch size, and the Python API.

    >>> net = cnnc.compile_file("models/lenet5.cnn").network(seed=0)
    >>> logits = net.forward(x)                  # x: (N, 1, 32, 32) float32
    >>> loss, grads = net.loss_and_grads(x, y)   # grads["conv_1"]["w"] ...
    >>> net.get("conv_1", "w"); net.set("fc_3", "b", np.zeros(10))
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError
from .graph import INPUT
from .lower import Plan, Program, plan, require_classifier

if TYPE_CHECKING:
    from .compiler import Model

ACTIVATIONS_AFTER = {"relu": "he", "leaky": "he"}


def _consumer_kind(graph, node: str) -> str | None:
    succ = list(graph.successors(node))
    if len(succ) != 1:
        return None
    nxt = graph.nodes[succ[0]]["layer"].type.name
    if nxt == "bn":  # conv - bn - relu: the activation after the normalization decides
        return _consumer_kind(graph, succ[0])
    return nxt


class Network:
    """Parameters in one flat array (and gradients in another), views by layer name."""

    def __init__(self, model: "Model", seed: int = 0, dtype: str = "float32"):
        from .kernels.runtime import configure

        if dtype not in ("float32", "float64"):
            raise UsageError(f"dtype must be float32 or float64, got {dtype!r}")
        configure()
        self.model = model
        self.graph = model.graph
        self.dtype = np.dtype(dtype)
        self.plan: Plan = plan(self.graph)
        self.classes = require_classifier(self.graph, model.classes)
        specs = []  # (node, ParamSpec)
        bspecs = []
        for n in self.graph.nodes:
            if n == INPUT:
                continue
            info = self.graph.nodes[n]["info"]
            specs += [(n, p) for p in info.params]
            bspecs += [(n, b) for b in info.buffers]
        self.param_specs = specs
        self.buffer_specs = bspecs
        total = sum(p.size for _, p in specs)
        self.theta = np.zeros(total, self.dtype)
        self.grad = np.zeros(total, self.dtype)
        self.buffer_flat = np.zeros(max(sum(b.size for _, b in bspecs), 1), self.dtype)
        self.params = self._views(self.theta, specs)
        self.grads = self._views(self.grad, specs)
        self.buffers = self._views(self.buffer_flat, bspecs)
        self.rng = np.random.default_rng(seed)
        self._programs: dict[tuple[int, bool], Program] = {}
        self.init_params(seed)

    @staticmethod
    def _views(flat: np.ndarray, specs) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        offset = 0
        for node, p in specs:
            out.setdefault(node, {})[p.name] = flat[offset: offset + p.size].reshape(p.shape)
            offset += p.size
        return out

    # ---- parameters
    def init_params(self, seed: int) -> None:
        """He-normal weights before ReLU-family activations, Glorot-uniform elsewhere;
        zero biases; batch norm gamma 1, beta 0, running mean 0, running variance 1."""
        rng = np.random.default_rng(seed)
        for node, p in self.param_specs + self.buffer_specs:
            view = self.params.get(node, {}).get(p.name)
            if view is None:
                view = self.buffers[node][p.name]
            if p.init == "zeros":
                view[...] = 0
            elif p.init == "ones":
                view[...] = 1
            else:
                after = _consumer_kind(self.graph, node)
                if ACTIVATIONS_AFTER.get(after) == "he":
                    view[...] = rng.standard_normal(p.shape) * np.sqrt(2.0 / p.fan_in)
                else:
                    limit = np.sqrt(6.0 / (p.fan_in + p.fan_out))
                    view[...] = rng.uniform(-limit, limit, p.shape)
        self.rng = np.random.default_rng(seed + 1)

    def layer_names(self) -> list[str]:
        """Layers that have parameters or buffers, in order."""
        return [n for n in self.graph.nodes if n in self.params or n in self.buffers]

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
    def program(self, batch: int, need_input_grad: bool = False) -> Program:
        """The program (buffers) for one batch size, made once and cached."""
        key = (batch, need_input_grad)
        prog = self._programs.get(key)
        if prog is None:
            prog = Program(self.graph, self.plan, batch, self.dtype, self.params, self.grads,
                           self.buffers, self.rng, need_input_grad)
            self._programs[key] = prog
        return prog

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        want = tuple(self.model.input_shape)
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

    def forward(self, x, training: bool = False, batch: int = 256) -> np.ndarray:
        """Logits (N, classes) for a batch of inputs (N, C, H, W), in chunks of ``batch``."""
        x = self._check_x(x)
        out = np.empty((x.shape[0], self.classes), self.dtype)
        for i in range(0, x.shape[0], batch):
            chunk = x[i: i + batch]
            prog = self.program(chunk.shape[0])
            prog.input[...] = chunk
            out[i: i + chunk.shape[0]] = prog.forward(training)
        return out

    def predict_proba(self, x, batch: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the logits), inference mode."""
        from .kernels.loss import softmax_forward

        logits = self.forward(x, training=False, batch=batch)
        probs = np.empty_like(logits)
        softmax_forward(logits, probs)
        return probs

    def loss_and_grads(self, x, y, training: bool = True, input_grad: bool = False):
        """Mean cross-entropy on one batch and the gradients ``{layer: {name: array}}``
        (copies); with ``input_grad`` also ``grads["input"]``, d loss / d x (saliency)."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        prog = self.program(x.shape[0], need_input_grad=input_grad)
        prog.input[...] = x
        prog.labels[...] = y
        prog.forward(training)
        loss = prog.loss()
        prog.backward()
        grads = {layer: {k: v.copy() for k, v in d.items()} for layer, d in self.grads.items()}
        if input_grad:
            grads[INPUT] = prog.grads[INPUT].copy()
        return loss, grads

    def step(self, prog: Program, training: bool = True) -> tuple[float, int]:
        """Forward, loss and backward on what is in ``prog``'s input and label buffers;
        the gradients land in ``self.grad``. Returns (loss, correct predictions)."""
        from .kernels.loss import count_correct

        logits = prog.forward(training)
        loss = prog.loss()
        prog.backward()
        return loss, int(count_correct(logits, prog.labels))

    def to_onnx(self, path, opset: int | None = None):
        """Write the network (its current weights, inference semantics) as an ONNX file;
        returns the ``onnx.ModelProto``. See :mod:`cnnc.export_onnx`."""
        from .export_onnx import DEFAULT_OPSET, export

        return export(self, path, DEFAULT_OPSET if opset is None else opset)
