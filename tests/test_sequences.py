"""1-D networks (issue 11): ``input CxL`` makes sequences (C, L) flow through conv, pooling,
gap, fc, bn, dropout, activations, branches and residuals.

Expectations are derived here from the textbook rules (conftest's conv_out/pool_out, the
receptive-field recurrence, parameter and MAC formulas written out) and from PyTorch's
Conv1d / MaxPool1d / AvgPool1d / BatchNorm1d with the weights copied over.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MODELS_DIR, conv_out, pool_out

import cnnc
from cnnc.cli.main import main
from cnnc.errors import DataError, SourceError
from cnnc.lang.graph import INPUT

# ---- the lecture's example ---------------------------------------------------------------


def test_lecture_1x5_signal_size2_filter(capsys):
    """A 1x5 signal and a size-2 filter without padding give 1x4: y_i = w1 x_i + w2 x_(i+1)."""
    rc = main(["check", "-e", "conv2(1, pad=valid, bias=false)", "--input", "1x5"])
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("conv_1"))
    assert " 1x4 " in row and "= 2 " in row  # output 1x4, two weights
    m = cnnc.compile("conv2(1, pad=valid, bias=false) - fc", input="1x5", classes=2)
    assert m.analysis.shapes["conv_1"] == (1, 4)
    net = m.network(dtype="float64")
    w = np.array([[[0.5, -2.0]]])
    net.set("conv_1", "w", w)
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    ex = net.executor(1)
    ex.input[...] = x
    ex.forward(False)
    expected = [0.5 * x[0, 0, i] - 2.0 * x[0, 0, i + 1] for i in range(4)]
    np.testing.assert_allclose(ex.values["conv_1"][0, 0], expected)


# ---- shape rules, counts and the receptive field, derived independently ------------------

def test_counts_and_shapes_of_a_1d_network():
    text = "conv5(8, stride=2, pad=2) - relu - maxpool3(stride=2) - conv3(16, groups=2) - bn - gap - fc(10)"
    a = cnnc.compile(text, input="2x101").analysis
    l1 = conv_out(101, 5, 2, 2)
    l2 = pool_out(l1, 3, 2, 0, False)
    l3 = conv_out(l2, 3, 1, 1)
    assert a.shapes["conv_1"] == (8, l1) and a.shapes["maxpool_1"] == (8, l2)
    assert a.shapes["conv_2"] == (16, l3) and a.shapes["gap_1"] == (16,)
    params = {"conv_1": 8 * 2 * 5 + 8, "conv_2": 16 * (8 // 2) * 3 + 16, "bn_1": 2 * 16, "fc_1": 16 * 10 + 10}
    for n, p in params.items():
        assert a.info[n].param_count == p, n
    assert a.total_params == sum(params.values())
    assert a.total_macs == 8 * l1 * 2 * 5 + 16 * l3 * 4 * 3 + 16 * 10
    # receptive field on one axis: r += (k - 1) * j, j *= s
    rf = a.fields
    assert rf["conv_1"].size == (5,) and rf["conv_1"].jump == (2,)
    assert rf["maxpool_1"].size == (5 + 2 * 2,) and rf["maxpool_1"].jump == (4,)
    assert rf["conv_2"].size == (9 + 2 * 4,) and rf["conv_2"].jump == (4,)
    assert a.info["conv_1"].params[0].shape == (8, 2, 5)  # Conv1d's (F, C/groups, K)


def test_width_rule_and_branches_on_sequences():
    a = cnnc.compile("conv3 - pool - conv3 - ( conv1(8) | conv3(4) ) - ( conv3(12) + id ) - fc",
                     input="1x16", classes=3).analysis
    assert a.shapes["conv_1"] == (32, 16) and a.shapes["conv_2"] == (64, 8)
    assert a.shapes["concat_1"] == (12, 8) and a.shapes["add_1"] == (12, 8)
    assert a.info["fc_1"].param_count == 12 * 8 * 3 + 3


@pytest.mark.parametrize("text, needle, col", [
    ("conv3 - conv3x3", "conv3x3 has a 2-D window, but the network is 1-D", 9),
    ("maxpool2x2", "maxpool2x2 has a 2-D window", 1),
    ("conv1x7(4)", "conv1x7 has a 2-D window", 1),
    ("conv3(stride=3)", "does not fit its length-7 input: (7 + 0 - 3)/3 + 1 = 2.33", 1),
    ("conv3 - maxpool2", "maxpool2 does not fit its length-7 input", 9),
    ("conv9(pad=valid)", "leaves nothing", 1),
    ("fc(4) - conv3", "needs an image (CxHxW) or a sequence (CxL)", 9),
])
def test_positioned_errors_in_1d_networks(text, needle, col):
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="1x7", filename="seq.cnn")
    err = info.value
    assert needle in err.message, str(err)
    assert (err.line, err.column) == (1, col), str(err)


def test_doesnt_fit_on_one_axis_names_positions():
    with pytest.raises(SourceError) as info:
        cnnc.compile("conv3(stride=3)", input="1x7")
    assert "position 7 of the input is never covered" in info.value.hint
    assert "pad=1" in info.value.hint


def test_check_json_of_a_1d_network(capsys):
    assert main(["check", "-e", "conv3(4) - gap - fc", "--input", "2x10", "--classes", "3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shape"] == [2, 10]
    assert d["layers"][0]["output_shape"] == [4, 10]
    assert d["layers"][0]["receptive_field"]["size"] == [3]


# ---- against PyTorch ---------------------------------------------------------------------

torch_cases = [
    ("conv5(6, stride=2, pad=2) - relu - maxpool3(stride=2, round=ceil) - conv3(8, dilation=2, groups=2)"
     " - bn - relu - avgpool3(stride=2, pad=1) - fc", "3x37", True),
    ("conv3(4, bias=false) - bn - ( conv3(4) - relu + id ) - ( conv1(2) | maxpool3(stride=1, pad=1) )"
     " - gap - fc", "2x12", False),
    ("conv3(4) - bn - relu - pool - conv3(4) - dropout(0) - tanh - fc(5) - bn - fc", "1x16", True),
]


def _torch_forward(torch, a, net, x):
    """The cnnc graph evaluated with torch's 1-D layers (weights copied from ``net``)."""
    nn, F = torch.nn, torch.nn.functional
    vals = {INPUT: x}
    mods = {}
    for n in a.order:
        layer = a.layer(n)
        kind, cfg = layer.type.name, layer.config
        xs = [vals[s] for s in a.inputs(n)]
        in_shape = a.shapes[a.inputs(n)[0]]
        p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.get(n, {}).items()}
        mods[n] = p
        if kind == "conv":
            y = F.conv1d(xs[0], p["w"], p.get("b"), stride=cfg.stride, padding=cfg.padding()[1],
                         dilation=cfg.dilation, groups=cfg.groups)
        elif kind in ("maxpool", "avgpool"):
            k, s = cfg.size[1], cfg.step
            if kind == "maxpool":
                y = nn.MaxPool1d(k, s, cfg.pad, ceil_mode=cfg.round == "ceil")(xs[0])
            else:
                y = nn.AvgPool1d(k, s, cfg.pad, ceil_mode=cfg.round == "ceil", count_include_pad=False)(xs[0])
        elif kind == "bn":
            m = nn.BatchNorm1d(in_shape[0], eps=cfg.eps, momentum=cfg.momentum).double()
            with torch.no_grad():
                m.weight.copy_(p["gamma"])
                m.bias.copy_(p["beta"])
                m.running_mean.copy_(torch.tensor(net.buffers[n]["running_mean"]))
                m.running_var.copy_(torch.tensor(net.buffers[n]["running_var"]))
            m.weight, m.bias = nn.Parameter(p["gamma"]), nn.Parameter(p["beta"])
            mods[n] = {"gamma": m.weight, "beta": m.bias, "module": m}
            m.train(TRAINING[0])
            y = m(xs[0])
        elif kind == "fc":
            y = F.linear(xs[0].flatten(1), p["w"], p.get("b"))
        elif kind == "relu":
            y = F.relu(xs[0])
        elif kind == "tanh":
            y = torch.tanh(xs[0])
        elif kind == "dropout":
            y = xs[0]
        elif kind == "gap":
            y = xs[0].mean(dim=2)
        elif kind == "add":
            y = sum(xs[1:], xs[0])
        elif kind == "concat":
            y = torch.cat(xs, dim=1)
        else:
            raise AssertionError(kind)
        vals[n] = y
    return vals[a.output], mods


