"""Training, evaluation and prediction on real data.

    >>> model = cnnc.compile_file("models/digits.cnn")
    >>> result = cnnc.fit(model, epochs=5)                     # the file's data set
    >>> result = cnnc.fit(model, x=x, y=y, x_test=xt, y_test=yt, epochs=5)  # NumPy arrays
    >>> result.evaluate(xt, yt)        # raw images, normalized as in training
    >>> cnnc.evaluate(result.network, xt, yt, mean=result.mean, std=result.std)

Every run is reproducible from its seed (data split, shuffling, augmentation, dropout and
initialization each draw from their own seeded generator), and a run resumed from any
checkpoint ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import data as D
from .checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint
from .errors import CheckpointError, DataError, TrainingError, UsageError
from .optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule

if TYPE_CHECKING:
    from .compiler import Model
    from .network import Network

DEFAULT_LR = {"sgd": 0.01, "adam": 0.001, "adamw": 0.001}
CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"


@dataclass(frozen=True)
class TrainConfig:
    """Training settings: the model file's header lines, overridden by flags/arguments."""

    data: str = "digits"
    data_dir: str | None = None
    epochs: int = 10
    batch: int = 64
    optimizer: str = "sgd"
    lr: float | None = None  # None: 0.01 for sgd, 0.001 for adam/adamw
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 30
    gamma: float = 0.1
    warmup: int = 0
    augment: str = "auto"
    seed: int = 0
    val_split: float = 0.1
    fit: bool = False  # pad/crop images (and grey<->RGB) to the model's input shape
    limit: int | None = None  # use only the first N training images (quick experiments)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch >= 1, f"batch must be at least 1, got {self.batch}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"lr must be a positive number, got {self.lr}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.val_split < 1, f"val_split must lie in [0, 1), got {self.val_split}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (self.step_size >= 1, f"step_size must be at least 1, got {self.step_size}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.limit is None or self.limit >= 1, f"limit must be at least 1, got {self.limit}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UsageError("nesterov needs optimizer sgd with momentum > 0")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @classmethod
    def from_header(cls, header, **overrides: Any) -> "TrainConfig":
        """The file's training settings, then every override that is not None."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in header.training().items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None and k in names})
        return cls(**values)


@dataclass
class Prepared:
    """Normalized float32 arrays for training, validation and test, and their origin."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: tuple[str, ...]
    name: str
    augment: D.Augmentation


