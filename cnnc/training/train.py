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

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import data as D
from ..runtime.distributed import World, threads_per_rank, world
from ..errors import CheckpointError, DataError, TrainingError, UsageError
from ..kernels.threads import adapt as adapt_threads
from ..kernels.threads import configure as configure_threads
from ..runtime.optim import Optimizer, Schedule, WeightAverage
from .runs import (BEST, CHECKPOINT, PathWriter, commit, crash_point, find_checkpoint, find_weights,
                   history_files, load_training_checkpoint, new_run_dir, params_of, recover,
                   save_checkpoint, training_arrays, training_meta)
from ..lang.settings import DEFAULT_LR, TRAINING

CURVES_EVERY = 30.0  # seconds between redraws of curves.png while training runs
EVAL_BATCH = 500  # images per forward pass of an evaluation
#: Validation accuracies whose first crossing the history records (time to accuracy).
MILESTONES = (0.9, 0.95, 0.98, 0.99, 0.992, 0.995, 0.999)

if TYPE_CHECKING:
    from ..compiler import Model
    from ..runtime.network import Network


class _TrainConfigRules:
    """What :class:`TrainConfig` adds to its fields: validation and derived values."""

    def __post_init__(self) -> None:
        for spec in TRAINING:
            problem = spec.problem(getattr(self, spec.key))
            if problem:
                raise UsageError(problem)
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


#: Training settings: the model file's header lines, overridden by flags/arguments. One
#: field per training setting of :data:`cnnc.lang.settings.SETTINGS`, with its default.
TrainConfig = make_dataclass(
    "TrainConfig", [(s.key, s.type if s.default is not None else s.type | None,
                     field(default=s.default)) for s in TRAINING],
    bases=(_TrainConfigRules,), frozen=True,
    namespace={"__module__": __name__, "__doc__": "Training settings: the model file's header "
               "lines, overridden by flags/arguments (fields: cnnc.lang.settings.TRAINING)."})


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
    ranks: int = 1  # data-parallel processes (MPI)
    allreduce_seconds: float = 0.0  # time spent summing gradients over the ranks
    until: dict | None = None  # with `until`: {"accuracy", "epoch", "seconds"} where it was reached

    @property
    def milestones(self) -> dict[str, dict]:
        """:func:`milestones` of the history: the first epoch (and seconds) at each accuracy."""
        return milestones(self.history)

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
                "out_dir": str(self.out_dir) if self.out_dir else None, "ranks": self.ranks,
                "allreduce_seconds": round(self.allreduce_seconds, 3),
                "until": self.until, "milestones": self.milestones}


def milestones(history: list[dict]) -> dict[str, dict]:
    """For each of :data:`MILESTONES` the validation accuracy reached: ``{"0.99": {"epoch":
    3, "seconds": 21.4}}``, the first epoch at or above it and the training seconds
    (validation included) from the start of the run to the end of that epoch's validation."""
    out: dict[str, dict] = {}
    for row in history:
        acc = row.get("val_accuracy")
        if acc is None or row.get("elapsed") is None:
            continue
        for level in MILESTONES:
            key = f"{level:g}"
            if acc >= level and key not in out:
                out[key] = {"epoch": row["epoch"], "seconds": row["elapsed"]}
    return out


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def prepare_data(model_shape, classes: int | None, cfg: TrainConfig, train_ds: D.Dataset,
                 test_ds: D.Dataset, normalization: tuple | None = None) -> Prepared:
    """Check shapes and classes, hold out validation, normalize with training statistics, or
    with ``normalization`` (a checkpoint's (mean, std)) where that differs from them: weights
    being fine-tuned keep the normalization they were trained with; a resumed run, whose
    statistics are the same, computes them as the uninterrupted run did."""
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
    if normalization is not None and not all(
            np.allclose(np.ravel(a), np.ravel(b), rtol=1e-6, atol=0) for a, b in zip((mean, std), normalization)):
        mean, std = (np.asarray(v, np.float32).ravel() for v in normalization)
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


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def evaluate(net: "Network", x, y, batch: int = EVAL_BATCH, *, mean=None, std=None,
             tta: bool = False) -> dict:
    """Accuracy, mean loss and confusion matrix (rows: true class, columns: predicted),
    inference mode (dropout off, batch norm on running statistics). ``x`` is used as given
    unless ``mean``/``std`` (``TrainResult.mean``/``.std``) are given: then raw images are
    normalized as in training first. ``tta``: each image's logits are the mean of its own
    and its mirror image's (test-time augmentation; only for data trained with flips)."""
    from ..kernels.loss import softmax_xent_forward

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
        prog = net.inference_executor(xb.shape[0])  # batch norm folded, no gradient buffers
        prog.input[...] = xb
        prog.labels[...] = yb
        logits = prog.forward(False)
        if tta:
            logits = logits.copy()
            prog.input[...] = xb[..., ::-1]
            logits += prog.forward(False)
            logits *= 0.5
            total_loss += softmax_xent_forward(logits, prog.labels, prog.probs) * xb.shape[0]
        else:
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


