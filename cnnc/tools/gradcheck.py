"""``cnnc gradcheck FILE``: every layer's backward pass against float64 finite differences.

Each layer instance of the model is checked on its own, as the compiled program runs it
(its configuration, its input shapes, a ReLU fused into it when the lowering fuses one),
on random float64 data. With a fixed random ``r`` of the output's shape, the scalar

    L(x_1, ..., x_k, params) = sum(y * r),   y = layer(x_1, ..., x_k; params)

has the gradient the layer's backward computes from ``dy = r``. For every input and every
parameter tensor T the analytic gradient g is compared with central differences:

* along random directions v over the whole tensor: <g, v> against
  (L(T + h v) - L(T - h v)) / 2h, which tests every element at once;
* at a few random single elements (the same with v a unit vector).

The relative error of one comparison is |a - n| / max(|a|, |n|, s), where the floor
s = 1% of the typical size of such a derivative, ||g|| ||v|| / sqrt(T.size), keeps a
derivative that happens to be near zero (a direction almost orthogonal to g, a dead ReLU)
from turning rounding noise into a large relative error. ReLU, max pooling
and maxout are piecewise linear: a step that crosses a kink spoils one estimate, so each
comparison is made at up to three step sizes and the smallest error counts (a wrong
gradient is wrong at every step size). Layers are run in
training mode (batch norm on batch statistics, dropout with one fixed mask). The softmax
cross-entropy loss is checked the same way, on the logits.

A layer passes when its largest relative error is at most its tolerance: 1e-6 for smooth
layers, 1e-4 for piecewise-linear ones (ReLU, leaky ReLU, max pooling, maxout, and a conv or
fc with a fused ReLU), where a step crosses a kink now and then in a layer with millions of
outputs and the smallest steps meet rounding (VGG-16's 512-filter convs at 224x224 reach
2e-5); ``--tol`` sets one tolerance for all. A wrong gradient (a
wrong index, a missing term) is off by far more, typically 1e-2 or worse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..text import plural
from ..errors import UsageError

if TYPE_CHECKING:
    from ..layers import LayerType

DEFAULT_TOL = 1e-6  # smooth layers
KINKED_TOL = 1e-4  # piecewise-linear layers: a step may cross a kink of one of millions of outputs


def tolerance_for(layer_type: LayerType, fused_relu: bool) -> float:
    """The default tolerance of a layer: looser where the function has kinks
    (``piecewise_linear`` layer types, and any layer running a fused ReLU)."""
    return KINKED_TOL if fused_relu or layer_type.piecewise_linear else DEFAULT_TOL


# finite-difference step sizes, relative to the tensor's RMS: the large one is accurate on smooth
# and piecewise-linear stretches (rounding error ~ 1e-16/h), the small ones step over fewer kinks
# (the outputs are differenced before they are summed, so even 1e-10 keeps most digits)
STEPS = (1e-4, 1e-6, 1e-8, 1e-10)
TINY = 1e-12


@dataclass(frozen=True)
class TensorCheck:
    """The comparisons of one tensor (an input or a parameter) of one layer."""

    tensor: str  # "x" (or "x1", "x2"... for merges), or a parameter name ("w", "b", "gamma"...)
    shape: tuple[int, ...]
    max_rel_error: float
    comparisons: int
    analytic_norm: float


@dataclass(frozen=True)
class LayerCheck:
    layer: str
    type: str
    detail: str
    tensors: tuple[TensorCheck, ...]
    tolerance: float

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "type": self.type, "configuration": self.detail, "ok": self.ok,
                "max_rel_error": self.max_rel_error, "tolerance": self.tolerance,
                "tensors": [{"tensor": t.tensor, "shape": list(t.shape), "max_rel_error": t.max_rel_error,
                             "comparisons": t.comparisons} for t in self.tensors]}


@dataclass(frozen=True)
class GradcheckReport:
    filename: str
    checks: tuple[LayerCheck, ...]
    batch: int
    seed: int

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.filename, "ok": self.ok, "batch": self.batch, "seed": self.seed,
                "dtype": "float64", "layers": [c.to_dict() for c in self.checks]}


# ---------------------------------------------------------------------------
# The internals this module reads (one adapter each, so a restructuring touches only these)


def _layer_nodes(model) -> list[tuple[str, Any, Any, list[tuple[int, ...]]]]:
    """(name, LayerNode, LayerInfo, input shapes) for each layer instance, in order."""
    a = model.analysis
    return [(n, a.layer(n), a.info[n], [a.shapes[s] for s in a.inputs(n)]) for n in a.order]


def _schedule(model) -> tuple[frozenset[str], dict[str, str], dict[str, Any]]:
    """The nodes that run a fused ReLU, each elided ReLU or add -> the node it is fused into,
    and the steps that compute an add too (``( ... - bn + shortcut )``: checked as they run,
    with the shortcut as their second input)."""
    from ..runtime.lower import lower

    p = lower(model.analysis, classifier=False)
    steps = {s.node for s in p.steps}
    adds = {s.node: s for s in p.steps if s.fused_add}
    absorbed = {s.fused_add for s in adds.values()}
    elided = {n: p.alias[n] for n in p.alias
              if n not in steps and (p.alias[n] in p.fused_relu or n in absorbed)}
    return p.fused_relu, elided, adds


# ---------------------------------------------------------------------------


def _rel(a: float, n: float, floor: float) -> float:
    return abs(a - n) / max(abs(a), abs(n), floor, TINY)


def _directional(f: Callable[[], Any], t, g, v, rms: float, weights) -> float:
    """Smallest relative error over the step sizes of <g, v> against central differences.

    ``v`` is a direction of ``t``'s shape, or an int: the flat index of one element.
    ``f`` returns the layer's output; L = sum(y * weights) is formed from the *difference*
    of the two outputs, so the rounding error of L itself does not cancel catastrophically."""
    import numpy as np

    if isinstance(v, (int, np.integer)):
        analytic = float(g.flat[v])
        floor = 0.01 * float(np.linalg.norm(g)) / max(g.size, 1) ** 0.5
        base_value = float(t.flat[v])

        def move(h: float) -> None:
            t.flat[v] = base_value + h

        def restore() -> None:
            t.flat[v] = base_value
    else:
        analytic = float(np.dot(g.ravel(), v.ravel()))
        floor = 0.01 * float(np.linalg.norm(g)) * float(np.linalg.norm(v)) / max(g.size, 1) ** 0.5
        base = t.copy()

        def move(h: float) -> None:
            np.multiply(v, h, out=t)
            np.add(t, base, out=t)

        def restore() -> None:
            t[...] = base
    best = float("inf")
    for step in STEPS:
        h = step * max(rms, 1e-3)
        move(h)
        up = f().copy()
        move(-h)
        down = f()
        restore()
        numeric = float(np.dot((up - down).ravel(), weights.ravel())) / (2 * h)
        best = min(best, _rel(analytic, numeric, floor))
        if best <= 1e-8:
            break
    return best


def _check_tensor(name: str, f, t, g, weights, rng, directions: int, elements: int) -> TensorCheck:
    import numpy as np

    rms = float(np.sqrt(np.mean(t * t))) if t.size else 1.0
    errors = []
    for _ in range(directions):
        errors.append(_directional(f, t, g, rng.standard_normal(t.shape), rms, weights))
    for idx in rng.choice(t.size, size=min(elements, t.size), replace=False):
        errors.append(_directional(f, t, g, int(idx), rms, weights))
    return TensorCheck(name, tuple(t.shape), max(errors, default=0.0), len(errors),
                       float(np.linalg.norm(g)))


def _init_param(spec, rng):
    import numpy as np

    if spec.name in ("running_var",):
        return rng.uniform(0.5, 2.0, spec.shape)
    if spec.init == "ones":  # batch-norm gamma: away from 0 so the scale matters
        return rng.uniform(0.5, 1.5, spec.shape)
    if spec.init == "zeros":
        return 0.1 * rng.standard_normal(spec.shape)
    fan_in = max(spec.fan_in, 1)
    return rng.standard_normal(spec.shape) * np.sqrt(2.0 / fan_in)


def check_layer(name: str, node, info, in_shapes, fused: bool, *, batch: int, rng, tol: float,
                directions: int = 2, elements: int = 3, op_hook=None,
                fused_add: bool = False) -> LayerCheck:
    """Check one layer instance's op (see the module docstring)."""
    import numpy as np

    op = node.type.make_op(node.config, info, in_shapes)
    if op_hook is not None:
        op = op_hook(name, op)
    op.relu = fused
    params = {p.name: _init_param(p, rng) for p in info.params}
    buffers = {b.name: _init_param(b, rng) for b in info.buffers}
    grads = {p.name: np.zeros(p.shape) for p in info.params}
    op_seed = int(rng.integers(2**31))
    op.bind(batch, np.float64, params, grads, buffers, np.random.default_rng(op_seed))
    xs = [rng.standard_normal((batch, *s)) for s in in_shapes]
    y = np.zeros((batch, *info.out_shape))
    r = rng.standard_normal(y.shape)

    def output():
        op.rng = np.random.default_rng(op_seed)  # dropout: the same mask at every evaluation
        op.forward(xs, y, True)
        return y

    output()
    dxs = [np.zeros_like(x) for x in xs]
    op.backward(xs, y, r.copy(), dxs)
    grads = {k: v.copy() for k, v in grads.items()}
    checks = []
    for i, (x, dx) in enumerate(zip(xs, dxs)):
        label = "x" if len(xs) == 1 else f"x{i + 1}"
        checks.append(_check_tensor(label, output, x, dx, r, rng, directions, elements))
    for p in info.params:
        checks.append(_check_tensor(p.name, output, params[p.name], grads[p.name], r, rng, directions,
                                    elements))
    detail = info.detail + (" + fused add" if fused_add else "") + (" + fused relu" if fused else "")
    return LayerCheck(name, node.type.name, detail or node.text, tuple(checks), tol)


