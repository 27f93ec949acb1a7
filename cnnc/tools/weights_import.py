"""``cnnc import-weights FILE --from W -o RUN``: PyTorch-layout tensors -> a cnnc checkpoint.

Sources, all read without pickle: a ``.safetensors`` file (the registry package), or an
``.npz`` archive, e.g. a PyTorch state dict saved as
``np.savez("w.npz", **{k: v.numpy() for k, v in model.state_dict().items()})``.

Layouts: cnnc keeps PyTorch's. A conv weight is (F, C/groups, KH, KW), an fc weight
(out, in) applied to the C-order flattening of its input (``torch.flatten``), batch norm
has ``weight`` (gamma), ``bias`` (beta), ``running_mean`` and ``running_var``
(``num_batches_tracked`` is skipped).

Mapping (``--map``):

* **name**: a tensor named after the cnnc layer, ``conv_1.w`` / ``conv_1.weight``,
  ``bn_1.gamma`` / ``bn_1.weight``, ``bn_1.running_var`` ...
* **order**: the k-th tensor of the file goes to the k-th cnnc tensor, layer by layer in
  execution order, each layer's tensors in PyTorch's order (weight, bias, running_mean,
  running_var). The file's layers are taken in the order an npz was saved in; a safetensors
  file keeps no order (it sorts names), so its layers are sorted naturally (``features.2``
  before ``features.10``). Where that is not the module order (torchvision's ``classifier``
  sorts before ``features``), rename the tensors after cnnc's layers and map by name.
* **auto** (default): by name when every tensor's name is a cnnc name, else by order.

Every pairing is shape-checked; any missing, unused or misshapen tensor is an error and
nothing is written. The checkpoint is a cnnc training checkpoint (``eval``, ``predict``,
``export``, ``--resume`` is not offered: it has no optimizer state) with the normalization
given by ``--mean``/``--std`` (default 0 and 1: inputs x/255 for 8-bit images).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, UsageError

SKIPPED = ("num_batches_tracked",)
# PyTorch's parameter names -> cnnc's: each layer type's ``torch_param_names``


@dataclass(frozen=True)
class Assignment:
    """One row of the table: a cnnc tensor and the source tensor that fills it."""

    target: str  # "conv_1.w"
    shape: tuple[int, ...]
    source: str | None
    source_shape: tuple[int, ...] | None

    @property
    def ok(self) -> bool:
        return self.source is not None and self.shape == self.source_shape


@dataclass(frozen=True)
class ImportPlan:
    mode: str  # "name" | "order"
    rows: tuple[Assignment, ...]
    unused: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.unused

    def to_dict(self) -> dict[str, Any]:
        return {"mapping": self.mode, "ok": self.ok, "unused": list(self.unused), "skipped": list(self.skipped),
                "tensors": [{"target": r.target, "shape": list(r.shape), "source": r.source,
                             "source_shape": list(r.source_shape) if r.source_shape else None, "ok": r.ok}
                            for r in self.rows]}


# ---------------------------------------------------------------------------
# Reading


def _natural_key(name: str) -> list:
    """``features.10`` after ``features.2``: digit runs compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


_SUFFIX_RANK = {"weight": 0, "w": 0, "gamma": 0, "bias": 1, "b": 1, "beta": 1, "running_mean": 2,
                "running_var": 3}