class Controls:
    """Requests to a running Trainer from other threads (a live page's buttons): ``request``
    queues ``("pause"|"resume"|"save"|"stop", None)`` or ``("lr", value)``; the loop carries
    them out between two steps (one attribute read per step when there are none). Pause and
    learning rate act in a single-process run only (the ranks of an MPI run would diverge)."""

    def __init__(self) -> None:
        import threading

        self._queue: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._event = threading.Event()
        self.pending = False  # read by the loop without the lock
        self.paused = False
        self.lr_scale = 1.0  # the learning rate asked for / the schedule's, from the last "lr"

    def request(self, action: str, value: Any = None) -> None:
        if action not in ("pause", "resume", "save", "stop", "lr"):
            raise UsageError(f"unknown control {action!r}")
        if action == "lr" and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise UsageError(f"the learning rate must be a positive number, got {value!r}")
        with self._lock:
            self._queue.append((action, value))
            self.pending = True
        self._event.set()

    def take(self) -> list[tuple[str, Any]]:
        with self._lock:
            out, self._queue, self.pending = self._queue, [], False
            self._event.clear()
        return out

    def wait(self, seconds: float) -> None:
        self._event.wait(seconds)


class Hook:
    """What watches a run from the training thread (``train(..., hooks=[...])``, rank 0 only):
    subclass and override what you need. Each call runs between steps, so it must be quick;
    anything slow belongs on a thread of its own."""

    def on_step(self, trainer: "Trainer", loss: float, correct: int) -> None:
        """After each optimizer step (``trainer.pos`` says where; ``loss`` is the batch's mean)."""

    def on_epoch(self, trainer: "Trainer", row: dict, val: dict | None) -> None:
        """After each epoch's checkpoint: its history ``row`` and the validation metrics
        (with the confusion matrix) or None."""

    def on_control(self, trainer: "Trainer", action: str, value: Any) -> None:
        """After a control request was carried out."""


