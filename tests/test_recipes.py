"""Issue 24's recipe features, each against an independent computation: the one-cycle
schedule at chosen steps (by hand), label-smoothed cross-entropy and its gradient (the
formula in NumPy, finite differences in float64, PyTorch where installed), the weight
average's recurrence (NumPy, step by step), test-time augmentation, ``until`` stopping at
the right epoch, the milestones in the history, and a bit-exact resume with all of them on.
Accuracy targets are measured by examples/recipes.py, not here."""
from __future__ import annotations

import numpy as np
import pytest

from cnnc.kernels import loss as L
from cnnc.runtime.optim import Schedule, WeightAverage
from conftest import assert_same_params, write_model

RECIPE_DIGITS = """\
input 1x8x8
classes 10

conv3(8) - bn - relu - pool - dropout(0.25) - fc(32) - relu - fc

data digits
batch 32
optimizer sgd
lr 0.05
schedule onecycle
peak 0.3
label_smoothing 0.1
ema 0.9
seed 3
"""


# ---------------------------------------------------------------- the one-cycle schedule

def test_onecycle_values_at_chosen_steps():
    # T = 2 epochs x 5 steps = 10 steps; peak 0.3: the rise takes W = 3 steps
    s = Schedule(0.1, "onecycle", epochs=2, steps_per_epoch=5, peak=0.3)
    by_step = [s.lr(k // 5, k % 5) for k in range(10)]
    expected = [0.1 / 3, 0.2 / 3, 0.1,  # up: 0.1 * u / 3, u = 1, 2, 3
                0.1 * 7 / 8, 0.1 * 6 / 8, 0.1 * 5 / 8, 0.1 * 4 / 8,  # down: 0.1 * (10 - u + 1) / 8
                0.1 * 3 / 8, 0.1 * 2 / 8, 0.1 * 1 / 8]
    assert by_step == pytest.approx(expected, rel=1e-12)
    assert max(by_step) == pytest.approx(0.1) and by_step.index(max(by_step)) == 2


def test_onecycle_warmup_epochs_set_the_rise():
    s = Schedule(1.0, "onecycle", epochs=4, steps_per_epoch=10, warmup=1)  # W = 10, T = 40
    assert s.lr(0, 0) == pytest.approx(0.1)
    assert s.lr(0, 9) == pytest.approx(1.0)
    assert s.lr(1, 0) == pytest.approx(30 / 31)
    assert s.lr(3, 9) == pytest.approx(1 / 31)


def test_onecycle_is_a_schedule_setting():
    from cnnc.lang.settings import SETTING_KEYS

    assert "onecycle" in SETTING_KEYS["schedule"].choices
    for key in ("peak", "label_smoothing", "ema", "tta", "until"):
        assert SETTING_KEYS[key].header and SETTING_KEYS[key].training, key


# ---------------------------------------------------------------- label smoothing

def _smoothed_reference(z: np.ndarray, y: np.ndarray, e: float) -> float:
    """Cross-entropy against q = (1 - e) onehot + e / K, written out."""
    n, k = z.shape
    q = np.full((n, k), e / k)
    q[np.arange(n), y] += 1 - e
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    return float(-(q * logp).sum(1).mean())


@pytest.mark.parametrize("e", [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_against_the_formula_and_finite_differences(e):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (6, 7))
    y = rng.integers(0, 7, 6).astype(np.int64)
    probs = np.empty_like(z)
    loss = L.smoothed_xent_forward(z, y, probs, e)
    assert loss == pytest.approx(_smoothed_reference(z, y, e), rel=1e-12, abs=1e-14)
    grad = np.empty_like(z)
    L.smoothed_xent_backward(probs, y, grad, e)
    h = 1e-6
    fd = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        fd[idx] = (_smoothed_reference(zp, y, e) - _smoothed_reference(zm, y, e)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)
    if e == 0.0:  # no smoothing: the plain kernels' values
        p2, g2 = np.empty_like(z), np.empty_like(z)
        assert L.softmax_xent_forward(z, y, p2) == pytest.approx(loss, rel=1e-14)
        L.softmax_xent_backward(p2, y, g2)
        np.testing.assert_allclose(grad, g2, rtol=1e-14, atol=1e-17)


def test_smoothed_cross_entropy_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (5, 10))
    y = rng.integers(0, 10, 5).astype(np.int64)
    probs, grad = np.empty_like(z), np.empty_like(z)
    loss = L.smoothed_xent_forward(z, y, probs, 0.15)
    L.smoothed_xent_backward(probs, y, grad, 0.15)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(y), label_smoothing=0.15)
    lt.backward()
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_the_training_executor_uses_the_smoothing(tmp_path):
    import cnnc

    model = cnnc.compile_file(write_model(tmp_path, RECIPE_DIGITS))
    net = model.network(seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 5, 9])
    plain, _ = net.loss_and_grads(x, y, training=False)
    ex = net.executor(4)
    ex.label_smoothing = 0.2
    ex.input[...] = x
    ex.labels[...] = y
    ex.forward(False)
    smoothed = ex.loss()
    ex.label_smoothing = 0.0
    z = ex.logits.astype(np.float64)
    assert smoothed == pytest.approx(_smoothed_reference(z, y, 0.2), rel=1e-5)
    assert plain == pytest.approx(_smoothed_reference(z, y, 0.0), rel=1e-5)


