"""Training through the Python API: learning, reproducibility, resume, faults, outputs.

Small models on the built-in 8x8 digits keep every run to about a second.
"""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal

import numpy as np
import pytest

import cnnc
from cnnc import atomic
from cnnc.training import data as D
from cnnc.training import runs
from cnnc.training import train as T
from cnnc.errors import CheckpointError, DataError, TrainingError, UsageError
from cnnc.runtime.optim import Optimizer
from conftest import assert_same_params, tmp_files

TINY = "conv3(8) - relu - pool - fc"
# batch norm, dropout and (below) crop augmentation: every random stream a resume must restore
RICH = "conv3(8) - bn - relu - pool - dropout(0.25) - fc(32) - relu - fc"
FAST = dict(batch=32, optimizer="adam", lr=0.01)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = {"seconds", "images_per_s", "elapsed", "compile_seconds"}


def _model(text: str = TINY, shape: str = "1x8x8"):
    return cnnc.compile(text, input=shape, classes=10)


def _learned(history):
    """History rows without the wall-clock columns (the rest must be reproducible)."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def _steps_per_epoch(batch, val_split=0.1):
    tr, te = D.load_digits("train"), D.load_digits("test")
    p = T.prepare_data((1, 8, 8), 10, T.TrainConfig(val_split=val_split), tr, te)
    return len(p.y_train) // batch


@pytest.fixture(scope="module")
def digits():
    return D.load_digits("train"), D.load_digits("test")


# ---------------------------------------------------------------------------- learning


def test_digits_learns_and_same_seed_is_bitwise_reproducible():
    model = _model()
    a = T.train(model, data="digits", epochs=4, **FAST)
    assert a.test["images"] == 360
    assert a.test["accuracy"] > 0.8  # chance is 0.1
    assert a.history[-1]["train_accuracy"] > 0.8
    assert a.history[-1]["val_accuracy"] > 0.8
    assert len(a.history) == 4 and [h["epoch"] for h in a.history] == [1, 2, 3, 4]
    assert a.out_dir is None and not a.interrupted
    b = T.train(model, data="digits", epochs=4, **FAST)
    assert a.network.theta.tobytes() == b.network.theta.tobytes()
    assert a.network.buffer_flat.tobytes() == b.network.buffer_flat.tobytes()
    assert _learned(a.history) == _learned(b.history)
    assert a.test == b.test
    c = T.train(model, data="digits", epochs=4, seed=1, **FAST)
    assert not np.array_equal(a.network.theta, c.network.theta)
    assert _learned(a.history) != _learned(c.history)
    assert c.test["accuracy"] > 0.8


def test_bn_dropout_augment_run_is_reproducible():
    model = _model(RICH)
    kw = dict(data="digits", epochs=2, augment="crop1", **FAST)
    a, b = T.train(model, **kw), T.train(model, **kw)
    assert a.network.theta.tobytes() == b.network.theta.tobytes()
    assert a.network.buffer_flat.tobytes() == b.network.buffer_flat.tobytes()
    assert _learned(a.history) == _learned(b.history)
    assert a.test["accuracy"] > 0.5


def test_metrics_dict():
    r = T.train(_model(), data="digits", epochs=1, **FAST)
    m = r.metrics()
    assert m["accuracy"] == r.test["accuracy"] and m["loss"] == r.test["loss"]
    assert m["test_images"] == 360 and m["epochs"] == 1 and m["interrupted"] is False
    assert m["val_accuracy"] == r.history[-1]["val_accuracy"]
    json.dumps(m)  # serializable as is


# ---------------------------------------------------------------------------- arrays API


def test_train_from_numpy_arrays_and_evaluate(digits):
    tr, te = digits
    model = _model()
    r = T.train(model, x=tr.x, y=tr.y, x_test=te.x, y_test=te.y, epochs=3, **FAST)
    assert r.test["images"] == len(te) and r.test["accuracy"] > 0.8
    # the arrays give the same run as the built-in data set they came from
    ref = T.train(model, data="digits", epochs=3, **FAST)
    assert r.network.theta.tobytes() == ref.network.theta.tobytes()
    # evaluate() on images normalized as in training reproduces the test metrics
    assert r.mean is not None and r.std is not None
    e = T.evaluate(r.network, r.normalize(te.x), te.y)
    assert e["accuracy"] == pytest.approx(r.test["accuracy"])
    assert e["loss"] == pytest.approx(r.test["loss"], rel=1e-6)
    conf = np.array(e["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == len(te)
    assert np.trace(conf) == round(e["accuracy"] * len(te))
    assert (conf.sum(axis=1) == np.bincount(te.y, minlength=10)).all()
    # raw images with the training statistics, or through the result
    for got in (T.evaluate(r.network, te.x, te.y, mean=r.mean, std=r.std), r.evaluate(te.x, te.y)):
        assert got["accuracy"] == pytest.approx(r.test["accuracy"])
        assert got["loss"] == pytest.approx(r.test["loss"], rel=1e-6)
    # inference mode: evaluating twice gives the same numbers, small batches too
    again = T.evaluate(r.network, r.normalize(te.x), te.y, batch=7)
    assert again["confusion"] == e["confusion"]
    assert again["loss"] == pytest.approx(e["loss"], rel=1e-5)


def test_arrays_without_test_set_and_3d_images(digits):
    tr, _ = digits
    r = T.train(_model(), x=tr.x[:, 0].astype(np.float32) / 255, y=tr.y, epochs=1, **FAST)
    assert r.test == {} and r.metrics()["accuracy"] is None
    assert len(r.history) == 1


def test_arrays_bad_labels_and_shapes(digits):
    tr, _ = digits
    with pytest.raises(DataError, match="labels must be integers"):
        T.train(_model(), x=tr.x, y=tr.y.astype(np.float64), epochs=1)
    with pytest.raises(DataError, match="images must be"):
        T.train(_model(), x=tr.x[:, 0, 0], y=tr.y, epochs=1)
    with pytest.raises(DataError, match="fit"):
        T.train(_model(shape="1x12x12"), x=tr.x, y=tr.y, epochs=1)
    # with fit the 8x8 digits are zero-padded to 12x12
    r = T.train(_model(shape="1x12x12"), x=tr.x, y=tr.y, epochs=1, fit=True, **FAST)
    assert r.network.input_shape == (1, 12, 12)


def test_more_classes_than_the_model_is_refused(digits):
    tr, _ = digits
    with pytest.raises(DataError, match="10 classes but the model has 5"):
        T.train(cnnc.compile(TINY, input="1x8x8", classes=5), x=tr.x, y=tr.y, epochs=1)


def test_bad_settings():
    m = _model()
    for kw, pattern in [(dict(epochs=0), "epochs"), (dict(batch=0), "batch"), (dict(lr=-1.0), "lr"),
                        (dict(lr=float("nan")), "lr"), (dict(val_split=1.5), "val_split"),
                        (dict(optimizer="rmsprop"), "optimizer"), (dict(schedule="poly"), "schedule"),
                        (dict(limit=0), "limit"), (dict(nesterov=True, optimizer="adam"), "nesterov"),
                        (dict(epochs=1, colour="red"), "unknown training setting")]:
        with pytest.raises(UsageError, match=pattern):
            T.train(m, data="digits", **kw)


def test_limit_and_validation_split():
    cfg = T.TrainConfig(limit=100, val_split=0.2)
    tr, te = D.load_digits("train"), D.load_digits("test")
    p = T.prepare_data((1, 8, 8), 10, cfg, tr, te)
    assert len(p.y_train) + len(p.y_val) == 100 and len(p.y_val) == 20
    assert p.x_train.dtype == np.float32 and p.x_train.shape[1:] == (1, 8, 8)
    # normalized with the training statistics
    assert abs(float(p.x_train.mean())) < 0.05 and abs(float(p.x_train.std()) - 1) < 0.05
    assert len(p.y_test) == 360
    r = T.train(_model(), data="digits", epochs=1, limit=64, val_split=0.0, batch=16)
    assert r.history[0]["val_accuracy"] is None


def test_batch_larger_than_data_is_clamped():
    r = T.train(_model(), data="digits", epochs=1, limit=20, val_split=0.0, batch=1000)
    assert len(r.history) == 1 and math.isfinite(r.history[0]["train_loss"])


# ---------------------------------------------------------------------------- run folder


def test_history_files_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    r = T.train(_model(), data="digits", epochs=3, out=out, **FAST)
    assert r.out_dir == out
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.npz", "best.npz", "history.csv", "history.json", "curves.png"} <= names
    assert tmp_files(out) == [] and ".write-test" not in names
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == 3 and [int(r_["epoch"]) for r_ in rows] == [1, 2, 3]
    assert {"epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    for row, h in zip(rows, r.history):
        assert float(row["train_loss"]) == pytest.approx(h["train_loss"])
        assert float(row["val_accuracy"]) == pytest.approx(h["val_accuracy"])
    hist = json.loads((out / "history.json").read_text())
    assert _learned(hist) == _learned(r.history)
    png = (out / "curves.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    arrays, meta = runs.load_checkpoint(out / "checkpoint.npz")
    assert meta["kind"] == "cnnc-training" and meta["finished"] is True
    assert meta["position"]["epoch"] == 3 and meta["position"]["iteration"] == 0
    assert meta["input_shape"] == [1, 8, 8] and meta["classes"] == 10
    assert _learned(meta["history"]) == _learned(r.history)
    state = r.network.state()
    for k, v in state.items():
        assert arrays[f"param.{k}"].tobytes() == v.tobytes()
    assert "data.mean" in arrays and "data.std" in arrays and "optim.m" in arrays
    # best.npz holds the epoch with the best validation accuracy
    _, best = runs.load_checkpoint(out / "best.npz")
    assert best["best_val_accuracy"] == max(h["val_accuracy"] for h in r.history)
    # a second run into the same folder is refused; nothing there changes
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(UsageError, match="already holds a training run"):
        T.train(_model(), data="digits", epochs=1, out=out)
    assert (out / "checkpoint.npz").read_bytes() == before

def _count_curves(monkeypatch):
    """The epochs of every curves.png drawn (a list that fills as training runs)."""
    drawn = []
    real = runs.history.plot_history

    def plot(history, title):
        drawn.append(len(history))
        return real(history, title)

    monkeypatch.setattr(runs.history, "plot_history", plot)
    return drawn


@pytest.mark.parametrize("every, expected", [(1e9, [3]), (0.0, [1, 2, 3])])
def test_curves_are_drawn_at_the_end_and_at_most_every_few_seconds(tmp_path, monkeypatch, every,
                                                                      expected):
    drawn = _count_curves(monkeypatch)
    monkeypatch.setattr(T, "CURVES_EVERY", every)
    T.train(_model(), data="digits", epochs=3, out=tmp_path / "run", **FAST)
    assert drawn == expected
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def test_curves_are_drawn_when_training_fails(tmp_path, monkeypatch):
    drawn = _count_curves(monkeypatch)
    monkeypatch.setattr(T, "CURVES_EVERY", 1e9)

    def fail(net, data, out_dir, epoch):
        if epoch == 2:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        T.train(_model(), data="digits", epochs=4, out=tmp_path / "run", epoch_callback=fail, **FAST)
    assert drawn == [2]
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2



def test_new_run_dir_numbering(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = runs.new_run_dir("models/x.cnn", None)
    assert a.as_posix() == "runs/x" and a.is_dir()
    (a / "checkpoint.npz").write_bytes(b"")
    b = runs.new_run_dir("models/x.cnn", None)
    assert b.name == "x-2"
    with pytest.raises(TrainingError, match="cannot write to the output folder"):
        (tmp_path / "file.txt").write_text("x")
        runs.new_run_dir("x.cnn", str(tmp_path / "file.txt" / "run"))


# ---------------------------------------------------------------------------- resume


def _interrupt_after(monkeypatch, step: int):
    """Send ourselves SIGINT (Ctrl-C) right after optimizer step number ``step``."""
    real = Optimizer.step

    def step_and_maybe_interrupt(self, lr):
        real(self, lr)
        if self.steps == step:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Optimizer, "step", step_and_maybe_interrupt)


@pytest.mark.parametrize("stop_step", [7, 50])  # inside epoch 1 (no checkpoint yet), inside epoch 2
def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch, stop_step):
    model = _model(RICH)
    kw = dict(data="digits", epochs=3, augment="crop1", schedule="cosine", **FAST)
    full = T.train(model, out=tmp_path / "A", **kw)
    handler_before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as mp:
        _interrupt_after(mp, stop_step)
        part = T.train(model, out=tmp_path / "B", **kw)
    assert part.interrupted
    arrays, meta = runs.load_checkpoint(tmp_path / "B" / "checkpoint.npz")
    pos = meta["position"]
    steps_per_epoch = _steps_per_epoch(32)
    assert (pos["epoch"], pos["iteration"]) == divmod(stop_step, steps_per_epoch)
    assert int(arrays["optim.steps"]) == stop_step and meta["finished"] is False
    assert len(part.history) == stop_step // steps_per_epoch
    # the handler was removed again
    assert signal.getsignal(signal.SIGINT) is handler_before
    done = T.train(model, resume=tmp_path / "B")
    assert not done.interrupted and done.out_dir == tmp_path / "B"
    assert done.network.theta.tobytes() == full.network.theta.tobytes()
    assert done.network.buffer_flat.tobytes() == full.network.buffer_flat.tobytes()
    assert_same_params(tmp_path / "A" / "checkpoint.npz", tmp_path / "B" / "checkpoint.npz")
    assert _learned(done.history) == _learned(full.history)
    assert done.test == full.test
    assert_same_params(tmp_path / "A" / "best.npz", tmp_path / "B" / "best.npz")


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no handler saves anything)."""