class Trainer:
    """One training run: network, optimizer, data, generators, outputs."""

    def __init__(self, model: "Model", cfg: TrainConfig, data: Prepared, out_dir: Path | None,
                 progress: bool = True, log=None, world: World | None = None, epoch_callback=None,
                 hooks=()):
        self.model, self.cfg, self.data = model, cfg, data
        self.world = world or World()
        self.epoch_callback = epoch_callback  # (net, data, out_dir, epoch) after each epoch (cnnc train --viz)
        self.hooks = list(hooks)  # see Hook: what watches the run (cnnc train --live) on rank 0
        self.controls = Controls()
        self.out_dir = out_dir
        self.progress = progress and self.world.is_root
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        n = data.x_train.shape[0]
        self.batch = min(cfg.batch, n)  # the global batch, split over the ranks
        ranks = self.world.size
        if self.batch % ranks:
            raise UsageError(f"the batch of {self.batch} images cannot be split evenly over {ranks} ranks",
                             hint=f"use a batch that is a multiple of {ranks}, e.g. --batch "
                                  f"{max(ranks, self.batch // ranks * ranks)}")
        self.local_batch = self.batch // ranks
        if ranks > 1 and not (os.environ.get("CNNC_THREADS") or os.environ.get("NUMBA_NUM_THREADS")):
            configure_threads(threads_per_rank())  # launched by hand: cores / ranks here
        self.net = model.network(seed=cfg.seed)
        self.optimizer = Optimizer(cfg.optimizer, self.net.theta, self.net.grad, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = n // self.batch
        self.schedule = Schedule(cfg.learning_rate, cfg.schedule, cfg.epochs, self.steps_per_epoch,
                                 cfg.warmup, cfg.step_size, cfg.gamma, cfg.peak)
        # an exponential moving average of the weights, for validation, test and the saved weights
        self.ema = (WeightAverage(cfg.ema, self.net.theta, self.net.buffer_flat)
                    if cfg.ema > 0 else None)
        if cfg.tta and not data.augment.flip:
            raise UsageError(f"tta averages each image with its mirror image, but {data.name} is "
                             f"trained with augmentation {data.augment.describe()}, without flips",
                             hint="mirrored digits or letters are other symbols; use tta only "
                                  "with --augment flip or crop+flip (CIFAR-like data)")
        if cfg.until is not None and not len(data.y_val):
            raise UsageError("until stops at a validation accuracy, but this run holds out no "
                             "validation images", hint="use --val-split 0.1, for example")
        self.until: dict | None = None  # where cfg.until was reached
        seeds = np.random.SeedSequence(cfg.seed).spawn(2)
        self.shuffle_rng = np.random.default_rng(seeds[0])  # the same on every rank
        self.aug_rng = np.random.default_rng(seeds[1])
        if ranks > 1:  # each rank augments and drops out with its own draws
            self._rank_generators(0, 0)
        self.comm_seconds = 0.0
        self.epoch_start_state = _rng_state(self.shuffle_rng)
        self.pos = _Position()
        self.history: list[dict] = []
        self._curves_drawn = 0  # epochs in the curves.png written last
        self._committed = 0  # epochs in the run folder's last commit (runs/commit.py)
        self._curves_time = time.perf_counter()
        self._helper = None  # the compile helper while run() runs
        self.best_val: float | None = None
        self.best_score: tuple[float, float] | None = None

    # ---- checkpoints
    def _arrays(self) -> dict[str, np.ndarray]:
        if self.ema is None:
            return training_arrays(self.net.state(), self.optimizer.state(), self.data.mean,
                                   self.data.std)
        # the averaged weights are the checkpoint's weights (what eval, predict and export
        # read, and what validation measured); the training weights go alongside, for resume
        state = {**self.optimizer.state(), **self.ema.state(),
                 "ema.train_theta": self.net.theta.copy(),
                 "ema.train_buffers": self.net.buffer_flat.copy()}
        with self.ema.swapped():
            return training_arrays(self.net.state(), state, self.data.mean, self.data.std)

    def _meta(self) -> dict:
        return training_meta(
            model_text=self.model.source,
            model_file=self.model.filename,
            input_shape=list(self.model.input_shape),
            classes=self.net.classes,
            class_names=list(self.data.class_names),
            data_name=self.data.name,
            config=asdict(self.cfg),
            design=self.model.design.as_dict() if self.model.design is not None else {},
            position=asdict(self.pos),
            rng={"epoch_start": self.epoch_start_state, "shuffle": _rng_state(self.shuffle_rng),
                 "augment": _rng_state(self.aug_rng), "dropout": _rng_state(self.net.rng)},
            history=self.history,
            best_val_accuracy=self.best_val,
            best_score=list(self.best_score) if self.best_score else None,
            finished=self.pos.epoch >= self.cfg.epochs,
        )

    def _rank_generators(self, epoch: int, iteration: int) -> None:
        """Rank-specific augmentation and dropout generators, derived from the seed, the rank
        and the position (so a resumed multi-rank run draws afresh, whatever N it had)."""
        key = [self.cfg.seed, self.world.rank, epoch, iteration]
        aug, drop = np.random.SeedSequence(key).spawn(2)
        _set_rng_state(self.aug_rng, np.random.default_rng(aug).bit_generator.state)
        _set_rng_state(self.net.rng, np.random.default_rng(drop).bit_generator.state)

    def save(self, best: bool = False) -> Path | None:
        """Commit the checkpoint (also as ``best.npz`` with ``best``), the history and, when
        due, the curves in one atomic step (:mod:`cnnc.training.runs.commit`): a kill at any
        moment leaves the previous epoch's files or this one's, never a mix."""
        if self.out_dir is None or not self.world.is_root:
            return None
        arrays, meta = self._arrays(), self._meta()
        files = {CHECKPOINT: PathWriter(lambda path: save_checkpoint(path, arrays, meta))}
        if best:
            files[BEST] = CHECKPOINT  # the same file: both are this moment's state
        files.update(self._history_files())
        self._commit(files)
        self._committed = len(self.history)
        return self.out_dir / CHECKPOINT

    def _commit(self, files: dict) -> None:
        done = f"epoch {self._committed}" if self._committed else "the start"
        at = f"epoch {self.pos.epoch}" + (f", step {self.pos.iteration}" if self.pos.iteration else "")
        commit(self.out_dir, files, what=f"checkpoint of {at}",
               on_error_hint=f"the run folder keeps its previous checkpoint (from {done}); free "
                             "some space and continue with --resume")

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        try:
            self.net.load_state(params_of(arrays))
            self.optimizer.load_state(arrays)
            if self.ema is not None:  # the checkpoint's weights are the average (see _arrays)
                self.ema.load_state(arrays)
                self.net.theta[...] = arrays["ema.train_theta"]
                self.net.buffer_flat[...] = arrays["ema.train_buffers"]
        except (UsageError, KeyError, ValueError) as err:
            raise CheckpointError(f"the checkpoint does not match this model: {getattr(err, 'message', err)}") from None
        self.pos = _Position(**meta["position"])
        rng = meta["rng"]
        self.epoch_start_state = rng["epoch_start"]
        _set_rng_state(self.shuffle_rng, rng["shuffle"])
        _set_rng_state(self.aug_rng, rng["augment"])
        _set_rng_state(self.net.rng, rng["dropout"])
        if self.world.size > 1:
            self._rank_generators(self.pos.epoch, self.pos.iteration)
        self.history = [{"elapsed": None, "reached": "", **row} for row in meta.get("history", [])]
        self.until = None  # a run resumed after reaching `until` stops at once
        for row in self.history:
            if (self.cfg.until is not None and row.get("val_accuracy") is not None
                    and row["val_accuracy"] >= self.cfg.until):
                self.until = {"accuracy": self.cfg.until, "epoch": row["epoch"],
                              "seconds": row["elapsed"]}
                break
        self._committed = len(self.history)
        self.best_val = meta.get("best_val_accuracy")
        self.best_score = tuple(meta["best_score"]) if meta.get("best_score") else None

    # ---- outputs
    def write_history(self, final: bool = False) -> None:
        """history.csv/json after every epoch; curves.png at the end of the run (finished,
        interrupted or failed) and in between at most every CURVES_EVERY seconds, so a
        short epoch does not wait for matplotlib."""
        if self.out_dir is None or not self.history or not self.world.is_root:
            return
        files = self._history_files(final)
        if files:
            self._commit(files)

    def _history_files(self, final: bool = False) -> dict[str, bytes]:
        """history.csv/json of the committed epochs and, when due, curves.png."""
        history = self.history[:self._committed] if final else self.history
        if not history:
            return {}
        curves = self._curves_drawn != len(history) and (
            final or time.perf_counter() - self._curves_time >= CURVES_EVERY)
        if final and not curves:
            return {}
        files = history_files(history, f"{self.model.filename} on {self.data.name}", curves=curves)
        if curves:
            self._curves_drawn, self._curves_time = len(history), time.perf_counter()
        return files

    @contextlib.contextmanager
    def _final_curves(self):
        """curves.png of every epoch when the loop ends, however it ends (an error while
        drawing after a failed run does not hide the failure)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.write_history(final=True)
            raise
        self.write_history(final=True)

    # ---- loop
    def _helper_spec(self) -> dict | None:
        """What a compile helper (:mod:`cnnc.training.precompile`) needs, or None where none should run."""
        from . import precompile

        if self.world.size > 1 or not precompile.wanted():
            return None
        return precompile.spec_for(self.model, self.net, self.local_batch, self.cfg,
                                   [len(self.data.y_val), len(self.data.y_test)], EVAL_BATCH)

    def run(self) -> TrainResult:
        """Train to the configured epoch count (or an interruption) and test. On a cold
        kernel cache a helper process compiles kernels alongside until the first epoch ends."""
        from .precompile import CompileHelper

        with CompileHelper(self._helper_spec()) as self._helper:
            return self._run()

    def _run(self) -> TrainResult:
        from tqdm import tqdm

        cfg, data, net, world = self.cfg, self.data, self.net, self.world
        prog = net.executor(self.local_batch)
        prog.label_smoothing = cfg.label_smoothing
        # every rank starts from rank 0's parameters and batch-norm statistics
        world.broadcast(net.theta)
        world.broadcast(net.buffer_flat)
        for op in prog.ops.values():
            op.join(world)
        x_train, x_in = data.x_train, prog.input
        if x_train.ndim == 3:  # sequences (N, C, L): batched as one-row images, as stored
            x_train, x_in = x_train[:, :, None, :], x_in[:, :, None, :]
        train_set = D.Dataset(x_train, data.y_train, data.class_names, data.name)
        batches = D.Batches(train_set, self.local_batch, shuffle=False, drop_last=True,
                            augment=data.augment, augment_rng=self.aug_rng, out=(x_in, prog.labels))
        stats = np.zeros(2, np.float64)  # loss sum and correct predictions of a global batch
        start = time.perf_counter() - self.pos.seconds
        next_adapt = time.perf_counter() + 2.0
        interrupted = False
        with _Interrupt() as stop, self._final_curves():
            while self.pos.epoch < cfg.epochs and self.until is None:
                epoch = self.pos.epoch
                # the permutation of this epoch comes from the state saved at its start
                _set_rng_state(self.shuffle_rng, self.epoch_start_state)
                perm = self.shuffle_rng.permutation(data.x_train.shape[0])
                after_perm = _rng_state(self.shuffle_rng)
                # rank r's share of global batch k: its images r, r + N, r + 2N, ...
                order = self._shard(perm)
                if self.pos.iteration == 0:
                    self.pos.loss_sum, self.pos.correct, self.pos.seen = 0.0, 0, 0
                bar = tqdm(total=self.steps_per_epoch, initial=self.pos.iteration, leave=False,
                           disable=not self.progress or None, unit="step", file=sys.stderr,
                           desc=f"epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
                t_epoch = time.perf_counter()
                compiled_before = self._compiling()
                images_epoch = 0
                with bar:
                    for it in range(self.pos.iteration, self.steps_per_epoch):
                        if self.controls.pending:  # pause, save, stop, lr from a hook's thread
                            paused = self._apply_controls(stop, epoch, it)
                            t_epoch, start = t_epoch + paused, start + paused
                        if world.any(stop.requested):  # every rank stops at the same step
                            stop.requested = True
                            break
                        batches.load(order, it)
                        loss, correct = net.step(prog, training=True)
                        if world.size > 1:
                            loss, correct = self._reduce(loss, correct, stats)
                        if not math.isfinite(loss):
                            raise TrainingError(
                                f"the loss became {loss} at epoch {epoch + 1}, step {it + 1} "
                                f"(learning rate {self.schedule.lr(epoch, it):g})",
                                hint="lower the learning rate (--lr) or add batch norm; the last "
                                     "good checkpoint is kept" if self.out_dir else
                                     "lower the learning rate (--lr) or add batch norm")
                        self.optimizer.step(self.schedule.lr(epoch, it) * self.controls.lr_scale)
                        if self.ema is not None:
                            self.ema.update()
                        if time.perf_counter() > next_adapt:  # follow the machine's idle cores
                            adapt_threads()
                            next_adapt = time.perf_counter() + 2.0
                        self.pos.iteration = it + 1
                        self.pos.loss_sum += loss * self.batch
                        self.pos.correct += correct
                        self.pos.seen += self.batch
                        images_epoch += self.batch
                        if self.progress and (it % 10 == 0 or it + 1 == self.steps_per_epoch):
                            busy = time.perf_counter() - t_epoch - (self._compiling() - compiled_before)
                            rate = images_epoch / max(busy, 1e-9)
                            bar.set_postfix(loss=f"{self.pos.loss_sum / self.pos.seen:.4f}",
                                            acc=f"{self.pos.correct / self.pos.seen:.4f}",
                                            img_s=f"{rate:,.0f}", refresh=False)
                        bar.update(1)
                        for hook in self.hooks:
                            hook.on_step(self, loss, correct)
                self.pos.seconds = time.perf_counter() - start
                if stop.requested:
                    interrupted = True
                    _set_rng_state(self.shuffle_rng, after_perm)
                    break
                self._end_epoch(epoch, time.perf_counter() - t_epoch, images_epoch,
                                self._compiling() - compiled_before)
                if self.until is not None:  # cfg.until reached: stop here
                    break
        self.pos.seconds = time.perf_counter() - start
        if interrupted:
            path = self.save()
            if self.world.is_root:
                self.log(f"interrupted at epoch {self.pos.epoch + 1}, step {self.pos.iteration}"
                         + (f"; saved {path}" if path else ""))
        test = self._evaluate(data.x_test, data.y_test) if len(data.y_test) else {}
        if world.size > 1:  # no rank leaves before rank 0 has written and said everything
            world.any(False)  # (a rank that exits with 130 first gets the others killed)
        return TrainResult(net, self.history, test, self.out_dir, interrupted, self.best_val, self.pos.seconds,
                           data.mean, data.std, world.size, self.comm_seconds, self.until)

    def _evaluate(self, x, y) -> dict:
        """:func:`evaluate` with the averaged weights (``ema``) and ``tta`` where set."""
        if self.ema is None:
            return evaluate(self.net, x, y, tta=self.cfg.tta)
        with self.ema.swapped():
            return evaluate(self.net, x, y, tta=self.cfg.tta)

    def _apply_controls(self, stop: "_Interrupt", epoch: int, it: int) -> float:
        """Carry out the control requests (:class:`Controls`) between two steps; while paused,
        wait here (Ctrl-C and a stop request still end the pause). The seconds paused."""
        t0 = time.perf_counter()
        while True:
            for action, value in self.controls.take():
                if action == "lr" and self.world.size == 1:
                    base = self.schedule.lr(epoch, it)
                    self.controls.lr_scale = float(value) / base if base > 0 else 1.0
                    self.log(f"learning rate set to {float(value):g} at epoch {epoch + 1}, step {it + 1}")
                elif action == "save":
                    self.save()
                elif action == "stop":
                    stop.requested = True
                elif action in ("pause", "resume") and self.world.size == 1:
                    self.controls.paused = action == "pause"
                for hook in self.hooks:
                    hook.on_control(self, action, value)
            if not self.controls.paused or stop.requested:
                self.controls.paused = False
                return time.perf_counter() - t0
            self.controls.wait(0.1)

    def _shard(self, perm: np.ndarray) -> np.ndarray:
        """The order this rank visits: of each global batch, the images rank, rank + N, ..."""
        if self.world.size == 1:
            return perm
        used = perm[:self.steps_per_epoch * self.batch].reshape(self.steps_per_epoch, self.batch)
        return np.ascontiguousarray(used[:, self.world.rank::self.world.size]).reshape(-1)

    def _reduce(self, loss: float, correct: int, stats: np.ndarray) -> tuple[float, int]:
        """Sum the gradients over the ranks (one Allreduce of the flat array) and average
        them; the global batch's mean loss and correct count."""
        t = time.perf_counter()
        self.world.allreduce_sum(self.net.grad)
        self.net.grad *= 1.0 / self.world.size
        stats[0], stats[1] = loss * self.local_batch, correct
        self.world.allreduce_sum(stats)
        self.comm_seconds += time.perf_counter() - t
        return float(stats[0]) / self.batch, int(stats[1])

    def _compiling(self) -> float:
        """Seconds spent so far compiling kernels or waiting for the compile helper's."""
        from ..kernels.events import compile_seconds

        return compile_seconds() + (self._helper.waited if self._helper is not None else 0.0)

    def _end_epoch(self, epoch: int, seconds: float, images: int, compiling: float = 0.0) -> None:
        """``compiling``: the seconds of the epoch's steps spent compiling kernels (a cold
        cache), left out of its speed and shown apart."""
        cfg, data = self.cfg, self.data
        crash_point("validation")
        t_val = time.perf_counter()
        val = self._evaluate(data.x_val, data.y_val) if len(data.y_val) else None
        elapsed = self.pos.seconds + (time.perf_counter() - t_val)  # from the run's start
        before = milestones(self.history)
        row = {
            "epoch": epoch + 1,
            "lr": self.schedule.lr(epoch, max(self.steps_per_epoch - 1, 0)) * self.controls.lr_scale,
            "train_loss": self.pos.loss_sum / max(self.pos.seen, 1),
            "train_accuracy": self.pos.correct / max(self.pos.seen, 1),
            "val_loss": val["loss"] if val else None,
            "val_accuracy": val["accuracy"] if val else None,
            "images_per_s": images / max(seconds - compiling, 1e-9) if images else None,
            "seconds": seconds,
            "compile_seconds": compiling,
            "elapsed": elapsed,
        }
        self.history.append(row)
        row["reached"] = " ".join(k for k in milestones(self.history) if k not in before)
        if (cfg.until is not None and self.until is None and val is not None
                and val["accuracy"] >= cfg.until):
            self.until = {"accuracy": cfg.until, "epoch": epoch + 1, "seconds": elapsed}
            if self.world.is_root:
                self.log(f"validation accuracy {val['accuracy']:.4f} reached {cfg.until:g} at "
                         f"epoch {epoch + 1} after {elapsed:.1f}s of training; stopping")
        if self._helper is not None:  # every kernel of a step and an evaluation is compiled now
            self._helper.stop()
        self.pos.epoch = epoch + 1
        self.pos.iteration = 0
        self.epoch_start_state = _rng_state(self.shuffle_rng)
        # best = highest validation accuracy; ties go to the lower validation loss
        score = (val["accuracy"], -val["loss"]) if val is not None else None
        improved = score is not None and (self.best_score is None or score > tuple(self.best_score))
        if improved:
            self.best_val = val["accuracy"]
            self.best_score = score
        # checkpoint, best and history in one commit (the manifest run.json): a kill leaves
        # the previous epoch's set or this one's, and a resume replays this epoch exactly
        crash_point("before-commit")
        self.save(best=improved or (val is None and epoch + 1 == cfg.epochs))
        if self.epoch_callback is not None and self.world.is_root:
            self.epoch_callback(self.net, data, self.out_dir, epoch + 1)
        for hook in self.hooks:
            hook.on_epoch(self, row, val)
        msg = (f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.4f}")
        if val:
            msg += f"  val_loss {val['loss']:.4f}  val_acc {val['accuracy']:.4f}"
        msg += f"  {row['images_per_s'] or 0:,.0f} img/s  {seconds:.1f}s"
        if compiling >= 0.05:
            msg += f" ({compiling:.1f}s of it compiling kernels)"
        if self.progress:
            self.log(msg)


# ---------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------


def train(model: "Model", *, x=None, y=None, x_test=None, y_test=None, out: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = False, new_run: bool = False,
          epoch_callback=None, notice: bool = True, hooks=(), **settings: Any) -> TrainResult:
    """Train a compiled model.

    Data: the file's/``data=`` data set (name or path), or NumPy arrays ``x``, ``y`` (and
    ``x_test``, ``y_test``; without them the test metrics are empty). ``settings`` are
    :class:`TrainConfig` fields (``epochs``, ``batch``, ``lr``, ``optimizer``...) and override
    the model file's. ``out``: a folder for checkpoints and history (None: keep nothing on
    disk; ``new_run=True``: a new numbered ``runs/<model>`` folder, made once the data is
    ready). ``resume``: a run folder or checkpoint to continue. ``epoch_callback(net, data,
    out_dir, epoch)`` runs after each epoch's checkpoint (``cnnc train --viz``); ``hooks``
    (:class:`Hook` objects, rank 0 only) watch every step and epoch (``cnnc train --live``). ``notice``:
    say on stderr when kernels compile on a cold cache (:mod:`cnnc.runtime.notice`).
    """
    unknown = set(settings) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise UsageError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    arrays = meta = initial = normalization = None
    if resume is not None:
        if Path(resume).is_dir() and world().is_root:  # what a kill during a commit left behind
            recover(resume)
        try:
            resumed = find_checkpoint(resume)
        except CheckpointError:  # a folder of imported weights holds best.npz only
            resumed = find_weights(resume)
        arrays, meta = load_training_checkpoint(resumed, named=resume)
        normalization = (arrays["data.mean"], arrays["data.std"])
        if "position" in meta:  # a training checkpoint: continue exactly where it stopped
            cfg_values = dict(meta["config"])
            if settings.get("epochs") is not None:
                cfg_values["epochs"] = settings["epochs"]
            cfg = TrainConfig(**cfg_values)
        else:  # weights only (cnnc import, import-weights): fine-tune them from epoch 1
            cfg = TrainConfig.from_header(model.header, **settings)
            initial = arrays
            arrays = meta = None
    else:
        cfg = TrainConfig.from_header(model.header, **settings)
    data_spec, data_dir = D.recorded_source(cfg.data, cfg.data_dir)  # the run records absolute paths
    cfg = replace(cfg, data=data_spec, data_dir=data_dir)
    if x is not None:
        train_ds = D.dataset_from_arrays(x, y, "x")
        test_ds = (D.dataset_from_arrays(x_test, y_test, "x_test", train_ds.class_names) if x_test is not None
                   else train_ds.subset(np.arange(0)))
    else:
        train_ds, test_ds = D.resolve_dataset(cfg.data, cfg.data_dir)
    if model.classes is None:
        from ..compiler import compile as compile_text

        model = compile_text(model.source, filename=model.filename, input=model.input_shape,
                             classes=train_ds.num_classes, width=model.header.width,
                             variables=model.design.as_dict() if model.design is not None else None)
    data = prepare_data(model.input_shape, model.classes, cfg, train_ds, test_ds, normalization)
    out_dir = Path(out) if out is not None else None
    the_world = world()
    if resume is not None:
        out_dir = resumed.parent
    elif out_dir is not None or new_run:
        # rank 0 makes (and numbers) the folder; the others learn its name
        if the_world.is_root:
            out_dir = new_run_dir(model.filename, str(out_dir) if out_dir is not None else None)
        name = the_world.broadcast_text(str(out_dir) if the_world.is_root else None)
        out_dir = Path(name) if name else None
    from ..runtime.notice import CompileNotice
    from . import precompile

    with CompileNotice(enabled=notice and the_world.is_root, helpers=precompile.started):
        trainer = Trainer(model, cfg, data, out_dir, progress=progress, world=the_world,
                          epoch_callback=epoch_callback, hooks=hooks if the_world.is_root else ())
        if arrays is not None:
            trainer.restore(arrays, meta)
        elif initial is not None:
            try:
                trainer.net.load_state(params_of(initial))
            except UsageError as err:
                raise CheckpointError(f"{resume}: the weights do not match this model: {err.message}") from None
        return trainer.run()
