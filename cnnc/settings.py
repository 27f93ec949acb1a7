"""Header lines of a model file: the network's own (`input`, `classes`, `width`) and
training settings (as Darknet's [net] section has them), which command-line flags override."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import SourceError
from .syntax import Setting


@dataclass(frozen=True)
class SettingSpec:
    key: str
    kind: str  # "shape", "int", "float", "bool", "choice", "str"
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("input", "shape", "input shape CxHxW (an image) or CxL (a sequence: a 1-D network), "
                                  "e.g. input 3x32x32, input 1x100"),
    SettingSpec("classes", "int", "number of classes (outputs of the last fc)", minimum=1),
    SettingSpec("width", "int", "filters of the first conv without a count (default 32)", minimum=1),
    SettingSpec("data", "str", "data set: a name (digits, mnist, fashion-mnist, cifar10) or a path"),
    SettingSpec("epochs", "int", "training epochs", minimum=1),
    SettingSpec("batch", "int", "mini-batch size", minimum=1),
    SettingSpec("lr", "float", "learning rate", minimum=0.0),
    SettingSpec("optimizer", "choice", "optimizer", choices=("sgd", "adam", "adamw")),
    SettingSpec("momentum", "float", "SGD momentum", minimum=0.0),
    SettingSpec("nesterov", "bool", "Nesterov momentum (SGD)"),
    SettingSpec("weight_decay", "float", "weight decay (L2 for sgd/adam, decoupled for adamw)", minimum=0.0),
    SettingSpec("schedule", "choice", "learning-rate schedule", choices=("constant", "step", "cosine")),
    SettingSpec("step_size", "int", "epochs between decays of the step schedule", minimum=1),
    SettingSpec("gamma", "float", "decay factor of the step schedule", minimum=0.0),
    SettingSpec("warmup", "int", "epochs of linear learning-rate warm-up", minimum=0),
    SettingSpec("augment", "choice", "data augmentation",
                choices=("none", "crop", "flip", "crop+flip", "auto")),
    SettingSpec("seed", "int", "random seed", minimum=0),
    SettingSpec("val_split", "float", "fraction of the training data held out for validation", minimum=0.0),
    SettingSpec("fit", "bool", "pad/crop images to the input size and convert grey<->RGB"),
)
SETTING_KEYS = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Header:
    """The header values of a model file (None where not given)."""

    input: tuple[int, ...] | None = None  # (C, H, W), or (C, L) for a 1-D network
    classes: int | None = None
    width: int | None = None
    data: str | None = None
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    step_size: int | None = None
    gamma: float | None = None
    warmup: int | None = None
    augment: str | None = None
    seed: int | None = None
    val_split: float | None = None
    fit: bool | None = None

    def training(self) -> dict[str, Any]:
        """The training settings that were given, by name."""
        skip = {"input", "classes", "width"}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in skip and getattr(self, f.name) is not None}


def _bad(setting: Setting, message: str, hint: str | None = None) -> SourceError:
    return SourceError(message, setting.value_span, "header", hint=hint)


def _convert(spec: SettingSpec, s: Setting) -> Any:
    v = s.value
    if spec.kind == "shape":
        if isinstance(v, tuple) and len(v) in (2, 3) and all(d > 0 for d in v):
            return v  # CxL (issue 11: 1-D networks) or CxHxW
        raise _bad(s, f"input must be a shape CxHxW (an image) or CxL (a sequence) with positive "
                      f"sizes, got {'x'.join(map(str, v)) if isinstance(v, tuple) else repr(v)}",
                   hint="e.g. input 3x32x32, or input 1x100 for a 1-D network")
    if spec.kind == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise _bad(s, f"{spec.key} must be an integer, got {v!r}")
        if spec.minimum is not None and v < spec.minimum:
            raise _bad(s, f"{spec.key} must be at least {spec.minimum:g}, got {v}")
        return v
    if spec.kind == "float":
        if not isinstance(v, (int, float)):
            raise _bad(s, f"{spec.key} must be a number, got {v!r}")
        if spec.minimum is not None and v < spec.minimum:
            raise _bad(s, f"{spec.key} must be at least {spec.minimum:g}, got {v}")
        if spec.key == "val_split" and v >= 1:
            raise _bad(s, f"val_split must be below 1, got {v}")
        return float(v)
    if spec.kind == "bool":
        if v in ("true", "false"):
            return v == "true"
        raise _bad(s, f"{spec.key} must be true or false, got {v!r}")
    if spec.kind == "choice":
        if v in spec.choices:
            return v
        raise _bad(s, f"{spec.key} must be one of {', '.join(spec.choices)}, got {v!r}")
    if not isinstance(v, str):
        v = "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return v


def read_header(settings: tuple[Setting, ...], is_layer) -> Header:
    """Check every header line; ``is_layer(name)`` tells a layer name from a typo'd key."""
    import difflib

    values: dict[str, Any] = {}
    seen: dict[str, Setting] = {}
    for s in settings:
        spec = SETTING_KEYS.get(s.key)
        if spec is None:
            if is_layer(s.key):
                after = f"'{s.value}'" if isinstance(s.value, (str, int, float)) else "what follows it"
                raise SourceError(f"missing '-' between '{s.key}' and {after}", s.value_span, "syntax",
                                  hint="layers are joined with '-', e.g. conv3 - relu")
            close = difflib.get_close_matches(s.key, list(SETTING_KEYS), n=1)
            raise SourceError(f"unknown setting '{s.key}'", s.key_span, "header",
                              hint=f"did you mean '{close[0]}'?" if close else
                              "settings: " + ", ".join(SETTING_KEYS))
        if s.key in seen:
            first = seen[s.key].span
            raise SourceError(f"'{s.key}' is set twice (first on line {first.line})", s.span, "header")
        seen[s.key] = s
        values[s.key] = _convert(spec, s)
    return Header(**values)


def override(header: Header, **given: Any) -> Header:
    """A header with the given (non-None) values replacing the file's."""
    return replace(header, **{k: v for k, v in given.items() if v is not None})