@pytest.mark.parametrize("point", ["written:checkpoint.npz", "before-manifest", "after-manifest"])
def test_killed_during_the_epoch_commit_then_resume_equals_uninterrupted(tmp_path, monkeypatch, point):
    """A run killed while it commits the end of epoch 2 (checkpoint, best.npz and history
    are one commit: runs/commit.py) leaves epoch 1's files or epoch 2's, all of them, and
    resumes to the weights of an uninterrupted run. (When best.npz and checkpoint.npz were
    two writes, a kill between them left a best from a later epoch than the checkpoint.)"""
    from importlib import import_module

    commit_module = import_module("cnnc.training.runs.commit")
    model = _model(RICH)
    kw = dict(data="digits", epochs=3, augment="crop1", schedule="cosine", **FAST)
    full = T.train(model, out=tmp_path / "A", **kw)
    seen = {"n": 0}

    def crash(name):
        if name == point:
            seen["n"] += 1
            if seen["n"] == 2:  # the commit of epoch 2
                raise _Killed()

    with monkeypatch.context() as mp:
        mp.setattr(commit_module, "crash_point", crash)
        with pytest.raises(_Killed):
            T.train(model, out=tmp_path / "B", **kw)
    expect = 2 if point == "after-manifest" else 1
    _, meta = runs.load_checkpoint(runs.find_checkpoint(tmp_path / "B"))
    _, best = runs.load_checkpoint(runs.find_weights(tmp_path / "B"))
    assert meta["position"]["epoch"] == expect and best["position"]["epoch"] <= expect
    done = T.train(model, resume=tmp_path / "B")
    assert done.network.theta.tobytes() == full.network.theta.tobytes()
    assert_same_params(tmp_path / "A" / "checkpoint.npz", tmp_path / "B" / "checkpoint.npz")
    assert_same_params(tmp_path / "A" / "best.npz", tmp_path / "B" / "best.npz")
    assert _learned(done.history) == _learned(full.history)


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    model = _model()
    r = T.train(model, data="digits", epochs=2, out=tmp_path / "A", **FAST)
    again = T.train(model, resume=tmp_path / "A")
    assert again.network.theta.tobytes() == r.network.theta.tobytes()
    assert again.test == r.test