# ---------------------------------------------------------------- the weight average

def test_weight_average_recurrence_step_by_step():
    rng = np.random.default_rng(4)
    theta = rng.normal(size=50).astype(np.float32)
    buffers = rng.normal(size=7).astype(np.float32)
    avg = WeightAverage(0.95, theta, buffers)
    ref_t, ref_b = theta.astype(np.float64), buffers.astype(np.float64)
    for n in range(1, 40):
        theta += rng.normal(size=50).astype(np.float32)
        buffers += rng.normal(size=7).astype(np.float32)
        avg.update()
        d = min(0.95, (1 + n) / (10 + n))  # the decay warms up: 2/11, 3/12, ... then 0.95
        ref_t = d * ref_t + (1 - d) * theta
        ref_b = d * ref_b + (1 - d) * buffers
        np.testing.assert_allclose(avg.avg_theta, ref_t, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(avg.avg_buffers, ref_b, rtol=1e-5, atol=1e-5)
    assert avg.rate(1) == pytest.approx(2 / 11) and avg.rate(1000) == 0.95


def test_weight_average_swap_restores_the_training_weights():
    theta = np.arange(5, dtype=np.float32)
    avg = WeightAverage(0.5, theta, np.zeros(1, np.float32))
    theta += 10
    avg.update()
    keep = theta.copy()
    with avg.swapped():
        np.testing.assert_array_equal(theta, avg.avg_theta)
    np.testing.assert_array_equal(theta, keep)


# ---------------------------------------------------------------- test-time augmentation

def test_tta_averages_the_logits_of_the_mirror_image(tmp_path):
    import cnnc
    from cnnc.training.train import evaluate

    model = cnnc.compile_file(write_model(tmp_path, RECIPE_DIGITS))
    net = model.network(seed=0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(12, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 12)
    logits = 0.5 * (net.forward(x) + net.forward(np.ascontiguousarray(x[..., ::-1])))
    r = evaluate(net, x, y, batch=5, tta=True)
    assert r["accuracy"] == pytest.approx(float((logits.argmax(1) == y).mean()))
    assert r["loss"] == pytest.approx(_smoothed_reference(logits.astype(np.float64), y, 0.0), rel=1e-5)
    plain = evaluate(net, x, y, batch=5)
    assert plain["loss"] != pytest.approx(r["loss"], rel=1e-6)


def test_tta_is_refused_for_digits(tmp_path):
    import cnnc
    from cnnc.errors import UsageError

    model = cnnc.compile_file(write_model(tmp_path, RECIPE_DIGITS))
    with pytest.raises(UsageError, match="mirror"):
        cnnc.fit(model, epochs=1, tta=True)


# ---------------------------------------------------------------- until and milestones

@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    import cnnc

    folder = tmp_path_factory.mktemp("recipe")
    model = cnnc.compile_file(write_model(folder, RECIPE_DIGITS))
    return model, cnnc.fit(model, epochs=6)


def test_milestone_times_present_and_increasing(full_run):
    _, result = full_run
    rows = result.history
    elapsed = [r["elapsed"] for r in rows]
    assert all(b > a > 0 for a, b in zip(elapsed, elapsed[1:]))
    ms = result.milestones
    assert ms, rows
    # each milestone: the first epoch whose validation accuracy reached it, its elapsed time
    for key, m in ms.items():
        first = next(r for r in rows if r["val_accuracy"] >= float(key))
        assert m == {"epoch": first["epoch"], "seconds": first["elapsed"]}
        assert key in rows[m["epoch"] - 1]["reached"].split()
    levels = sorted(ms, key=float)
    times = [ms[k]["seconds"] for k in levels]
    assert times == sorted(times)
    assert result.metrics()["milestones"] == ms


def test_until_stops_at_the_first_epoch_reaching_it(full_run):
    import cnnc

    model, result = full_run
    accs = [r["val_accuracy"] for r in result.history]
    # a target first reached after the first epoch: the first new best from epoch 2 on
    stop_epoch = next(i + 1 for i in range(1, len(accs)) if accs[i] > max(accs[:i]))
    target = accs[stop_epoch - 1]
    stopped = cnnc.fit(model, epochs=6, until=target)
    assert len(stopped.history) == stop_epoch
    assert stopped.until["epoch"] == stop_epoch and stopped.until["accuracy"] == target
    assert stopped.until["seconds"] == stopped.history[-1]["elapsed"]
    # the same run up to there: same validation accuracies
    assert [r["val_accuracy"] for r in stopped.history] == accs[:stop_epoch]


def test_until_on_the_command_line(cli, tmp_path):
    path = write_model(tmp_path, RECIPE_DIGITS)
    r = cli("train", path, "--epochs", "6", "--until", "0.5", "--out", tmp_path / "run", "--json",
            "--quiet")
    assert r.code == 0, r
    m = r.json()
    assert m["until"]["epoch"] == m["epochs"] < 6
    assert "reached 0.5 at epoch" in r.err
    bad = cli("train", path, "--until", "99.2")
    assert bad.code != 0 and "until must be at most 1" in bad.err
    bad = cli("train", path, "--until", "0.9", "--val-split", "0")
    assert bad.code != 0 and "no validation images" in bad.err


# ---------------------------------------------------------------- resume, bit-exact

def test_resume_with_ema_smoothing_and_onecycle_is_bit_exact(tmp_path):
    import cnnc
    from cnnc.training import train as T
    from cnnc.training.runs import load_checkpoint

    class StopMidway(T.Hook):  # stops in the middle of epoch 2, as Ctrl-C would
        def on_step(self, trainer, loss, correct):
            if trainer.pos.epoch == 1 and trainer.pos.iteration == 17:
                trainer.controls.request("stop")

    model = cnnc.compile_file(write_model(tmp_path, RECIPE_DIGITS))
    whole = T.train(model, epochs=3, out=tmp_path / "whole")
    part = T.train(model, epochs=3, out=tmp_path / "part", hooks=[StopMidway()])
    assert part.interrupted
    _, meta = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert meta["position"]["epoch"] == 1 and meta["position"]["iteration"] == 17
    resumed = T.train(model, resume=tmp_path / "part")
    a, _ = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert {"ema.theta", "ema.buffers", "ema.train_theta", "ema.train_buffers", "ema.steps"} <= set(a)
    assert sorted(a) == sorted(b)
    for k in sorted(a):
        assert a[k].tobytes() == b[k].tobytes(), k
    assert_same_params(tmp_path / "whole" / "best.npz", tmp_path / "part" / "best.npz")
    # the checkpoint's weights are the average; the training weights go alongside
    assert not np.array_equal(a["ema.theta"], a["ema.train_theta"])
    assert resumed.test == whole.test
    assert [r["val_accuracy"] for r in resumed.history] == [r["val_accuracy"] for r in whole.history]


def test_eval_reads_the_averaged_weights_and_flips_as_training_did(cli, tmp_path):
    import cnnc

    model = cnnc.compile_file(write_model(tmp_path, RECIPE_DIGITS))
    # flips on digits only to have a run with tta (a real recipe would not mirror digits)
    result = cnnc.fit(model, epochs=2, augment="flip", tta=True, out=tmp_path / "run")
    r = cli("eval", model.filename, "--weights", tmp_path / "run" / "checkpoint.npz", "--json")
    assert r.code == 0, r
    assert r.json()["accuracy"] == result.test["accuracy"]
    assert r.json()["loss"] == pytest.approx(result.test["loss"], rel=1e-6)