def module_order(names: list[str], keep_layer_order: bool) -> list[str]:
    """Tensor names grouped by layer (the prefix before the last dot), each layer's tensors in
    PyTorch's order (weight, bias, running_mean, running_var). Layers keep the order of first
    appearance when ``keep_layer_order`` (an npz keeps the order it was saved in), else are
    sorted naturally (a safetensors file stores its tensors sorted by name)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.rsplit(".", 1)[0] if "." in n else "", []).append(n)
    layers = list(groups) if keep_layer_order else sorted(groups, key=_natural_key)
    out = []
    for layer in layers:
        out += sorted(groups[layer], key=lambda n: (_SUFFIX_RANK.get(n.rsplit(".", 1)[-1], 9),
                                                    groups[layer].index(n)))
    return out


def read_tensors(path: str | Path) -> dict[str, Any]:
    """name -> float32 array, in the file's order; CheckpointError for anything unreadable."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such weight file")
    out: dict[str, Any] = {}
    if p.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file
        except ImportError:
            raise UsageError("reading .safetensors needs the safetensors package",
                             hint="pip install safetensors") from None
        try:
            tensors = load_file(str(p))
        except (SafetensorError, OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"{p}: damaged safetensors file ({err})") from None
        items = [(k, tensors[k]) for k in module_order(list(tensors), keep_layer_order=False)]
    elif p.suffix == ".npz":
        import zipfile

        try:
            with np.load(p, allow_pickle=False) as z:
                items = [(k, z[k]) for k in module_order(list(z.files), keep_layer_order=True)]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise CheckpointError(f"{p}: not a readable .npz archive ({err})") from None
    else:
        raise UsageError(f"{p}: unknown weight format {p.suffix or '(no suffix)'!r}",
                         hint="give a .safetensors file or an .npz (e.g. a PyTorch state dict saved with np.savez)")
    for k, v in items:
        if v.dtype.kind not in "fiub":
            raise CheckpointError(f"{p}: tensor {k!r} has dtype {v.dtype}, not a number")
        out[k] = np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v
        if v.dtype.kind == "f" and v.size and not np.isfinite(out[k]).all():
            raise CheckpointError(f"{p}: tensor {k!r} holds values that are not numbers "
                                  f"({int((~np.isfinite(out[k])).sum())} NaN or infinite of {v.size})")
    if not out:
        raise CheckpointError(f"{p}: holds no tensors")
    return out


# ---------------------------------------------------------------------------
# Mapping


def _targets(net) -> list[tuple[str, Mapping[str, str], str, tuple[int, ...]]]:
    """(layer, its type's PyTorch names -> cnnc names, cnnc name, shape) of every tensor to fill,
    in PyTorch's per-layer order."""
    out = []
    for layer in net.layer_names():
        torch_names = net.plan.analysis.layer(layer).type.torch_param_names
        tensors = {**net.params.get(layer, {}), **net.buffers.get(layer, {})}
        order = list(torch_names.values())
        names = [n for n in order if n in tensors] + [n for n in tensors if n not in order]
        out += [(layer, torch_names, n, tuple(tensors[n].shape)) for n in names]
    return out


def _cnnc_name(source: str, torch_names: Mapping[str, Mapping[str, str]]) -> str | None:
    """``conv_1.weight`` -> ``conv_1.w`` (and ``conv_1.w`` itself); None if not a cnnc name.
    ``torch_names``: layer -> its type's PyTorch names -> cnnc names."""
    m = re.fullmatch(r"(.+)\.([A-Za-z_]+)", source)
    if not m or m.group(1) not in torch_names:
        return None
    layer, name = m.groups()
    name = torch_names[layer].get(name, name)
    return f"{layer}.{name}"


def plan_import(net, tensors: dict[str, Any], mode: str = "auto") -> ImportPlan:
    if mode not in ("auto", "name", "order"):
        raise UsageError(f"--map must be auto, name or order, got {mode!r}")
    targets = _targets(net)
    torch_names = {layer: names for layer, names, _, _ in targets}
    skipped = tuple(k for k in tensors if k.rsplit(".", 1)[-1] in SKIPPED)
    sources = [k for k in tensors if k not in skipped]
    by_name = {k: _cnnc_name(k, torch_names) for k in sources}
    if mode == "auto":
        mode = "name" if sources and all(by_name.values()) else "order"
    rows = []
    if mode == "name":
        inverse = {}
        for k, v in by_name.items():
            if v is not None:
                if v in inverse:
                    raise CheckpointError(f"tensors {inverse[v]!r} and {k!r} both map to {v}")
                inverse[v] = k
        for layer, _, name, shape in targets:
            src = inverse.get(f"{layer}.{name}")
            rows.append(Assignment(f"{layer}.{name}", shape, src,
                                   tuple(tensors[src].shape) if src else None))
        used = {r.source for r in rows}
        unused = tuple(k for k in sources if k not in used)
    else:
        for i, (layer, _, name, shape) in enumerate(targets):
            src = sources[i] if i < len(sources) else None
            rows.append(Assignment(f"{layer}.{name}", shape, src, tuple(tensors[src].shape) if src else None))
        unused = tuple(sources[len(targets):])
    return ImportPlan(mode, tuple(rows), unused, skipped)