def test_resume_with_another_model_is_refused(tmp_path):
    T.train(_model(), data="digits", epochs=1, out=tmp_path / "A", **FAST)
    before = (tmp_path / "A" / "checkpoint.npz").read_bytes()
    with pytest.raises(CheckpointError, match="does not match this model"):
        T.train(_model("conv3(4) - relu - pool - fc"), resume=tmp_path / "A")
    assert (tmp_path / "A" / "checkpoint.npz").read_bytes() == before
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        T.train(_model(), resume=tmp_path / "nothing")


# ---------------------------------------------------------------------------- faults


def _poison_after(monkeypatch, step: int, value=np.nan):
    """After optimizer step ``step`` the weights become NaN: the next loss is NaN."""
    real = Optimizer.step

    def step_then_poison(self, lr):
        real(self, lr)
        if self.steps == step:
            self.theta[...] = value

    monkeypatch.setattr(Optimizer, "step", step_then_poison)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_loss_becomes_nan_in_epoch_two_keeps_epoch_one(tmp_path, monkeypatch, value):
    model = _model()
    kw = dict(data="digits", schedule="constant", **FAST)
    one = T.train(model, epochs=1, out=tmp_path / "one", **kw)
    spe = _steps_per_epoch(32)
    _poison_after(monkeypatch, spe + 3, value)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        T.train(model, epochs=3, out=out, **kw)
    msg = str(info.value)
    assert "the loss became nan" in msg and "epoch 2, step 4" in msg
    assert "--lr" in msg and "last good checkpoint" in msg
    # the epoch-1 checkpoint is intact, loadable and equals a 1-epoch run
    arrays, meta = runs.load_checkpoint(out / "checkpoint.npz")
    assert meta["position"]["epoch"] == 1 and meta["position"]["iteration"] == 0
    assert_same_params(out / "checkpoint.npz", tmp_path / "one" / "checkpoint.npz")
    assert all(np.isfinite(v).all() for v in arrays.values())
    runs.load_checkpoint(out / "best.npz")
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert tmp_files(out) == []
    assert one.network.theta.tobytes() != b""