TRAINING = [False]


@pytest.mark.parametrize("text, shape, training", torch_cases)
def test_1d_networks_match_pytorch(text, shape, training):
    torch = pytest.importorskip("torch")
    m = cnnc.compile(text, input=shape, classes=3)
    net = m.network(seed=1, dtype="float64")
    rng = np.random.default_rng(4)
    for d in net.params.values():
        for v in d.values():
            v += 0.1 * rng.standard_normal(v.shape)
    for d in net.buffers.values():
        d["running_mean"][...] = 0.2 * rng.standard_normal(d["running_mean"].shape)
        d["running_var"][...] = rng.uniform(0.5, 1.5, d["running_var"].shape)
    c, length = m.input_shape
    x = rng.standard_normal((4, c, length))
    y = np.array([0, 1, 2, 1])
    TRAINING[0] = training
    xt = torch.tensor(x, requires_grad=True)
    logits_t, mods = _torch_forward(torch, m.analysis, net, xt)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(y))
    loss_t.backward()
    loss, grads = net.loss_and_grads(x, y, training=training, input_grad=True)
    assert loss == pytest.approx(loss_t.item(), rel=1e-10)
    np.testing.assert_allclose(grads[INPUT], xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    for n, d in net.params.items():
        for k in d:
            np.testing.assert_allclose(grads[n][k], mods[n][k].grad.numpy(), rtol=1e-8, atol=1e-10,
                                       err_msg=f"{n}.{k}")
    if training:  # running statistics updated like BatchNorm1d's
        for n, d in net.buffers.items():
            mod = mods[n]["module"]
            np.testing.assert_allclose(d["running_mean"], mod.running_mean.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(d["running_var"], mod.running_var.numpy(), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(net.forward(x), logits_t.detach().numpy(), rtol=1e-9, atol=1e-10)


# ---- data and training -------------------------------------------------------------------

def _write_npz(path, n, c, length, rng):
    y = np.arange(n) % 2
    t = np.arange(length) / length
    periods = np.where(y == 0, 1.0, 6.0)[:, None, None]
    phase = rng.uniform(0, 1, (n, 1, 1))
    x = np.sin(2 * np.pi * (periods * t + phase)) + 0.3 * rng.standard_normal((n, c, length))
    np.savez(path, x=x.astype(np.float32), y=y, class_names=np.array(["slow", "fast"]))
    return x, y


def test_npz_of_sequences_loads_as_one_row_images(tmp_path):
    from cnnc.training import data as D

    rng = np.random.default_rng(0)
    x, y = _write_npz(tmp_path / "seq.npz", 12, 3, 20, rng)
    train, test = D.resolve_dataset(str(tmp_path / "seq.npz"))
    D.check_input_shape((3, 20), train)  # a 1-D model takes it
    fitted = D.fit_to_shape(train, (3, 20))
    assert fitted.shape == (3, 1, 20)
    both = np.concatenate([D.fit_to_shape(train, (3, 20)).x, D.fit_to_shape(test, (3, 20)).x])
    assert sorted(map(bytes, both.reshape(len(both), -1))) == sorted(map(bytes, x.astype(np.float32).reshape(12, -1)))
    with pytest.raises(DataError, match="expects 3x1x24"):
        D.check_input_shape((3, 24), train)
    with pytest.raises(DataError, match="is 1-D"):
        D.check_input_shape((3, 20), D.Dataset(np.zeros((2, 3, 4, 4), np.uint8), np.zeros(2, np.int64),
                                                ("a",), "imgs"))


def test_train_on_an_npz_of_sequences(tmp_path):
    rng = np.random.default_rng(1)
    _write_npz(tmp_path / "seq.npz", 120, 2, 32, rng)
    m = cnnc.compile("conv5(8) - relu - pool - conv3(8) - relu - gap - fc", input="2x32", classes=2)
    result = cnnc.fit(m, data=str(tmp_path / "seq.npz"), epochs=8, batch=16, lr=0.05,
                              progress=False, val_split=0.0)
    assert result.test["accuracy"] >= 0.9, result.test


def test_waveforms_model_learns():
    """The shipped 1-D example: four waveform classes (chance 0.25) are learned."""
    from cnnc.training.data.formats.waveforms import CLASS_NAMES, load_waveforms

    ds = load_waveforms("test")
    assert ds.shape == (1, 1, 128) and ds.class_names == CLASS_NAMES
    assert np.bincount(ds.y).tolist() == [100] * 4
    m = cnnc.compile_file(MODELS_DIR / "waveforms.cnn")
    assert m.input_shape == (1, 128)
    result = cnnc.fit(m, epochs=3, progress=False, limit=800)
    assert result.test["accuracy"] >= 0.6, result.test


def test_cli_trains_and_evaluates_a_1d_model_on_an_npz(tmp_path, capsys):
    rng = np.random.default_rng(2)
    _write_npz(tmp_path / "seq.npz", 96, 1, 24, rng)
    model = tmp_path / "seq.cnn"
    model.write_text("input 1x24\nclasses 2\nconv5(8) - relu - pool - conv3(8) - relu - gap - fc\n")
    run = tmp_path / "run"
    rc = main(["train", str(model), "--data", str(tmp_path / "seq.npz"), "--epochs", "6", "--batch", "16",
               "--lr", "0.05", "--out", str(run), "--quiet", "--json"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] >= 0.85, metrics
    assert main(["eval", str(model), "--weights", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["accuracy"])
    png = tmp_path / "x.png"
    png.write_bytes(b"not an image")
    assert main(["predict", str(model), "--weights", str(run), str(png)]) == 1
    assert "1-D network" in capsys.readouterr().err
    rc = main(["train", str(model), "--data", str(tmp_path / "seq.npz"), "--epochs", "1", "--augment", "flip",
               "--out", str(tmp_path / "run2"), "--quiet"])
    assert rc == 1 and "not on sequences" in capsys.readouterr().err
