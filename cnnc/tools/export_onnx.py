"""ONNX export of a compiled network: ``cnnc export FILE -o model.onnx``, ``export(net, path)``.

The graph-level half lives here: walk the layer graph in execution order, let each layer
type emit its nodes (``LayerType.to_onnx(cfg, info, ctx)``, defined next to the layer's
shape rule and kernel in ``cnnc/layers/*.py``), add the weights as initializers, check the
model with ``onnx.checker`` and write it atomically.

Naming follows cnnc: the graph input is ``input`` (N, C, H, W) with a symbolic batch size
``N``; every layer's output value and node are named after the layer (``conv_1``); the
graph output is the last layer's name; initializers are ``layer.param`` (``conv_1.w``,
``bn_1.running_mean``), exactly the keys of :meth:`Network.state`. A layer that needs more
than one ONNX node names the others ``layer/what`` (``fc_1/flatten``).

Inference semantics: dropout is the identity and batch norm uses its running statistics.
A final ``softmax`` is exported (the output is probabilities); without it the output is
the logits, as :meth:`Network.forward` returns them. The inputs are what ``forward``
takes: a checkpoint's normalization (per-channel mean and standard deviation of the
training data) is recorded in the model's metadata, not applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CnncError, UsageError

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax per axis, Gemm with an optional C, ReduceMax/Split semantics used here
MAX_OPSET = 21  # newest opset checked against onnxruntime in the tests


class ExportError(CnncError):
    """A model that cannot be exported (a layer without an ONNX mapping, a missing package)."""

    kind = "export"


def require_onnx():
    """The onnx package, or an ExportError that says how to install it."""
    try:
        import onnx
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx package",
                          hint="pip install 'cnnc[onnx]'  (or: pip install onnx)") from None
    return onnx


@dataclass
class OnnxContext:
    """What a layer's ``to_onnx`` sees and uses: its inputs, its output name and the graph.

    ``inputs`` are the value names of the layer's inputs (in branch order) and ``in_shapes``
    their cnnc shapes without the batch axis; the layer must produce the value ``output``
    with the shape ``info.out_shape`` (plus the batch axis)."""

    name: str
    inputs: list[str]
    in_shapes: list[tuple[int, ...]]
    output: str
    opset: int
    weights: dict[str, Any]  # this layer's parameters and buffers by name (float32 arrays)
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def param(self, name: str) -> str:
        """The initializer name of one of this layer's parameters/buffers (added on first use)."""
        import onnx.numpy_helper as nh

        full = f"{self.name}.{name}"
        if all(t.name != full for t in self.initializers):
            self.initializers.append(nh.from_array(self.weights[name], full))
        return full

    def const(self, what: str, values, dtype="int64") -> str:
        """A constant initializer owned by this layer (a reshape target, reduction axes)."""
        import numpy as np
        import onnx.numpy_helper as nh

        full = f"{self.name}/{what}"
        self.initializers.append(nh.from_array(np.asarray(values, dtype=dtype), full))
        return full

    def tmp(self, what: str) -> str:
        return f"{self.name}/{what}"

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        """Add one node; its output defaults to the layer's output. Returns the output name."""
        import onnx.helper as oh

        out = output or self.output
        node_name = self.name if out == self.output else out
        self.nodes.append(oh.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out


# ---------------------------------------------------------------------------
# The internals this module reads (one adapter each)


def _layers(net):
    """(name, LayerNode, LayerInfo, input names, input shapes) in execution order; output name."""
    from ..lang.graph import INPUT

    a = net.plan.analysis
    out = []
    for n in a.order:
        srcs = list(a.inputs(n))
        out.append((n, a.layer(n), a.info[n], srcs, [a.shapes[s] for s in srcs]))
    return out, a.output, INPUT


def _weights(net, layer: str) -> dict[str, Any]:
    import numpy as np

    found = {}
    for table in (net.params, net.buffers):
        for k, v in table.get(layer, {}).items():
            found[k] = np.ascontiguousarray(v, dtype=np.float32)
    return found


# ---------------------------------------------------------------------------


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"unknown or unsupported ONNX opset {opset!r}",
                         hint=f"cnnc exports opsets {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    return opset


PIXELS = "pixels"  # the graph input of a model exported with its preprocessing


def input_description(net, mean, std, preprocessing: bool) -> str:
    """What the exported model's input is, in words (its doc string and ``cnnc.input``)."""
    shape = "N x " + " x ".join(map(str, net.input_shape))
    fmt = lambda v: ",".join(f"{float(x):.6g}" for x in v)  # noqa: E731
    if preprocessing:
        return (f"input '{PIXELS}': float32 {shape}, raw pixel values 0..255 (channels first); the "
                f"model divides by 255, subtracts mean ({fmt(mean)}) and divides by std "
                f"({fmt(std)}) per channel itself")
    return (f"input 'input': float32 {shape}, normalized as cnnc trained it: pixels / 255, minus "
            f"mean ({fmt(mean)}), divided by std ({fmt(std)}), per channel (metadata cnnc.data.mean "
            f"and cnnc.data.std); export with --with-preprocessing to feed raw pixels instead")


def _preprocessing_nodes(oh, nh, mean, std, input_name: str, channels: int):
    """Nodes computing ``input = pixels * scale - shift`` (the arithmetic of cnnc's own
    normalization, :func:`cnnc.training.data.transforms.affine`) and their constants."""
    import numpy as np

    from ..training.data.transforms import affine

    scale, shift = affine(np.dtype(np.uint8), mean, std, channels)
    inits = [nh.from_array(scale, f"{PIXELS}/scale"), nh.from_array(shift, f"{PIXELS}/shift")]
    nodes = [oh.make_node("Mul", [PIXELS, f"{PIXELS}/scale"], [f"{PIXELS}/scaled"], name=f"{PIXELS}/scale"),
             oh.make_node("Sub", [f"{PIXELS}/scaled", f"{PIXELS}/shift"], [input_name],
                          name=f"{PIXELS}/normalize")]
    return nodes, inits


def build_model(net, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
                normalization: tuple | None = None, preprocessing: bool = False):
    """The checked ``onnx.ModelProto`` of a compiled network (nothing written).

    ``normalization``: the (mean, std) per channel its inputs were normalized with (default
    0 and 1), described in the model's doc string; ``preprocessing=True`` puts that
    normalization into the model as its first nodes, so that it takes raw pixels (0..255)."""
    import numpy as np

    from ..layers import LayerError

    onnx = require_onnx()
    oh = onnx.helper
    check_opset(opset)
    c = net.input_shape[0]
    mean, std = normalization if normalization is not None else (np.zeros(c), np.ones(c))
    if preprocessing and len(net.input_shape) != 3:
        raise ExportError("--with-preprocessing puts image normalization (pixels / 255, mean, std) "
                          "into the model; this network takes sequences, not images")
    layers, output, input_name = _layers(net)
    nodes, inits = [], []
    if preprocessing:
        nodes, inits = _preprocessing_nodes(oh, onnx.numpy_helper, mean, std, input_name, c)
    for name, node, info, srcs, in_shapes in layers:
        ctx = OnnxContext(name, srcs, in_shapes, name, opset, _weights(net, name))
        try:
            node.type.to_onnx(node.config, info, ctx)
        except LayerError as err:
            raise ExportError(f"layer {name} ({node.text}) cannot be exported to ONNX: {err.message}",
                              hint=err.hint) from None
        nodes += ctx.nodes
        inits += ctx.initializers
    in_shape = ["N", *net.input_shape]
    out_shape = ["N", *net.plan.analysis.shapes[output]]
    graph = oh.make_graph(
        nodes, "cnnc",
        [oh.make_tensor_value_info(PIXELS if preprocessing else input_name, onnx.TensorProto.FLOAT, in_shape)],
        [oh.make_tensor_value_info(output, onnx.TensorProto.FLOAT, out_shape)],
        initializer=inits)
    opsets = [oh.make_opsetid("", opset)]
    model = oh.make_model(graph, opset_imports=opsets, producer_name="cnnc",
                          ir_version=oh.find_min_ir_version_for(opsets))
    from ..version import __version__

    model.producer_version = __version__
    described = input_description(net, mean, std, preprocessing)
    model.doc_string = described + ("\n\n" + metadata["cnnc.model_text"]
                                    if metadata and "cnnc.model_text" in metadata else "")
    metadata = {**(metadata or {}), "cnnc.input": described}
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # a mapping bug in cnnc, never a user error: show it
        raise RuntimeError(f"cnnc produced an invalid ONNX model: {err}") from err
    return model


def export(net, path: str | Path, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
           normalization: tuple | None = None, preprocessing: bool = False):
    """Write ``net`` to ``path`` as ONNX (atomically); returns the ModelProto. See
    :func:`build_model` for ``normalization`` and ``preprocessing``."""
    from ..atomic import atomic_write_bytes

    model = build_model(net, opset, metadata, normalization, preprocessing)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError(f"the model is {len(data) / 2**30:.1f} GiB, over protobuf's 2 GiB limit")
    atomic_write_bytes(path, data)
    return model


# ---------------------------------------------------------------------------
# CLI


__all__ = ["export", "build_model", "OnnxContext", "ExportError", "DEFAULT_OPSET"]