def test_huge_learning_rate_fails_cleanly_without_a_folder():
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf|-inf) at epoch 1, step \d+"):
        T.train(_model(), data="digits", epochs=2, optimizer="sgd", lr=1e6, batch=32)


def test_disk_full_at_epoch_end_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    armed = {"on": False}
    real_end = T.Trainer._end_epoch
    real_fsync = os.fsync

    def end_epoch(self, epoch, *a):
        armed["on"] = epoch >= 1  # the save at the end of epoch 2 fails
        return real_end(self, epoch, *a)

    def fsync(fd):
        if armed["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(T.Trainer, "_end_epoch", end_epoch)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        T.train(model, data="digits", epochs=3, out=out, **FAST)
    assert "No space left on device" in str(info.value) and "disk is full" in str(info.value)
    monkeypatch.undo()
    arrays, meta = runs.load_checkpoint(out / "checkpoint.npz")
    assert meta["position"]["epoch"] == 1
    assert tmp_files(out) == []
    # and the run can go on from there
    done = T.train(model, resume=out)
    assert len(done.history) == 3 and not done.interrupted


def test_top_level_fit_and_evaluate(digits):
    fit, evaluate = cnnc.fit, cnnc.evaluate
    tr, te = digits
    r = fit(_model(), x=tr.x, y=tr.y, x_test=te.x, y_test=te.y, epochs=2, **FAST)
    assert isinstance(r, T.TrainResult) and r.test["accuracy"] > 0.7
    e = evaluate(r.network, te.x, te.y, mean=r.mean, std=r.std)
    assert e["accuracy"] == pytest.approx(r.test["accuracy"])


def test_curves_have_whole_epoch_ticks_and_name_the_data(monkeypatch, tmp_path):
    """curves.png: the epoch axis is ticked at whole epochs only, and the title names the
    model and the data set it was trained on."""
    from matplotlib.figure import Figure

    from cnnc.training.runs import history as H

    figures = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self) or real(self, *a, **k))
    rows = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + e / 10, "val_loss": 1.2 / e,
             "val_accuracy": 0.45 + e / 10} for e in (1, 2, 3)]
    H.plot_history(rows, "tiny.cnn on digits")
    (fig,) = figures
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert fig._suptitle.get_text() == "tiny.cnn on digits"
    titles = []
    monkeypatch.setattr(H, "plot_history", lambda history, title: titles.append(title) or b"")
    model = cnnc.compile("conv3(4) - relu - pool - fc", input="1x8x8", classes=10)
    T.train(model, out=tmp_path / "run", epochs=1, data="digits", notice=False)
    assert titles and titles[-1].endswith(" on digits")


