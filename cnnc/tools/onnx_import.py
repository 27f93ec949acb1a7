"""``cnnc import model.onnx``: an ONNX model as a readable ``.cnn`` file, and its weights.

Three steps, each a function:

1. :func:`read_graph` reads the file and maps every ONNX node onto cnnc layers
   (:class:`Node`: a layer with its text, configuration values and weights in cnnc's names,
   or a merge). Constants are folded where that is exact: a bias ``Add`` or a per-channel
   ``Mul``/``Add`` affine after a conv, fc or bn goes into its weights; ``Dropout`` and
   ``Identity`` are dropped; ``MatMul`` + ``Add`` is an ``fc``; a ``Flatten`` before an ``fc``
   is left to the ``fc`` (which flattens). Anything cnnc cannot express is an
   :class:`OnnxImportError` naming the operator and the node.
2. :func:`structure` turns the value graph into cnnc's series-parallel form: sequences,
   and branches that start at one value and meet at one ``add`` or ``concat``.
3. :func:`cnnc.tools.fold.render` writes the text (repeated groups folded, repeated
   blocks made definitions); :func:`import_onnx` then compiles it and checks that it has
   the same parameters as the file before anything is written.

Every failure is an :class:`OnnxImportError` (a :class:`cnnc.CnncError`): one message,
nothing written. The file is read with the ``onnx`` package only (no onnxruntime).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CnncError, UsageError

#: the ONNX operators cnnc maps, for the error that names an unsupported one
SUPPORTED_OPS = (
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Sum", "BatchNormalization", "Relu", "LeakyRelu",
    "Elu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "Flatten", "Reshape", "Concat", "LRN", "Dropout", "Identity", "Softmax", "Constant")
MAX_DIM = 1 << 20  # one dimension of the input or of a weight
MAX_ELEMENTS = 1 << 31  # elements of one tensor


class OnnxImportError(CnncError):
    """An ONNX file that cannot be imported: damaged, dynamic, or using what cnnc lacks."""

    kind = "import"


@dataclass
class Node:
    """One cnnc layer (``kind`` a layer name) or merge (``kind`` "add"/"concat") in the
    value graph. ``args``: the layer's arguments as cnnc writes them, defaults left out,
    in order (positional first, under the name ``""``); ``params``: float32 arrays by
    cnnc's parameter and buffer names."""

    kind: str  # the layer's name as written (``pool`` for a 2x2 max pooling)
    inputs: list[str]
    output: str
    onnx: str  # "Conv 'name'": where it came from, for messages
    suffix: tuple[int, ...] = ()
    args: list[tuple[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    flattens: bool = False  # a flatten the following fc makes unnecessary
    parts: tuple[str, ...] = ()  # a concat: the values it joins, nested concats expanded
    # a conv's arguments with stride and pad always written, each with "is it the default":
    # blocks that differ only there can share a definition (ResNet-50's first block and its
    # strided ones: stride=s)
    explicit: list[tuple[str, Any, bool]] | None = None

    @property
    def type(self):
        """The layer type (:class:`cnnc.layers.LayerType`): what decisions ask."""
        from ..layers import registry

        return registry()[self.kind]

    @property
    def is_merge(self) -> bool:
        return self.type.branch_form is not None


@dataclass
class ImportedGraph:
    """What :func:`read_graph` found: the value graph between ``input`` and ``output``."""

    input: str
    input_shape: tuple[int, ...]
    output: str
    nodes: dict[str, Node]  # by output value
    classes: int | None
    source: str
    param_count: int  # the file's parameters (weights and biases; bn's scale and shift)


# ---------------------------------------------------------------------------
# Reading the file


def _require_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise UsageError("cnnc import needs the onnx package",
                         hint="pip install 'cnnc[onnx]'  (or: pip install onnx)") from None
    return onnx


def load_model(path: str | Path):
    """The ``ModelProto`` of ``path``; an OnnxImportError when it is no ONNX file."""
    onnx = _require_onnx()
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an ONNX file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot be read ({err.strerror})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError, and whatever a damaged file raises
        raise OnnxImportError(f"{path}: not an ONNX model (the protobuf cannot be parsed: {err})",
                              hint="the file may be truncated or of another format") from None
    if not data or not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"{path}: not an ONNX model (no graph, or a graph without nodes)",
                              hint="the file may be truncated or of another format")
    return model


def _where(node, index: int) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node #{index + 1}"


def _attrs(node) -> dict[str, Any]:
    import onnx.helper as oh

    return {a.name: oh.get_attribute_value(a) for a in node.attribute}


def _array(tensor, what: str):
    import numpy as np
    import onnx.numpy_helper as nh

    dims = list(tensor.dims)
    n = 1
    for d in dims:
        if d < 0 or d > MAX_ELEMENTS:
            raise OnnxImportError(f"{what} has an absurd dimension {d} (shape {dims})",
                                  hint="the file is damaged")
        n *= d
    if n > MAX_ELEMENTS:
        raise OnnxImportError(f"{what} has {n:,} elements (shape {dims}), more than cnnc reads",
                              hint="the file is damaged")
    if tensor.data_location == 1:  # EXTERNAL
        raise OnnxImportError(f"{what} is stored in an external data file",
                              hint="save the model with its weights inside (onnx.save(..., "
                                   "save_as_external_data=False))")
    try:
        arr = nh.to_array(tensor)
    except Exception as err:
        raise OnnxImportError(f"{what} is damaged: {err}", hint="the file may be truncated") from None
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype=np.float32)
    return arr