def plan_text(plan: ImportPlan) -> str:
    def shape(s):
        return "x".join(map(str, s)) if s is not None else "-"

    rows = [("cnnc tensor", "shape", "from", "shape", "")]
    for r in plan.rows:
        status = "ok" if r.ok else ("MISSING" if r.source is None else "SHAPE MISMATCH")
        rows.append((r.target, shape(r.shape), r.source or "-", shape(r.source_shape), status))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"mapping by {plan.mode}"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if plan.skipped:
        lines.append(f"skipped (not weights): {', '.join(plan.skipped)}")
    if plan.unused:
        lines.append(f"UNUSED source tensors: {', '.join(plan.unused)}")
    return "\n".join(lines)


def _problems(plan: ImportPlan) -> str:
    bad = [r for r in plan.rows if not r.ok]
    parts = []
    for r in bad[:4]:
        if r.source is None:
            parts.append(f"{r.target} {r.shape} has no source tensor")
        else:
            parts.append(f"{r.source} has shape {r.source_shape}, but {r.target} needs {r.shape}")
    if len(bad) > 4:
        parts.append(f"... {len(bad) - 4} more")
    if plan.unused:
        parts.append(f"{len(plan.unused)} source tensors are left over ({', '.join(plan.unused[:3])}"
                     + (", ..." if len(plan.unused) > 3 else "") + ")")
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Writing


def _norm_values(text: str | None, channels: int, what: str, default: float):
    import numpy as np

    if text is None:
        return np.full(channels, default, np.float32)
    try:
        values = [float(v) for v in text.split(",")]
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


#: what the input normalization of imported weights means, for messages and --help
NORMALIZATION_SCALE = ("per input channel, on the 0..1 scale of pixels / 255 (the values "
                       "torchvision's Normalize takes, e.g. --mean 0.485,0.456,0.406 "
                       "--std 0.229,0.224,0.225 for ImageNet models)")


def import_weights(model, source: str | Path, out: str | Path, *, mode: str = "auto",
                   mean: str | None = None, std: str | None = None, normalize: bool = True,
                   data: str | None = None):
    """Map ``source`` onto ``model``'s tensors and write a checkpoint at ``out``.

    ``mean``/``std`` ("0.485,0.456,0.406" or one value for every channel) are the input
    normalization the weights were trained with (:data:`NORMALIZATION_SCALE`); both are
    required unless ``normalize=False`` declares that the network takes pixels / 255 as they
    are. Returns (plan, path written). Raises CheckpointError (nothing written) when the
    mapping is incomplete or a shape differs."""
    if normalize and (mean is None or std is None):
        missing = " and ".join(f"--{n}" for n, v in (("mean", mean), ("std", std)) if v is None)
        raise UsageError(f"say how the inputs were normalized when these weights were trained: "
                         f"{missing} missing",
                         hint=f"--mean and --std are {NORMALIZATION_SCALE}; --no-normalize if the "
                              "network takes pixels / 255 unchanged")
    if not normalize and (mean is not None or std is not None):
        raise UsageError("--no-normalize and --mean/--std contradict each other")
    from ..training.runs import BEST, save_checkpoint
    from ..training.train import TrainConfig

    c = model.input_shape[0]
    mean_arr = _norm_values(mean, c, "mean", 0.0)
    std_arr = _norm_values(std, c, "std", 1.0)
    tensors = read_tensors(source)
    net = model.network(seed=0)
    plan = plan_import(net, tensors, mode)
    if not plan.ok:
        raise CheckpointError(f"{source} does not fit {model.filename} (mapping by {plan.mode}): "
                              + _problems(plan), hint="the table with --dry-run shows every pairing")
    for r in plan.rows:
        layer, name = r.target.split(".", 1)
        net.set(layer, name, tensors[r.source])
    out = Path(out)
    path = out / BEST if out.suffix != ".npz" else out
    cfg = TrainConfig.from_header(model.header, data=data)
    arrays = {f"param.{k}": v for k, v in net.state().items()}
    arrays["data.mean"], arrays["data.std"] = mean_arr, std_arr
    meta = {"kind": "cnnc-training", "model_text": model.source, "model_file": model.filename,
            "design": model.design.as_dict() if model.design is not None else {},
            "input_shape": list(model.input_shape), "classes": net.classes, "class_names": [],
            "data_name": cfg.data, "config": asdict(cfg), "imported_from": str(source),
            "import_mapping": plan.mode, "finished": True, "history": []}
    if out.suffix != ".npz":
        out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, arrays, meta)
    return plan, path