@dataclass
class TrainResult:
    network: "Network"
    history: list[dict]
    test: dict  # accuracy, loss, images
    out_dir: Path | None
    interrupted: bool = False
    best_val_accuracy: float | None = None
    seconds: float = 0.0
    mean: np.ndarray | None = None  # the input normalization the network was trained with
    std: np.ndarray | None = None

    def normalize(self, x) -> np.ndarray:
        """Images (uint8 or float, as given to training) normalized as in training."""
        return D.to_float(np.asarray(x), self.mean, self.std)

    def evaluate(self, x, y, batch: int = 500) -> dict:
        """:func:`evaluate` on raw images (normalized with the training statistics)."""
        return evaluate(self.network, x, y, batch, mean=self.mean, std=self.std)

    def metrics(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"accuracy": self.test.get("accuracy"), "loss": self.test.get("loss"),
                "test_images": self.test.get("images"), "epochs": len(self.history),
                "val_accuracy": last.get("val_accuracy"), "best_val_accuracy": self.best_val_accuracy,
                "train_loss": last.get("train_loss"), "train_accuracy": last.get("train_accuracy"),
                "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
                "out_dir": str(self.out_dir) if self.out_dir else None}


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def dataset_from_arrays(x, y, name: str = "arrays", class_names=None) -> D.Dataset:
    """A Dataset from NumPy arrays: x (N, C, H, W) uint8 or float, y (N,) integers."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name}: images must be (N, C, H, W), got shape {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if class_names is None:
        k = int(y.max()) + 1 if y.size else 1
        class_names = tuple(str(i) for i in range(k))
    return D.Dataset(x, y, tuple(class_names), name)


def prepare_data(model_shape, classes: int | None, cfg: TrainConfig, train_ds: D.Dataset,
                 test_ds: D.Dataset) -> Prepared:
    """Check shapes and classes, hold out validation, normalize with training statistics."""
    if tuple(train_ds.shape) != tuple(model_shape):
        if not cfg.fit:
            D.check_input_shape(model_shape, train_ds)
        train_ds, test_ds = D.fit_to_shape(train_ds, model_shape), D.fit_to_shape(test_ds, model_shape)
    if classes is not None and train_ds.num_classes > classes:
        raise DataError(f"{train_ds.name} has {train_ds.num_classes} classes but the model has {classes}",
                        hint=f"set `classes {train_ds.num_classes}` in the model file (or --classes)")
    if cfg.limit is not None:
        train_ds = train_ds.subset(np.arange(min(cfg.limit, len(train_ds))))
    rng = np.random.default_rng(cfg.seed)
    train, val = D.split_validation(train_ds, cfg.val_split, rng)
    if len(train) == 0:
        raise DataError(f"{train_ds.name}: no training images left after the validation split")
    mean, std = D.normalize_stats(train)
    augment = (D.augmentations_for(train_ds.name) if cfg.augment == "auto"
               else D.parse_augmentation(cfg.augment))
    # issue 11: a 1-D model takes (N, C, L); sequences are stored as (N, C, 1, L)
    if len(model_shape) == 2 and augment:
        raise DataError(f"augmentation {augment.describe()} works on images, not on sequences",
                        hint="use --augment none for a 1-D network")

    def as_input(x):
        return D.to_float(x, mean, std).reshape(len(x), *model_shape)

    return Prepared(as_input(train.x), train.y, as_input(val.x), val.y,
                    as_input(test_ds.x), test_ds.y, mean, std, train_ds.class_names,
                    train_ds.name, augment)


def load_data(cfg: TrainConfig) -> tuple[D.Dataset, D.Dataset]:
    return D.resolve_dataset(cfg.data, cfg.data_dir)


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def evaluate(net: "Network", x, y, batch: int = 500, *, mean=None, std=None) -> dict:
    """Accuracy, mean loss and confusion matrix (rows: true class, columns: predicted),
    inference mode (dropout off, batch norm on running statistics). ``x`` is used as given
    unless ``mean``/``std`` (``TrainResult.mean``/``.std``) are given: then raw images are
    normalized as in training first."""
    if mean is not None or std is not None:
        x = np.asarray(x)
        if len(net.input_shape) == 2 and x.ndim == 3:  # raw sequences (N, C, L): channels on axis 1
            x = x[:, :, None, :]
        x = D.to_float(x, mean, std)
    x = net._check_x(x)
    y = net._check_y(y, x.shape[0])
    k = net.classes
    confusion = np.zeros((k, k), np.int64)
    total_loss = 0.0
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i: i + batch], y[i: i + batch]
        prog = net.executor(xb.shape[0])
        prog.input[...] = xb
        prog.labels[...] = yb
        logits = prog.forward(False)
        total_loss += prog.loss() * xb.shape[0]
        np.add.at(confusion, (yb, logits.argmax(axis=1)), 1)
    n = max(x.shape[0], 1)
    return {"accuracy": float(np.trace(confusion) / n), "loss": total_loss / n,
            "images": int(x.shape[0]), "confusion": confusion.tolist()}


# ---------------------------------------------------------------------------
# the training loop
# ---------------------------------------------------------------------------


class _Interrupt:
    """SIGINT sets a flag checked between steps; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


@dataclass
class _Position:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # steps done in the current epoch
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