def check_loss(classes: int, *, batch: int, rng, tol: float, name: str = "loss") -> LayerCheck:
    """Softmax cross-entropy (mean over the batch) against finite differences on the logits."""
    import numpy as np

    from ..kernels import loss as k

    logits = rng.standard_normal((batch, classes))
    labels = rng.integers(0, classes, batch).astype(np.int64)
    probs = np.zeros_like(logits)

    def loss():
        return np.array(k.softmax_xent_forward(logits, labels, probs))

    loss()
    g = np.zeros_like(logits)
    k.softmax_xent_backward(probs, labels, g)
    t = _check_tensor("logits", loss, logits, g, np.ones(()), rng, 2, 3)
    return LayerCheck(name, "softmax+xent", "softmax cross-entropy, mean over the batch", (t,), tol)


def gradcheck(model, *, layer: str | None = None, batch: int = 4, seed: int = 0,
              tol: float | None = None, directions: int = 2, elements: int = 3,
              op_hook: Callable[[str, Any], Any] | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> GradcheckReport:
    """Check every layer of ``model`` (or only ``layer``), plus the loss; see the module docstring.

    ``progress(layer, i, n)`` is called before the i-th (from 1) of the n checks.

    ``op_hook`` is a test hook: when given, it is called as ``op_hook(layer_name, op)`` on each
    op before the check and must return the op to check (a test can wrap or break it)."""
    import numpy as np

    from ..kernels.threads import configure

    configure()
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")
    if tol is not None and tol <= 0:
        raise UsageError(f"the tolerance must be positive, got {tol:g}")
    nodes = _layer_nodes(model)
    names = [n for n, *_ in nodes]
    softmax = [n for n, node, *_ in nodes if node.type.fused_into_loss]  # checked as the loss
    if layer is not None and layer not in names and layer != "loss":
        from difflib import get_close_matches

        close = get_close_matches(layer, names + ["loss"], n=3)
        raise UsageError(f"the model has no layer {layer!r}",
                         hint=(f"did you mean {' or '.join(close)}? " if close else "")
                         + "layer names are those `cnnc check` prints")
    fused, elided, adds = _schedule(model)
    rng = np.random.default_rng(seed)
    checks = []
    todo = [(name, node, info, in_shapes) for name, node, info, in_shapes in nodes
            if (layer is None or name == layer or elided.get(layer) == name)
            and name not in elided  # runs inside the layer before it, checked there
            and not node.type.fused_into_loss]  # checked with the loss, which it is fused into
    out_shape = model.summary.output_shape
    wants_loss = layer is None or layer == "loss" or (softmax and layer == softmax[0])
    wants_loss = bool(wants_loss and len(out_shape) == 1)
    total = len(todo) + wants_loss
    for i, (name, node, info, in_shapes) in enumerate(todo, 1):
        if progress is not None:
            progress(name, i, total)
        if name in adds:
            in_shapes = list(adds[name].in_shapes)  # its input, then the shortcut it adds
        layer_tol = tol if tol is not None else tolerance_for(node.type, name in fused)
        checks.append(check_layer(name, node, info, in_shapes, name in fused, batch=batch, rng=rng,
                                  tol=layer_tol, directions=directions, elements=elements,
                                  op_hook=op_hook, fused_add=name in adds))
    if wants_loss:
        if progress is not None:
            progress(softmax[0] if softmax else "loss", total, total)
        checks.append(check_loss(out_shape[0], batch=batch, rng=rng, tol=tol or DEFAULT_TOL,
                                 name=softmax[0] if softmax else "loss"))
    return GradcheckReport(model.filename, tuple(checks), batch, seed)


# ---------------------------------------------------------------------------
# Text and CLI


def report_text(rep: GradcheckReport) -> str:
    rows = [("layer", "type", "configuration", "tensors", "max rel. error", "tolerance", "")]
    for c in rep.checks:
        worst = max(c.tensors, key=lambda t: t.max_rel_error) if c.tensors else None
        tensors = ", ".join(t.tensor for t in c.tensors)
        err = f"{c.max_rel_error:.2e}" + (f" ({worst.tensor})" if worst and len(c.tensors) > 1 else "")
        rows.append((c.layer, c.type, c.detail[:48], tensors, err, f"{c.tolerance:.0e}",
                     "ok" if c.ok else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{rep.filename}: gradient check in float64, batch {rep.batch}, seed {rep.seed}", ""]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i in (4, 5) else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    bad = [c.layer for c in rep.checks if not c.ok]
    worst = max((c.max_rel_error for c in rep.checks), default=0.0)
    lines.append("")
    if bad:
        lines.append(f"FAILED: {len(bad)} of {plural(len(rep.checks), 'layer')} exceed their tolerance: {', '.join(bad)}")
    else:
        lines.append(f"ok: {plural(len(rep.checks), 'layer')}, largest relative error {worst:.2e}")
    return "\n".join(lines)
