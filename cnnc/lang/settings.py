"""Settings: the one table from which a model file's header lines (the network's own
`input`, `classes`, `width`, and training settings as Darknet's [net] section has them),
the training configuration (:class:`cnnc.training.train.TrainConfig`: fields, defaults,
validation) and the ``cnnc train`` flags (names, types, choices, help) are all derived.

Add a training setting by adding one :class:`SettingSpec` row to :data:`SETTINGS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, make_dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import SourceError

if TYPE_CHECKING:
    from .syntax import Setting

_TYPES = {"shape": tuple, "int": int, "float": float, "bool": bool, "choice": str, "str": str}


@dataclass(frozen=True)
class SettingSpec:
    """One setting. ``header``: a model-file header line; ``training``: a field of the
    training configuration (with ``default``) and a ``cnnc train`` flag in ``group``.

    Rules (checked for header lines and configurations alike): ``minimum`` (inclusive),
    ``positive`` (finite and > 0), ``below`` (exclusive upper bound, with ``minimum``), ``maximum`` (inclusive)."""

    key: str
    kind: str  # "shape", "int", "float", "bool", "choice", "str"
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    positive: bool = False
    below: float | None = None
    maximum: float | None = None  # inclusive upper bound
    header: bool = True
    training: bool = True
    default: Any = None
    default_text: str | None = None  # how --help states the default (None: the default itself)
    group: str = "optimization"
    metavar: str | None = None
    strict_choices: bool = True  # False: header lines take only `choices` (or `pattern`);
    #                              flags and the API take more, checked where used (augment)
    pattern: str | None = None  # a regular expression header values may match besides `choices`

    @property
    def type(self) -> type:
        """The Python type of the setting's values."""
        return _TYPES[self.kind]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def problem(self, value: Any, header: bool = False) -> str | None:
        """What is wrong with a value of the right type (None: nothing); ``header``: the
        value of a header line."""
        if self.kind == "choice" and (header or self.strict_choices) and value not in self.choices:
            import re

            if not (self.pattern and isinstance(value, str) and re.fullmatch(self.pattern, value)):
                more = " or cropN (crop with padding N)" if self.pattern else ""
                return f"{self.key} must be one of {', '.join(self.choices)}{more}, got {value!r}"
        if value is None or self.kind not in ("int", "float"):
            return None
        if self.positive and not (math.isfinite(value) and value > 0):
            return f"{self.key} must be a positive number, got {value}"
        if self.below is not None and not (self.minimum <= value < self.below):
            return f"{self.key} must lie in [{self.minimum:g}, {self.below:g}), got {value}"
        if self.minimum is not None and value < self.minimum:
            return f"{self.key} must be at least {self.minimum:g}, got {value}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.key} must be at most {self.maximum:g}, got {value}"
        return None


#: The learning rate for each optimizer when ``lr`` is not given.
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}


def _by_value(defaults: dict[str, float]) -> str:
    """``{"sgd": 0.01, "adam": 0.001, "adamw": 0.001}`` -> ``0.01 sgd, 0.001 adam/adamw``."""
    names: dict[float, list[str]] = {}
    for name, value in defaults.items():
        names.setdefault(value, []).append(name)
    return ", ".join(f"{value:g} {'/'.join(n)}" for value, n in names.items())


_DATA_HELP = ("digits (built in), mnist, fashion-mnist, cifar10, a folder of IDX files, CIFAR-10 "
              "binary batches or class subfolders of images, or an .npz with x, y")

SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("input", "shape", "input shape CxHxW (an image) or CxL (a sequence: a 1-D network), "
                "e.g. input 3x32x32, input 1x100", training=False),
    SettingSpec("classes", "int", "number of classes (outputs of the last fc)", minimum=1,
                training=False),
    SettingSpec("width", "int", "filters of the first conv without a count (default 32)",
                minimum=1, training=False),
    SettingSpec("data", "str", _DATA_HELP, default="digits", group="data", metavar="NAME|PATH",
                default_text="the file's `data` line, else digits"),
    SettingSpec("data_dir", "str", "where named data sets live; missing ones are downloaded "
                "there when the network allows", header=False, group="data", metavar="DIR",
                default_text="$CNNC_DATA, else ~/.cache/cnnc/data"),
    SettingSpec("epochs", "int", "training epochs", minimum=1, default=10, metavar="N"),
    SettingSpec("batch", "int", "mini-batch size", minimum=1, default=64, metavar="N"),
    SettingSpec("lr", "float", "learning rate", positive=True, metavar="LR",
                default_text=_by_value(DEFAULT_LR)),
    SettingSpec("optimizer", "choice", "optimizer", choices=("sgd", "adam", "adamw"),
                default="sgd"),
    SettingSpec("momentum", "float", "SGD momentum", minimum=0.0, default=0.9, metavar="M"),
    SettingSpec("nesterov", "bool", "Nesterov momentum (SGD)", default=False),
    SettingSpec("weight_decay", "float", "weight decay: L2 for sgd/adam, decoupled for adamw",
                minimum=0.0, default=0.0, metavar="WD"),
    SettingSpec("schedule", "choice", "learning-rate schedule: constant, step, cosine, or "
                "onecycle (a triangle: up linearly to lr over the first `peak` of training, "
                "then down linearly towards zero)",
                choices=("constant", "step", "cosine", "onecycle"), default="constant"),
    SettingSpec("step_size", "int", "epochs between decays of the step schedule", minimum=1,
                default=30, metavar="N"),
    SettingSpec("gamma", "float", "decay factor of the step schedule", minimum=0.0, default=0.1,
                metavar="G"),
    SettingSpec("warmup", "int", "epochs of linear learning-rate warm-up", minimum=0, default=0,
                metavar="N"),
    SettingSpec("peak", "float", "onecycle: the fraction of training over which the learning "
                "rate rises (the warm-up) before it falls", minimum=0.0, below=1.0, default=0.25,
                metavar="F"),
    SettingSpec("label_smoothing", "float", "label smoothing: the target puts 1 - F + F/K on "
                "the label and F/K on each of the K classes", minimum=0.0, below=1.0,
                default=0.0, metavar="F"),
    SettingSpec("ema", "float", "decay of an exponential moving average of the weights, "
                "updated every step and used for validation, test and best.npz (0: off; "
                "e.g. 0.999)", minimum=0.0, below=1.0, default=0.0, metavar="D"),
    SettingSpec("augment", "choice", "data augmentation: none, flip, crop (pad 4), cropN, or "
                "crop+flip", choices=("none", "crop", "flip", "crop+flip", "auto"),
                default="auto", group="data", metavar="SPEC", strict_choices=False,
                pattern=r"crop\d+(\+flip)?",
                default_text="auto, crop+flip for CIFAR-10, none for digits"),
    SettingSpec("tta", "bool", "test-time augmentation: validation and test average the "
                "predictions of each image and its mirror image (only where the training "
                "augmentation flips)", default=False, group="data"),
    SettingSpec("until", "float", "stop as soon as validation accuracy reaches ACC (a "
                "fraction, e.g. 0.992) and report the epoch and seconds", positive=True, maximum=1.0,
                metavar="ACC", default_text="train all epochs"),
    SettingSpec("seed", "int", "random seed: same seed, same result", minimum=0, default=0,
                metavar="N"),
    SettingSpec("val_split", "float", "fraction of the training data held out for validation",
                minimum=0.0, below=1.0, default=0.1, group="data", metavar="F"),
    SettingSpec("fit", "bool", "zero-pad or centre-crop images to the model's input size (e.g. "
                "MNIST 28x28 for LeNet-5's 32x32) and convert grey<->RGB", default=False,
                group="data"),
    SettingSpec("limit", "int", "use only the first N training images", minimum=1, header=False,
                group="data", metavar="N", default_text="all"),
)
#: The header keys a model file may set, by name.
SETTING_KEYS = {s.key: s for s in SETTINGS if s.header}
#: The settings of a training run (TrainConfig's fields, the train flags), in table order.
TRAINING = tuple(s for s in SETTINGS if s.training)


def _training(self) -> dict[str, Any]:
    """The training settings that were given, by name."""
    return {f.name: getattr(self, f.name) for f in fields(self)
            if SETTING_KEYS[f.name].training and getattr(self, f.name) is not None}


#: The header values of a model file (None where not given): one field per header key.
Header = make_dataclass(
    "Header", [(s.key, s.type | None, None) for s in SETTING_KEYS.values()],
    frozen=True, namespace={"training": _training, "__module__": __name__,
                            "__doc__": "The header values of a model file (None where not given)."})


def _bad(setting: "Setting", message: str, hint: str | None = None) -> SourceError:
    return SourceError(message, setting.value_span, "header", hint=hint)


def _convert(spec: SettingSpec, s: "Setting") -> Any:
    v = s.value
    if spec.kind == "shape":
        if isinstance(v, tuple) and len(v) in (2, 3) and all(d > 0 for d in v):
            return v  # CxHxW, or CxL for a 1-D network
        raise _bad(s, f"input must be a shape CxHxW (an image) or CxL (a sequence) with positive "
                      f"sizes, got {'x'.join(map(str, v)) if isinstance(v, tuple) else repr(v)}",
                   hint="e.g. input 3x32x32, or input 1x100 for a 1-D network")
    if spec.kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
        raise _bad(s, f"{spec.key} must be an integer, got {v!r}")
    if spec.kind == "float" and (not isinstance(v, (int, float)) or isinstance(v, bool)):
        raise _bad(s, f"{spec.key} must be a number, got {v!r}")
    if spec.kind == "bool":
        if v not in ("true", "false"):
            raise _bad(s, f"{spec.key} must be true or false, got {v!r}")
        v = v == "true"
    if spec.kind == "str" and not isinstance(v, str):
        v = "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
    problem = spec.problem(v, header=True)
    if problem:
        raise _bad(s, problem)
    return float(v) if spec.kind == "float" else v


def read_header(settings: "tuple[Setting, ...]", is_layer) -> Header:
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


# --------------------------------------------------------------------------- flags

#: The groups of ``cnnc train --help`` (a setting's ``group``) and their titles.
FLAG_GROUPS = {"data": "data", "optimization": "optimization (each overrides the model file's setting)"}