class Trainer:
    """One training run: network, optimizer, data, generators, outputs."""

    def __init__(self, model: "Model", cfg: TrainConfig, data: Prepared, out_dir: Path | None,
                 progress: bool = True, log=None):
        self.model, self.cfg, self.data = model, cfg, data
        self.out_dir = out_dir
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.net = model.network(seed=cfg.seed)
        self.optimizer = Optimizer(cfg.optimizer, self.net.theta, self.net.grad, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        n = data.x_train.shape[0]
        self.batch = min(cfg.batch, n)
        self.steps_per_epoch = n // self.batch
        self.schedule = Schedule(cfg.learning_rate, cfg.schedule, cfg.epochs, self.steps_per_epoch,
                                 cfg.warmup, cfg.step_size, cfg.gamma)
        seeds = np.random.SeedSequence(cfg.seed).spawn(2)
        self.shuffle_rng = np.random.default_rng(seeds[0])
        self.aug_rng = np.random.default_rng(seeds[1])
        self.epoch_start_state = _rng_state(self.shuffle_rng)
        self.pos = _Position()
        self.history: list[dict] = []
        self.best_val: float | None = None
        self.best_score: tuple[float, float] | None = None

    # ---- checkpoints
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"param.{k}": v for k, v in self.net.state().items()}
        arrays.update(self.optimizer.state())
        arrays["data.mean"] = self.data.mean
        arrays["data.std"] = self.data.std
        return arrays

    def _meta(self) -> dict:
        return {
            "kind": "cnnc-training",
            "model_text": self.model.source,
            "model_file": self.model.filename,
            "input_shape": list(self.model.input_shape),
            "classes": self.net.classes,
            "class_names": list(self.data.class_names),
            "data_name": self.data.name,
            "config": asdict(self.cfg),
            "position": asdict(self.pos),
            "rng": {"epoch_start": self.epoch_start_state, "shuffle": _rng_state(self.shuffle_rng),
                    "augment": _rng_state(self.aug_rng), "dropout": _rng_state(self.net.rng)},
            "history": self.history,
            "best_val_accuracy": self.best_val,
            "best_score": list(self.best_score) if self.best_score else None,
            "finished": self.pos.epoch >= self.cfg.epochs,
        }

    def save(self, name: str = CHECKPOINT) -> Path | None:
        if self.out_dir is None:
            return None
        path = self.out_dir / name
        save_checkpoint(path, self._arrays(), self._meta())
        return path

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
        try:
            self.net.load_state(params)
            self.optimizer.load_state(arrays)
        except (UsageError, KeyError, ValueError) as err:
            raise CheckpointError(f"the checkpoint does not match this model: {getattr(err, 'message', err)}") from None
        self.pos = _Position(**meta["position"])
        rng = meta["rng"]
        self.epoch_start_state = rng["epoch_start"]
        _set_rng_state(self.shuffle_rng, rng["shuffle"])
        _set_rng_state(self.aug_rng, rng["augment"])
        _set_rng_state(self.net.rng, rng["dropout"])
        self.history = list(meta.get("history", []))
        self.best_val = meta.get("best_val_accuracy")
        self.best_score = tuple(meta["best_score"]) if meta.get("best_score") else None

    # ---- outputs
    def write_history(self) -> None:
        if self.out_dir is None or not self.history:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.history[0]))
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.out_dir / "history.csv", buf.getvalue())
        atomic_write_text(self.out_dir / "history.json", json.dumps(self.history, indent=1))
        atomic_write_bytes(self.out_dir / "curves.png", plot_history(self.history, self.model.filename))

    # ---- loop
    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg, data, net = self.cfg, self.data, self.net
        prog = net.executor(self.batch)
        xin, labels = prog.input, prog.labels
        scratch = np.empty(xin.shape[1:], xin.dtype)
        start = time.perf_counter() - self.pos.seconds
        interrupted = False
        with _Interrupt() as stop:
            while self.pos.epoch < cfg.epochs:
                epoch = self.pos.epoch
                # the permutation of this epoch comes from the state saved at its start
                _set_rng_state(self.shuffle_rng, self.epoch_start_state)
                perm = self.shuffle_rng.permutation(data.x_train.shape[0])
                after_perm = _rng_state(self.shuffle_rng)
                if self.pos.iteration == 0:
                    self.pos.loss_sum, self.pos.correct, self.pos.seen = 0.0, 0, 0
                bar = tqdm(total=self.steps_per_epoch, initial=self.pos.iteration, leave=False,
                           disable=not self.progress or None, unit="step", file=sys.stderr,
                           desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
                t_epoch = time.perf_counter()
                images_epoch = 0
                with bar:
                    for it in range(self.pos.iteration, self.steps_per_epoch):
                        if stop.requested:
                            break
                        idx = perm[it * self.batch: (it + 1) * self.batch]
                        np.take(data.x_train, idx, axis=0, out=xin)
                        np.take(data.y_train, idx, out=labels)
                        if data.augment:
                            data.augment.apply(xin, self.aug_rng, scratch)
                        loss, correct = net.step(prog, training=True)
                        if not math.isfinite(loss):
                            raise TrainingError(
                                f"the loss became {loss} at epoch {epoch + 1}, step {it + 1} "
                                f"(learning rate {self.schedule.lr(epoch, it):g})",
                                hint="lower the learning rate (--lr) or add batch norm; the last "
                                     "good checkpoint is kept" if self.out_dir else
                                     "lower the learning rate (--lr) or add batch norm")
                        self.optimizer.step(self.schedule.lr(epoch, it))
                        self.pos.iteration = it + 1
                        self.pos.loss_sum += loss * self.batch
                        self.pos.correct += correct
                        self.pos.seen += self.batch
                        images_epoch += self.batch
                        if self.progress and (it % 10 == 0 or it + 1 == self.steps_per_epoch):
                            rate = images_epoch / max(time.perf_counter() - t_epoch, 1e-9)
                            bar.set_postfix(loss=f"{self.pos.loss_sum / self.pos.seen:.4f}",
                                            acc=f"{self.pos.correct / self.pos.seen:.4f}",
                                            img_s=f"{rate:,.0f}", refresh=False)
                        bar.update(1)
                self.pos.seconds = time.perf_counter() - start
                if stop.requested:
                    interrupted = True
                    _set_rng_state(self.shuffle_rng, after_perm)
                    break
                self._end_epoch(epoch, time.perf_counter() - t_epoch, images_epoch)
        self.pos.seconds = time.perf_counter() - start
        if interrupted:
            path = self.save()
            self.log(f"interrupted at epoch {self.pos.epoch + 1}, step {self.pos.iteration}"
                     + (f"; saved {path}" if path else ""))
        test = evaluate(net, data.x_test, data.y_test) if len(data.y_test) else {}
        return TrainResult(net, self.history, test, self.out_dir, interrupted, self.best_val, self.pos.seconds,
                           data.mean, data.std)

    def _end_epoch(self, epoch: int, seconds: float, images: int) -> None:
        cfg, data = self.cfg, self.data
        val = evaluate(self.net, data.x_val, data.y_val) if len(data.y_val) else None
        row = {
            "epoch": epoch + 1,
            "lr": self.schedule.lr(epoch, max(self.steps_per_epoch - 1, 0)),
            "train_loss": self.pos.loss_sum / max(self.pos.seen, 1),
            "train_accuracy": self.pos.correct / max(self.pos.seen, 1),
            "val_loss": val["loss"] if val else None,
            "val_accuracy": val["accuracy"] if val else None,
            "images_per_s": images / max(seconds, 1e-9) if images else None,
            "seconds": seconds,
        }
        self.history.append(row)
        self.pos.epoch = epoch + 1
        self.pos.iteration = 0
        self.epoch_start_state = _rng_state(self.shuffle_rng)
        # best = highest validation accuracy; ties go to the lower validation loss
        score = (val["accuracy"], -val["loss"]) if val is not None else None
        improved = score is not None and (self.best_score is None or score > tuple(self.best_score))
        if improved:
            self.best_val = val["accuracy"]
            self.best_score = score
        self.save()
        if improved or (val is None and epoch + 1 == cfg.epochs):
            self.save(BEST)
        self.write_history()
        msg = (f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.4f}")
        if val:
            msg += f"  val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.4f}"
        msg += f"  {row['images_per_s'] or 0:,.0f} img/s  {seconds:.1f}s"
        if self.progress:
            self.log(msg)


def plot_history(history: list[dict], title: str) -> bytes:
    """PNG bytes of the loss and accuracy curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("loss", "accuracy"), ("cross-entropy loss", "accuracy")):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
        if any(h[f"val_{metric}"] is not None for h in history):
            ax.plot(epochs, [h[f"val_{metric}"] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# run directories
# ---------------------------------------------------------------------------


def new_run_dir(model_file: str, out: str | None) -> Path:
    """``out`` as given (refused if it already holds a run), else ``runs/<model>``, numbered
    ``-2``, ``-3``... so that no earlier run is overwritten."""
    if out is not None:
        path = Path(out)
        if (path / CHECKPOINT).exists():
            raise UsageError(f"{path} already holds a training run",
                             hint=f"continue it with --resume {path}, or choose another --out")
    else:
        stem = Path(model_file).stem if model_file not in ("<string>", "<expr>") else "model"
        base = Path("runs") / stem
        path, k = base, 1
        while (path / CHECKPOINT).exists():
            k += 1
            path = base.parent / f"{base.name}-{k}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the output folder {path}: {err.strerror or err}",
                            hint="choose a writable folder with --out") from None
    return path


def find_checkpoint(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    return p


# ---------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------


def train(model: "Model", *, x=None, y=None, x_test=None, y_test=None, out: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = False, new_run: bool = False,
          **settings: Any) -> TrainResult:
    """Train a compiled model.

    Data: the file's/``data=`` data set (name or path), or NumPy arrays ``x``, ``y`` (and
    ``x_test``, ``y_test``; without them the test metrics are empty). ``settings`` are
    :class:`TrainConfig` fields (``epochs``, ``batch``, ``lr``, ``optimizer``...) and override
    the model file's. ``out``: a folder for checkpoints and history (None: keep nothing on
    disk; ``new_run=True``: a new numbered ``runs/<model>`` folder, made once the data is
    ready). ``resume``: a run folder or checkpoint to continue.
    """
    unknown = set(settings) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise UsageError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    arrays = meta = None
    if resume is not None:
        arrays, meta = load_checkpoint(find_checkpoint(resume))
        if meta.get("kind") != "cnnc-training":
            raise CheckpointError(f"{resume}: not a cnnc training checkpoint")
        cfg_values = dict(meta["config"])
        if settings.get("epochs") is not None:
            cfg_values["epochs"] = settings["epochs"]
        cfg = TrainConfig(**cfg_values)
    else:
        cfg = TrainConfig.from_header(model.header, **settings)
    if x is not None:
        train_ds = dataset_from_arrays(x, y, "x")
        test_ds = (dataset_from_arrays(x_test, y_test, "x_test", train_ds.class_names) if x_test is not None
                   else train_ds.subset(np.arange(0)))
    else:
        train_ds, test_ds = load_data(cfg)
    if model.classes is None:
        from .compiler import compile as compile_text

        model = compile_text(model.source, filename=model.filename, input=model.input_shape,
                             classes=train_ds.num_classes, width=model.header.width)
    data = prepare_data(model.input_shape, model.classes, cfg, train_ds, test_ds)
    out_dir = Path(out) if out is not None else None
    if resume is not None:
        out_dir = find_checkpoint(resume).parent
    elif out_dir is not None or new_run:
        out_dir = new_run_dir(model.filename, str(out_dir) if out_dir is not None else None)
    trainer = Trainer(model, cfg, data, out_dir, progress=progress)
    if arrays is not None:
        trainer.restore(arrays, meta)
    return trainer.run()