def _input_shape(value, path) -> tuple[int, ...]:
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not t.HasField("shape"):
        raise OnnxImportError(f"{path}: the input {value.name!r} has no shape",
                              hint="cnnc needs a fixed input shape: export with a fixed example input")
    dims = []
    for i, d in enumerate(t.shape.dim):
        if i == 0:
            continue  # the batch: any size, named or not
        if not d.HasField("dim_value"):
            name = d.dim_param or "?"
            raise OnnxImportError(
                f"{path}: the input {value.name!r} has a dynamic shape (dimension {i} is {name!r})",
                hint="cnnc needs fixed channels, height and width: export with dynamic axes on the "
                     "batch only")
        if not 1 <= d.dim_value <= MAX_DIM:
            raise OnnxImportError(f"{path}: the input {value.name!r} has an absurd dimension "
                                  f"{d.dim_value}", hint="the file is damaged")
        dims.append(int(d.dim_value))
    if len(dims) not in (2, 3):
        raise OnnxImportError(
            f"{path}: the input {value.name!r} has {len(dims) + 1} dimensions; cnnc takes "
            "N x C x H x W images or N x C x L sequences")
    if t.elem_type not in (0, 1):  # unset or FLOAT
        raise OnnxImportError(f"{path}: the input {value.name!r} is not float32")
    return tuple(dims)


def _toposort(nodes, known: set[str], path) -> list[int]:
    """Node indices in an order where each node comes after the producers of its inputs;
    an error for an input nobody produces, and for a cycle."""
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer[o] = i
    order, state = [], [0] * len(nodes)  # 0 new, 1 on the stack, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, 0)]
        state[start] = 1
        while stack:
            i, k = stack.pop()
            ins = [x for x in nodes[i].input if x]
            if k < len(ins):
                stack.append((i, k + 1))
                name = ins[k]
                if name in known:
                    continue
                j = producer.get(name)
                if j is None:
                    raise OnnxImportError(
                        f"{path}: {_where(nodes[i], i)} reads {name!r}, which no initializer, input or "
                        "node provides (missing weights?)", hint="the file may be truncated or damaged")
                if state[j] == 1:
                    raise OnnxImportError(f"{path}: the graph has a cycle through {_where(nodes[j], j)}",
                                          hint="an ONNX graph must be acyclic")
                if state[j] == 0:
                    state[j] = 1
                    stack.append((j, 0))
                continue
            state[i] = 2
            order.append(i)
    return order