def test_epoch_speed_leaves_out_kernel_compilation(monkeypatch, capsys):
    """On a cold kernel cache the first epoch's steps wait for Numba: that time is shown
    apart ("... compiling kernels") and left out of the epoch's images/s, which must be the
    kernels' speed (a compile-bound "73 img/s" read as if it were the speed)."""
    import time as _time

    from cnnc.kernels import events
    from cnnc.runtime.network import Network

    clock = {"compiled": 0.0, "calls": 0}
    real_step = Network.step

    def step(self, ex, training=True):  # the first step "compiles" for 0.5 s
        clock["calls"] += 1
        if clock["calls"] == 1:
            _time.sleep(0.5)
            clock["compiled"] += 0.5
        return real_step(self, ex, training)

    monkeypatch.setattr(Network, "step", step)
    monkeypatch.setattr(events, "compile_seconds", lambda: clock["compiled"])
    result = T.train(_model(), data="digits", epochs=2, progress=True, **FAST)
    first, second = result.history
    assert first["compile_seconds"] == pytest.approx(0.5, abs=1e-6)
    assert second["compile_seconds"] == 0
    assert first["seconds"] > 0.5
    images = first["images_per_s"] * (first["seconds"] - 0.5)
    assert images == pytest.approx(_steps_per_epoch(32) * 32, rel=1e-6)
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if l.startswith("epoch 1/2"))
    assert "of it compiling kernels" in line
    assert "compiling" not in next(l for l in err.splitlines() if l.startswith("epoch 2/2"))