# ---------------------------------------------------------------------------
# Mapping nodes to layers


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Mapper:
    def __init__(self, model, path: str):
        self.model, self.path = model, path
        g = model.graph
        self.const: dict[str, Any] = {}
        for i, t in enumerate(g.initializer):
            self.const[t.name] = _array(t, f"{path}: initializer {t.name!r}")
        inputs = [v for v in g.input if v.name not in self.const]
        if len(inputs) != 1:
            raise OnnxImportError(f"{path}: the graph has {len(inputs)} inputs "
                                  f"({', '.join(v.name for v in inputs) or 'none'}); cnnc models take one image")
        if len(g.output) != 1:
            raise OnnxImportError(f"{path}: the graph has {len(g.output)} outputs; cnnc models have one")
        self.input = inputs[0].name
        self.output = g.output[0].name
        self.input_shape = _input_shape(inputs[0], path)
        self.shape: dict[str, tuple[int, ...]] = {self.input: self.input_shape}
        self.alias: dict[str, str] = {}
        self.nodes: dict[str, Node] = {}
        self.consumers: dict[str, int] = {}
        self.reads: dict[str, int] = {self.output: 1}  # readers of each value in the file
        for n in g.node:
            for x in n.input:
                self.reads[x] = self.reads.get(x, 0) + 1

    # -- helpers
    def err(self, node, i, message: str, hint: str | None = None) -> OnnxImportError:
        return OnnxImportError(f"{self.path}: {_where(node, i)}: {message}", hint=hint)

    def val(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def tensor_in(self, node, i, k: int) -> str:
        name = self.val(node.input[k])
        if name in self.const:
            raise self.err(node, i, f"input {k + 1} ({node.input[k]!r}) is a constant; cnnc layers take "
                                    "the network's values there")
        return name

    def const_in(self, node, i, k: int, what: str):
        if k >= len(node.input) or not node.input[k]:
            return None
        name = self.val(node.input[k])
        if name not in self.const:
            raise self.err(node, i, f"its {what} ({node.input[k]!r}) is computed by the network; "
                                    "cnnc needs it as a constant (an initializer)")
        return self.const[name]

    def sole_reader(self, raw: str) -> bool:
        """Is the node reading ``raw`` the only reader of the value behind it (through
        dropped Identity/Dropout nodes)? Then folding into its producer is exact."""
        while True:
            if self.reads.get(raw, 0) != 1:
                return False
            if raw not in self.alias:
                return True
            raw = self.alias[raw]

    def add(self, node: Node) -> None:
        self.nodes[node.output] = node
        for x in node.inputs:
            self.consumers[x] = self.consumers.get(x, 0) + 1

    def spatial(self, node, i, x: str) -> tuple[int, tuple[int, ...]]:
        s = self.shape[x]
        if len(s) not in (2, 3):
            raise self.err(node, i, f"its input is a vector of {s[0]}; {node.op_type} needs an image "
                                    "or a sequence")
        return s[0], s[1:]

    # -- the walk
    def run(self) -> None:
        g = self.model.graph
        known = set(self.const) | {self.input}
        for i in _toposort(list(g.node), known, self.path):
            node = g.node[i]
            fn = getattr(self, "op_" + node.op_type, None)
            if node.domain not in ("", "ai.onnx") or fn is None:
                raise self.err(node, i, f"the operator {node.op_type}"
                                        + (f" (domain {node.domain})" if node.domain else "")
                                        + " has no cnnc equivalent",
                               hint="cnnc imports the operators of classic CNNs: " + ", ".join(SUPPORTED_OPS))
            fn(node, i, _attrs(node))
        out = self.val(self.output)
        if out in self.const or out not in self.shape:
            raise OnnxImportError(f"{self.path}: the graph's output {self.output!r} is not computed from "
                                  "its input")
        self.output = out

    # constants: what the exporters leave around shapes and clip bounds
    def op_Constant(self, node, i, a):
        if "value" not in a:
            raise self.err(node, i, "only Constant nodes with a tensor value are read")
        self.const[node.output[0]] = _array(node.attribute[0].t, f"{self.path}: {_where(node, i)}")

    def op_Identity(self, node, i, a):
        self.alias[node.output[0]] = self.val(node.input[0])

    def op_Dropout(self, node, i, a):
        if a.get("training_mode") or (len(node.input) > 2 and node.input[2]):
            t = self.const.get(self.val(node.input[2])) if len(node.input) > 2 else None
            if t is None or bool(t):
                raise self.err(node, i, "dropout in training mode; cnnc imports inference graphs")
        self.alias[node.output[0]] = self.val(node.input[0])

    def layer(self, node, i, kind: str, x: str, out_shape, **kw) -> Node:
        n = Node(kind, [x], node.output[0], _where(node, i), **kw)
        self.add(n)
        self.shape[n.output] = tuple(out_shape)
        return n

    # -- convolution
    def _pads(self, node, i, a, in_sizes, kernel, stride, dilation, pool: bool):
        """(begin, end) per spatial axis after auto_pad."""
        rank = len(in_sizes)
        mode = a.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for size, k, s, d in zip(in_sizes, kernel, stride, dilation):
                eff = d * (k - 1) + 1
                total = max((-(-size // s) - 1) * s + eff - size, 0)
                small = total // 2
                pads.append((small, total - small) if mode == "SAME_UPPER" else (total - small, small))
            return pads
        if mode == "VALID":
            return [(0, 0)] * rank
        p = list(a.get("pads", [0] * (2 * rank)))
        if len(p) != 2 * rank:
            raise self.err(node, i, f"pads {p} do not match its {rank} spatial axes")
        if min(p) < 0:
            raise self.err(node, i, f"negative pads {p} (cropping) have no cnnc equivalent")
        return [(p[k], p[k + rank]) for k in range(rank)]

    def op_Conv(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        w = self.const_in(node, i, 1, "weight")
        b = self.const_in(node, i, 2, "bias")
        c, sizes = self.spatial(node, i, x)
        rank = len(sizes)
        if w is None or w.ndim != rank + 2:
            raise self.err(node, i, f"its weight has shape {None if w is None else list(w.shape)}; a "
                                    f"{rank}-D convolution needs {rank + 2} dimensions")
        kernel = tuple(a.get("kernel_shape", w.shape[2:]))
        strides = tuple(a.get("strides", [1] * rank))
        dil = tuple(a.get("dilations", [1] * rank))
        group = int(a.get("group", 1))
        f = w.shape[0]
        if tuple(w.shape[2:]) != kernel or w.shape[1] * group != c or f % group:
            raise self.err(node, i, f"its weight {list(w.shape)} does not fit its {c}-channel input "
                                    f"with group {group}", hint="the file is damaged")
        if len(set(strides)) != 1 or len(set(dil)) != 1:
            raise self.err(node, i, f"strides {list(strides)} / dilations {list(dil)} differ between axes; "
                                    "cnnc takes one stride and one dilation for every axis")
        s, d = strides[0], dil[0]
        pads = self._pads(node, i, a, sizes, kernel, strides, dil, pool=False)
        outs, sym = [], []
        for size, k, (pb, pe) in zip(sizes, kernel, pads):
            eff = d * (k - 1) + 1
            out = (size + pb + pe - eff) // s + 1
            if out < 1:
                raise self.err(node, i, "its window is larger than its padded input")
            if pb != pe and not (pe > pb and (size + 2 * pb - eff) // s + 1 == out):
                raise self.err(node, i, f"asymmetric padding {pb} before and {pe} after cannot be "
                                        "expressed: cnnc pads both sides of an axis alike",
                               hint="export with symmetric padding (PyTorch's padding=, not 'same' "
                                    "with an even window)")
            outs.append(out)
            sym.append(pb)
        default = [0] * rank if s != 1 else [d * (k - 1) // 2 for k in kernel]
        args: list[tuple[str, Any]] = [("", f)]
        if s != 1:
            args.append(("stride", s))
        if sym != default:
            if len(set(sym)) != 1:
                raise self.err(node, i, f"paddings {sym} differ between axes; cnnc pads every axis alike "
                                        "(except pad=same on a non-square window)")
            args.append(("pad", "valid" if sym[0] == 0 and s == 1 else sym[0]))
        if d != 1:
            args.append(("dilation", d))
        if group != 1:
            args.append(("groups", group))
        if _drops(sizes, [d * (k - 1) + 1 for k in kernel], s, sym, False):
            args.append(("edge", "drop"))
        params = {"w": w}
        if b is None:
            args.append(("bias", False))
        else:
            params["b"] = b.reshape(-1)
        suffix = (kernel[0],) if len(set(kernel)) == 1 else tuple(kernel)
        n = self.layer(node, i, "conv", x, (f, *outs), suffix=suffix, args=args, params=params)
        if len(set(sym)) == 1:
            written = dict(args)
            n.explicit = [("", f, False), ("stride", s, "stride" not in written),
                          ("pad", sym[0], "pad" not in written)] + [(k, v, False) for k, v in args[1:]
                                                                    if k not in ("stride", "pad")]

    # -- dense
    def op_Gemm(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        w = self.const_in(node, i, 1, "weight")
        c = self.const_in(node, i, 2, "bias")
        if a.get("transA", 0):
            raise self.err(node, i, "transA=1 (a transposed input) has no cnnc equivalent")
        if w is None or w.ndim != 2:
            raise self.err(node, i, "its weight is not a matrix")
        w = w if a.get("transB", 0) else w.T
        w = w * a.get("alpha", 1.0)
        self._fc(node, i, x, w, None if c is None else c * a.get("beta", 1.0))

    def _fc(self, node, i, x, w, bias):
        import numpy as np

        n_in = _size(self.shape[x])
        if len(self.shape[x]) != 1:
            raise self.err(node, i, f"its input is {'x'.join(map(str, self.shape[x]))}, not a vector",
                           hint="flatten first (ONNX Gemm takes matrices)")
        if w.shape[1] != n_in:
            raise self.err(node, i, f"its weight {list(w.shape)} does not fit its {n_in} inputs")
        units = w.shape[0]
        params = {"w": np.ascontiguousarray(w, dtype=np.float32)}
        args: list[tuple[str, Any]] = [("", units)]
        if bias is not None:
            b = np.asarray(bias, dtype=np.float32)
            if b.size not in (1, units):
                raise self.err(node, i, f"its bias of shape {list(b.shape)} does not fit {units} outputs")
            params["b"] = np.ascontiguousarray(np.broadcast_to(b.reshape(-1), (units,)))
        else:
            args.append(("bias", False))
        src = self.nodes.get(x)
        if src is not None and src.flattens and self.sole_reader(node.input[0]):
            x = src.inputs[0]  # fc flattens by itself
            del self.nodes[src.output]
            self.consumers[x] = self.consumers.get(x, 1) - 1
        self.layer(node, i, "fc", x, (units,), args=args, params=params)

    def op_MatMul(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        w = self.const_in(node, i, 1, "weight")
        if w is None or w.ndim != 2:
            raise self.err(node, i, "only a vector times a constant matrix (a fully connected layer) is read")
        self._fc(node, i, x, w.T, None)

    # -- elementwise with constants, merges
    def _fold(self, node, i, raw: str, scale, shift) -> None:
        """y = x * scale + shift with per-channel (or scalar) constants, folded into the
        conv, fc or bn that produced x when exact (x has no other reader)."""
        import numpy as np

        x = self.val(raw)
        src = self.nodes.get(x)
        what = "Mul" if scale is not None else "Add"
        if src is None or not (src.type.folds_bn or src.type.folds_into_weights) or not self.sole_reader(raw):
            raise self.err(node, i, f"a {what} with a constant is read only right after a conv, fc or "
                                    "bn whose output nothing else reads (it is then folded into its weights)")
        ch = self.shape[x][0]
        rank = len(self.shape[x])

        def per_channel(t):
            t = np.asarray(t, dtype=np.float32)
            if t.size == 1:
                return np.full(ch, t.reshape(-1)[0], np.float32)
            sh = [d for d in t.shape]
            while sh and sh[0] == 1 and len(sh) > rank:
                sh = sh[1:]
            ok = t.size == ch and (len(sh) == 1 or (len(sh) == rank and all(d == 1 for d in sh[1:])))
            if not ok:
                raise self.err(node, i, f"its constant of shape {list(t.shape)} is not one value per "
                                        f"channel of its {'x'.join(map(str, self.shape[x]))} input")
            return t.reshape(-1).astype(np.float32)

        p = src.params
        if scale is not None:
            s = per_channel(scale)
            if src.type.folds_into_weights:  # bn: its scale and shift
                p["gamma"] = p["gamma"] * s
                p["beta"] = p["beta"] * s
            else:
                p["w"] = (p["w"] * s.reshape((-1,) + (1,) * (p["w"].ndim - 1))).astype(np.float32)
                if "b" in p:
                    p["b"] = p["b"] * s
        if shift is not None:
            t = per_channel(shift)
            if src.type.folds_into_weights:  # bn: its scale and shift
                p["beta"] = p["beta"] + t
            else:
                if "b" not in p:
                    p["b"] = np.zeros(ch, np.float32)
                    src.args = [kv for kv in src.args if kv[0] != "bias"]
                    if src.explicit is not None:
                        src.explicit = [kv for kv in src.explicit if kv[0] != "bias"]
                p["b"] = p["b"] + t
        self.alias[node.output[0]] = x

    def _binary(self, node, i):
        a_name, b_name = self.val(node.input[0]), self.val(node.input[1])
        ca, cb = self.const.get(a_name), self.const.get(b_name)
        if ca is not None and cb is not None:
            raise self.err(node, i, "an operation on constants only (shape arithmetic?) is not read",
                           hint="export with constant folding on")
        return a_name, b_name, ca, cb

    def op_Add(self, node, i, a):
        x, y, cx, cy = self._binary(node, i)
        if cx is None and cy is None:
            return self._merge(node, i, "add", [x, y])
        self._fold(node, i, node.input[1] if cx is not None else node.input[0], None, cx if cx is not None else cy)

    def op_Sub(self, node, i, a):
        x, y, cx, cy = self._binary(node, i)
        if cy is None:
            raise self.err(node, i, "only subtracting a constant is read")
        self._fold(node, i, node.input[0], None, -cy)

    def op_Mul(self, node, i, a):
        x, y, cx, cy = self._binary(node, i)
        if cx is None and cy is None:
            raise self.err(node, i, "a product of two values of the network has no cnnc equivalent "
                                    "(attention or squeeze-excitation gates)")
        self._fold(node, i, node.input[1] if cx is not None else node.input[0], cx if cx is not None else cy, None)

    def op_Div(self, node, i, a):
        import numpy as np

        x, y, cx, cy = self._binary(node, i)
        if cy is None:
            raise self.err(node, i, "only dividing by a constant is read")
        self._fold(node, i, node.input[0], 1.0 / np.asarray(cy, dtype=np.float64), None)

    def op_Sum(self, node, i, a):
        xs = [self.val(n) for n in node.input]
        if any(x in self.const for x in xs):
            raise self.err(node, i, "a Sum with a constant is not read")
        if len(xs) == 1:
            self.alias[node.output[0]] = xs[0]
            return
        self._merge(node, i, "add", xs)

    def _merge(self, node, i, kind, xs):
        shapes = [self.shape[x] for x in xs]
        from ..layers import registry

        if registry()[kind].sums_inputs:
            if len(set(shapes)) != 1:
                raise self.err(node, i, "its inputs have the shapes "
                                        + ", ".join("x".join(map(str, s)) for s in shapes)
                               + "; cnnc adds values of one shape (no broadcasting)")
            out = shapes[0]
        else:
            if len({len(s) for s in shapes}) != 1 or len({s[1:] for s in shapes}) != 1:
                raise self.err(node, i, "its inputs differ in size besides the channels")
            out = (sum(s[0] for s in shapes), *shapes[0][1:])
        n = Node(kind, xs, node.output[0], _where(node, i))
        self.add(n)
        self.shape[n.output] = out

    def op_Concat(self, node, i, a):
        xs = [self.val(n) for n in node.input if n]
        if any(x in self.const for x in xs):
            raise self.err(node, i, "a Concat with a constant is not read")
        rank = len(self.shape[xs[0]]) + 1
        axis = a.get("axis", 1)
        if axis < 0:
            axis += rank
        if axis != 1:
            raise self.err(node, i, f"concatenation on axis {a.get('axis')}; cnnc concatenates channels "
                                    "(axis 1)")
        if len(xs) == 1:
            self.alias[node.output[0]] = xs[0]
            return
        # DenseNet's torch.cat(features): Concat(a, b, c) after Concat(a, b) is Concat(Concat(a, b), c)
        parts, best = tuple(xs), None
        for v, n in self.nodes.items():
            if n.parts and len(n.parts) < len(xs) and n.parts == parts[:len(n.parts)]:
                if best is None or len(n.parts) > len(self.nodes[best].parts):
                    best = v
        if best is not None:
            xs = [best] + xs[len(self.nodes[best].parts):]
        self._merge(node, i, "concat", xs)
        self.nodes[node.output[0]].parts = parts

    # -- normalization and activations
    def op_BatchNormalization(self, node, i, a):
        import numpy as np

        x = self.tensor_in(node, i, 0)
        if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
            raise self.err(node, i, "batch norm in training mode; cnnc imports inference graphs",
                           hint="export the model in eval mode")
        ps = [self.const_in(node, i, k, name) for k, name in
              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance"))]
        c = self.shape[x][0]
        if any(p is None or p.size != c for p in ps):
            raise self.err(node, i, f"its scale, bias, mean and variance must hold {c} values each")
        eps = float(a.get("epsilon", 1e-5))
        mom = 1.0 - float(a.get("momentum", 0.9))
        args = []
        if abs(eps - 1e-5) > 1e-12:
            args.append(("eps", float(f"{eps:.6g}")))
        if abs(mom - 0.1) > 1e-6 and 0 <= mom <= 1:
            args.append(("momentum", float(f"{mom:.6g}")))
        names = ("gamma", "beta", "running_mean", "running_var")
        params = {k: np.ascontiguousarray(p.reshape(-1), dtype=np.float32) for k, p in zip(names, ps)}
        self.layer(node, i, "bn", x, self.shape[x], args=args, params=params)

    def _act(self, node, i, kind, args=()):
        x = self.tensor_in(node, i, 0)
        self.layer(node, i, kind, x, self.shape[x], args=list(args))

    def op_Relu(self, node, i, a):
        self._act(node, i, "relu")

    def op_Sigmoid(self, node, i, a):
        self._act(node, i, "sigmoid")

    def op_Tanh(self, node, i, a):
        self._act(node, i, "tanh")

    def op_LeakyRelu(self, node, i, a):
        alpha = float(a.get("alpha", 0.01))
        if not 0 <= alpha <= 1:
            raise self.err(node, i, f"alpha {alpha:g} is outside cnnc's leaky range [0, 1]")
        self._act(node, i, "leaky", [] if abs(alpha - 0.01) < 1e-9 else [("", float(f"{alpha:.6g}"))])

    def op_Elu(self, node, i, a):
        alpha = float(a.get("alpha", 1.0))
        self._act(node, i, "elu", [] if abs(alpha - 1) < 1e-9 else [("", float(f"{alpha:.6g}"))])

    def op_Clip(self, node, i, a):
        lo = a.get("min")
        hi = a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const_in(node, i, 1, "minimum").reshape(-1)[0])
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const_in(node, i, 2, "maximum").reshape(-1)[0])
        if lo == 0 and hi == 6:
            return self._act(node, i, "relu6")
        if lo == 0 and (hi is None or hi == float("inf")):
            return self._act(node, i, "relu")
        raise self.err(node, i, f"Clip to [{lo}, {hi}]; cnnc has relu (Clip to [0, inf)) and relu6 "
                                "(Clip to [0, 6])")

    def op_LRN(self, node, i, a):
        size = int(a["size"]) if "size" in a else None
        if size is None or size % 2 == 0:
            raise self.err(node, i, f"LRN size {size}: cnnc's lrn needs an odd size")
        alpha, beta, k = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
        args: list[tuple[str, Any]] = [] if size == 5 else [("", size)]
        for name, v, default in (("alpha", alpha, 1e-4), ("beta", beta, 0.75), ("k", k, 2.0)):
            if abs(v - default) > 1e-12:
                args.append((name, float(f"{v:.6g}")))
        self._act(node, i, "lrn", args)

    def op_Softmax(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        axis = a.get("axis", -1 if self.model.opset_import and self._opset() >= 13 else 1)
        if len(self.shape[x]) != 1 or axis not in (1, -1) or node.output[0] != self.model.graph.output[0].name:
            raise self.err(node, i, "softmax is read only as the last operation, over the classes of a "
                                    "vector", hint="cnnc fuses softmax into the loss")
        self._act(node, i, "softmax")

    def _opset(self) -> int:
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx"):
                return int(o.version)
        return 13

    # -- pooling
    def _pool(self, node, i, a, mode: str):
        x = self.tensor_in(node, i, 0)
        c, sizes = self.spatial(node, i, x)
        rank = len(sizes)
        kernel = tuple(a.get("kernel_shape", ()))
        if len(kernel) != rank:
            raise self.err(node, i, f"kernel_shape {list(kernel)} does not match its {rank} spatial axes")
        strides = tuple(a.get("strides", [1] * rank))
        if any(v != 1 for v in a.get("dilations", [1] * rank)):
            raise self.err(node, i, "dilated pooling has no cnnc equivalent")
        if len(set(strides)) != 1:
            raise self.err(node, i, f"strides {list(strides)} differ between axes; cnnc pools with one stride")
        s = strides[0]
        ceil = bool(a.get("ceil_mode", 0))
        pads = self._pads(node, i, a, sizes, kernel, strides, [1] * rank, pool=True)
        if all(k == 1 for k in kernel) and s == 1 and all(p == (0, 0) for p in pads):
            self.alias[node.output[0]] = x  # a 1x1 window at stride 1: the identity
            return
        outs = []
        for size, k, (pb, pe) in zip(sizes, kernel, pads):
            span = size + pb + pe - k
            out = (-(-span // s) if ceil else span // s) + 1
            if ceil and (out - 1) * s >= size + pb:
                out -= 1
            outs.append(out)
        begins = {pb for pb, _ in pads}
        if len(begins) != 1:
            raise self.err(node, i, f"paddings {[p for p, _ in pads]} differ between axes; cnnc pools "
                                    "with one padding")
        p = begins.pop()
        if any(pe < pb for pb, pe in pads):
            raise self.err(node, i, f"asymmetric padding {pads} cannot be expressed: cnnc pads both "
                                    "sides alike (and rounds up with round=ceil)")
        from ..layers.base import window_output

        chosen = None
        for r in ("floor", "ceil"):
            got = [window_output(size, k, s, p, r == "ceil").out for size, k in zip(sizes, kernel)]
            if got == outs:
                chosen = r
                break
        if chosen is None:
            raise self.err(node, i, f"its padding {pads} and rounding give outputs {outs}, which cnnc's "
                                    "symmetric padding with floor or ceil rounding does not give")
        if 2 * p > min(kernel):
            raise self.err(node, i, f"padding {p} is more than half its window {list(kernel)}")
        if mode == "avg" and a.get("count_include_pad", 0):
            partial = p > 0 or any((o - 1) * s + k > size for o, k, size in zip(outs, kernel, sizes))
            if partial:
                raise self.err(node, i, "average pooling with count_include_pad=1 over padding: cnnc's "
                                        "avgpool divides by the real inputs only (count_include_pad=0)",
                               hint="export with count_include_pad=False, or without padding")
        name = "maxpool" if mode == "max" else "avgpool"
        suffix = (kernel[0],) if len(set(kernel)) == 1 else tuple(kernel)
        if mode == "max" and suffix == (2,):
            name, suffix = "pool", ()  # the lecture's pool: max, 2x2
        args: list[tuple[str, Any]] = []
        if s != max(kernel):
            args.append(("stride", s))
        if p:
            args.append(("pad", p))
        if chosen == "ceil":
            args.append(("round", "ceil"))
        elif _drops(sizes, kernel, s, [p] * rank, False):
            args.append(("edge", "drop"))
        self.layer(node, i, name, x, (c, *outs), suffix=suffix, args=args)

    def op_MaxPool(self, node, i, a):
        if len([o for o in node.output if o]) > 1:
            raise self.err(node, i, "MaxPool's indices output has no cnnc equivalent")
        self._pool(node, i, a, "max")

    def op_AveragePool(self, node, i, a):
        self._pool(node, i, a, "avg")

    def op_GlobalAveragePool(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        c, _ = self.spatial(node, i, x)
        self.layer(node, i, "gap", x, (c,))

    def op_ReduceMean(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        c, sizes = self.spatial(node, i, x)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = [int(v) for v in self.const_in(node, i, 1, "axes").reshape(-1)]
        rank = len(sizes) + 2
        axes = sorted(v % rank for v in (axes or []))
        if axes != list(range(2, rank)):
            raise self.err(node, i, f"a mean over axes {axes}; cnnc's gap averages over the spatial axes "
                                    f"{list(range(2, rank))}")
        self.layer(node, i, "gap", x, (c,))

    # -- shapes
    def _to_vector(self, node, i, x):
        if len(self.shape[x]) == 1:
            self.alias[node.output[0]] = x
            return
        self.layer(node, i, "flatten", x, (_size(self.shape[x]),), flattens=True)

    def op_Flatten(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        if a.get("axis", 1) != 1:
            raise self.err(node, i, f"Flatten on axis {a.get('axis')}; cnnc flattens all but the batch (axis 1)")
        self._to_vector(node, i, x)

    def op_Reshape(self, node, i, a):
        x = self.tensor_in(node, i, 0)
        target = self.const_in(node, i, 1, "target shape")
        n = _size(self.shape[x])
        t = [int(v) for v in target.reshape(-1)]
        if len(t) == 2 and (t[1] == n or (t[1] == -1 and t[0] in (0, -1, 1))):
            return self._to_vector(node, i, x)
        raise self.err(node, i, f"a reshape to {t}; cnnc reads only a reshape to (N, {n}), a flattening")


def _drops(sizes, windows, stride, pads, ceil) -> bool:
    """Does the window leave real input uncovered at the far edge (cnnc's "does not fit",
    which the file's framework accepted silently)? Then the layer needs ``edge=drop``."""
    from ..layers.base import window_output

    return any(window_output(n, w, stride, p, ceil).lost_first for n, w, p in zip(sizes, windows, pads))


def read_graph(path: str | Path) -> ImportedGraph:
    """Read ``path`` and map it onto cnnc layers (see the module notes)."""
    model = load_model(path)
    m = _Mapper(model, str(path))
    m.run()
    live = _live(m.nodes, m.output, m.input)
    nodes = {k: v for k, v in m.nodes.items() if k in live}
    out_shape = m.shape[m.output]
    last = nodes.get(m.output)
    classes = None
    if len(out_shape) == 1:
        end = last
        if end is not None and end.type.fused_into_loss:
            end = nodes.get(end.inputs[0])
        if end is not None and end.type.takes_classes:
            classes = out_shape[0]
    params = sum(int(p.size) for n in nodes.values() for k, p in n.params.items()
                 if k not in ("running_mean", "running_var"))
    return ImportedGraph(m.input, m.input_shape, m.output, nodes, classes, str(path), params)


def _live(nodes: dict[str, Node], output: str, input_: str) -> set[str]:
    """The values the output depends on (dead branches are left out)."""
    seen, stack = set(), [output]
    while stack:
        v = stack.pop()
        if v in seen or v == input_:
            continue
        seen.add(v)
        n = nodes.get(v)
        if n is not None:
            stack.extend(n.inputs)
    return seen


# ---------------------------------------------------------------------------
# Series-parallel structure


@dataclass
class Branches:
    """``( a | b )`` (``sums`` false) or ``( a + b )`` (``sums``): each branch a list of
    items (:class:`Node` layers and nested :class:`Branches`); an empty branch is ``id``."""

    sums: bool
    branches: list[list[Any]]
    merge: Node


def structure(g: ImportedGraph) -> list[Any]:
    """The network as a sequence of layers and branch groups, or an OnnxImportError where
    the graph is not series-parallel (branches that do not start at one value and meet at
    one merge)."""
    nodes = g.nodes
    consumers: dict[str, list[str]] = {}
    for v, n in nodes.items():
        for x in dict.fromkeys(n.inputs):
            consumers.setdefault(x, []).append(v)

    order = list(nodes)  # insertion order is topological

    def reach_to(end: str) -> set[str]:
        seen, stack = set(), [end]
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            n = nodes.get(v)
            if n is not None:
                stack.extend(n.inputs)
        return seen

    def region_consumers(v: str, region: set[str]) -> list[str]:
        return [c for c in consumers.get(v, []) if c in region]

    def post_dominator(v: str, end: str, region: set[str]) -> str:
        """The first value after v that every path from v to end passes through."""
        below = [w for w in order if w in region and w != v]
        for w in below:
            # does removing w cut v from end?
            seen, stack, found = set(), [v], False
            while stack:
                u = stack.pop()
                if u == end:
                    found = True
                    break
                if u in seen:
                    continue
                seen.add(u)
                for c in region_consumers(u, region):
                    if c != w:
                        stack.append(c)
            if not found:
                return w
        return end

    def seq(start: str, end: str) -> list[Any]:
        region = reach_to(end)
        items: list[Any] = []
        v = start
        guard = 0
        while v != end:
            guard += 1
            if guard > 100_000:
                raise OnnxImportError(f"{g.source}: the graph could not be ordered")
            cons = region_consumers(v, region)
            if not cons:
                raise OnnxImportError(f"{g.source}: the value {v!r} does not lead to the output")
            if len(cons) == 1 and not nodes[cons[0]].is_merge and len(nodes[cons[0]].inputs) == 1:
                items.append(nodes[cons[0]])
                v = cons[0]
                continue
            w = post_dominator(v, end, region)
            merge = nodes.get(w)
            if merge is None or not merge.is_merge:
                raise _not_sp(g, nodes.get(w) or nodes[cons[0]])
            sub = reach_to(w)
            branches = []
            for x in merge.inputs:
                if x != v and v not in reach_to(x):
                    raise _not_sp(g, merge)
                branches.append([] if x == v else seq(v, x))
            # every path from v to w must run through one of the merge's inputs: no other
            # reader of v inside this region
            inner = set().union(*(reach_to(x) for x in merge.inputs)) | {w}
            for c in region_consumers(v, sub):
                if c not in inner:
                    raise _not_sp(g, nodes[c])
            if merge.type.sums_inputs:  # the shortcut last, as lectures write ( f + id )
                branches.sort(key=lambda b: len(b) == 0)
            items.append(Branches(merge.type.sums_inputs, branches, merge))
            v = w
        return items

    return seq(g.input, g.output)


def _not_sp(g: ImportedGraph, n: Node) -> OnnxImportError:
    return OnnxImportError(
        f"{g.source}: {n.onnx}: the graph is not series-parallel there; cnnc writes branches that start "
        "at one value and meet at one add or concat, ( a | b ) or ( a + b )")


def flat_layers(items: list[Any]) -> list[Node]:
    """The layers and merges in the order cnnc builds them from the text: branches in
    order, then their merge."""
    out: list[Node] = []
    for it in items:
        if isinstance(it, Branches):
            for b in it.branches:
                out += flat_layers(b)
            out.append(it.merge)
        else:
            out.append(it)
    return out


# ---------------------------------------------------------------------------
# The whole import


@dataclass(frozen=True)
class ImportResult:
    text: str
    model: Any  # the compiled cnnc.Model
    state: dict  # "layer.param" -> array, for Network.load_state
    param_count: int
    lines: int


def import_onnx(path: str | Path, *, name: str | None = None) -> ImportResult:
    """Read an ONNX file; return the ``.cnn`` text, the compiled model and its weights
    (nothing written). Checks that the text compiles to the file's parameter count and
    layer shapes."""
    from ..compiler import compile as compile_text
    from .fold import render

    g = read_graph(path)
    items = structure(g)
    header = {"source": Path(path).name, "params": g.param_count}
    text = render(items, g.input_shape, g.classes, header)
    try:
        model = compile_text(text, filename=name or str(Path(path).with_suffix(".cnn").name))
    except CnncError as err:
        raise OnnxImportError(f"{path}: the imported text does not check (a bug in cnnc import):\n{err}\n"
                              f"--- text ---\n{text}") from None
    state = _assign(model, flat_layers(items), path)
    if model.summary.total_params != g.param_count:
        raise OnnxImportError(f"{path}: the imported model has {model.summary.total_params:,} parameters, "
                              f"the file {g.param_count:,} (a bug in cnnc import)")
    return ImportResult(text, model, state, g.param_count, text.count("\n") + (not text.endswith("\n")))


def _assign(model, layers: list[Node], path) -> dict:
    """cnnc's layer names for the imported weights, by build order; every shape checked."""
    a = model.analysis
    names = [n for n in a.order if a.info[n].params or a.info[n].buffers]
    mine = [n for n in layers if n.params]
    if len(names) != len(mine):
        raise OnnxImportError(f"{path}: {len(mine)} layers with weights imported, {len(names)} in the text "
                              "(a bug in cnnc import)")
    state = {}
    for cname, node in zip(names, mine):
        info = a.info[cname]
        for spec in (*info.params, *info.buffers):
            arr = node.params.get(spec.name)
            if arr is None or tuple(arr.shape) != tuple(spec.shape):
                raise OnnxImportError(
                    f"{path}: {node.onnx}: {spec.name} of shape {None if arr is None else list(arr.shape)} "
                    f"does not fit {cname} {list(spec.shape)} (a bug in cnnc import)")
            state[f"{cname}.{spec.name}"] = arr
    return state


def norm_values(text: str | None, channels: int, what: str, default: float):
    """``--mean``/``--std``: one value per input channel, or one for all ("0.5" or
    "0.485,0.456,0.406"); ``default`` for every channel when not given."""
    import numpy as np

    if text is None:
        return np.full(channels, default, np.float32)
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise UsageError(f"--{what} must be numbers separated by commas, got {text!r}") from None
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise UsageError(f"--{what} needs 1 or {channels} values (one per input channel), got {len(values)}")
    arr = np.asarray(values, np.float32)
    if what == "std" and (arr <= 0).any():
        raise UsageError("--std values must be positive")
    return arr


def write_checkpoint(result: ImportResult, out: str | Path, source: str | Path, *,
                     mean: str | None = None, std: str | None = None):
    """A training checkpoint holding the imported weights (``eval``, ``predict``, ``viz``,
    ``export``). Returns its path."""
    from ..training.runs import BEST, save_checkpoint
    from ..training.train import TrainConfig
    from dataclasses import asdict

    model = result.model
    c = model.input_shape[0]
    out = Path(out)
    path = out / BEST if out.suffix != ".npz" else out
    cfg = TrainConfig.from_header(model.header)
    arrays = {f"param.{k}": v for k, v in result.state.items()}
    arrays["data.mean"] = norm_values(mean, c, "mean", 0.0)
    arrays["data.std"] = norm_values(std, c, "std", 1.0)
    meta = {"kind": "cnnc-training", "model_text": model.source, "model_file": model.filename,
            "design": model.design.as_dict() if model.design is not None else {},
            "input_shape": list(model.input_shape), "classes": model.classes, "class_names": [],
            "data_name": cfg.data, "config": asdict(cfg), "imported_from": str(source),
            "finished": True, "history": []}
    if out.suffix != ".npz":
        out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, arrays, meta)
    return path


__all__ = ["import_onnx", "read_graph", "structure", "write_checkpoint", "OnnxImportError", "ImportResult",
           "SUPPORTED_OPS"]
