"""`cnnc gradcheck`: every model's layers pass in float64, and a broken kernel is caught."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnc
from cnnc.tools.gradcheck import gradcheck

from conftest import model_params, one_error_message
from conftest import run_captured as run_main

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.cnn"))
# the 224x224 ImageNet models are checked with the same layers on a smaller image (the time
# is in the spatial size; `cnnc gradcheck models/vgg16.cnn` at full size takes minutes)
SMALL_INPUT = {"vgg16": "3x32x32", "resnet18": "3x32x32", "alexnet": "3x63x63"}

ALL_LAYERS = ("(conv3(4, groups=2, dilation=2) - bn - tanh | maxpool3(stride=1, pad=1) - sigmoid "
              "| avgpool3(stride=2, pad=1, round=ceil) - conv1(4, stride=1) - bn) - maxout(2) - "
              "(conv1(6) - leaky(0.1) + conv3(6, bias=false) - relu) - dropout(0.3) - "
              "(gap | flatten - fc(6)) - bn - fc - softmax")


@pytest.mark.parametrize("path", model_params(MODELS))  # the full-size ones are slow
def test_every_model_passes(path):
    model = cnnc.compile_file(path, input=SMALL_INPUT.get(path.stem))
    rep = gradcheck(model, batch=2, directions=1, elements=2)  # the CLI's default is 2 and 3
    bad = [(c.layer, c.max_rel_error) for c in rep.checks if not c.ok]
    assert rep.ok, bad
    checked = {c.layer for c in rep.checks}
    params = {r.name for r in model.summary.rows if r.params}
    assert params <= checked  # every layer with parameters was checked


def test_every_layer_family_in_one_model(capsys):
    rc, out, _ = run_main(capsys, "gradcheck", "-e", ALL_LAYERS.replace("avgpool3(stride=2, pad=1, round=ceil)",
                                                                        "avgpool3(stride=1, pad=1, round=ceil)"),
                          "--input", "4x6x6", "--classes", "3", "--json")
    assert rc == 0, out
    data = json.loads(out)
    types = {row["type"] for row in data["layers"]}
    assert {"conv", "bn", "tanh", "maxpool", "sigmoid", "avgpool", "concat", "maxout", "leaky", "add",
            "dropout", "gap", "flatten", "fc", "softmax+xent"} <= types
    for row in data["layers"]:
        assert row["max_rel_error"] < row["tolerance"]


def test_broken_kernel_fails_exit_1(capsys, monkeypatch):
    """tanh's backward made wrong (the test hook is monkeypatching the kernel the op calls)."""
    from cnnc.kernels import elementwise

    def wrong_tanh_backward(dy, y, dx):  # d tanh = 1 - y^2; this forgets the square
        dx[...] = dy * (1.0 - y)

    monkeypatch.setattr(elementwise, "tanh_backward", wrong_tanh_backward)
    rc, out, _ = run_main(capsys, "gradcheck", "-e", "conv3(4) - tanh - fc", "--input", "2x5x5",
                          "--classes", "3")
    assert rc == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert rows["tanh_1"].endswith("FAIL")
    assert rows["conv_1"].endswith("ok") and rows["fc_1"].endswith("ok")
    assert "FAILED: 1 of" in out


def test_op_hook_breaks_a_parameter_gradient():
    def hook(name, op):
        if name != "conv_1":
            return op
        backward = op.backward

        def off_by_one_percent(xs, y, dy, dxs):
            backward(xs, y, dy, dxs)
            op.gw *= 1.01
        op.backward = off_by_one_percent
        return op

    model = cnnc.compile("conv3(4) - relu - pool - fc", input="2x6x6", classes=3)
    rep = gradcheck(model, op_hook=hook)
    bad = {c.layer: c for c in rep.checks if not c.ok}
    assert set(bad) == {"conv_1"}
    worst = max(bad["conv_1"].tensors, key=lambda t: t.max_rel_error)
    assert worst.tensor == "w" and worst.max_rel_error > 1e-3


def test_layer_option_and_bad_layer(capsys):
    rc, out, _ = run_main(capsys, "gradcheck", str(ROOT / "models" / "lenet5.cnn"), "--layer", "fc_2", "--json")
    assert rc == 0
    assert [r["layer"] for r in json.loads(out)["layers"]] == ["fc_2"]
    rc, _, err = run_main(capsys, "gradcheck", str(ROOT / "models" / "lenet5.cnn"), "--layer", "fc_9")
    assert rc == 1 and "fc_9" in err
    one_error_message(err)
    rc, _, err = run_main(capsys, "gradcheck", str(ROOT / "models" / "lenet5.cnn"), "--tol", "0")
    assert rc == 1
    one_error_message(err)


def test_progress_names_every_check_in_order(capsys):
    """gradcheck reports each layer before checking it (the first run compiles for seconds per
    layer), and the command line prints those lines on stderr, the table on stdout."""
    m = cnnc.compile("conv3(4) - relu - pool - fc(8) - relu - fc", input="1x8x8", classes=3)
    seen: list[tuple[str, int, int]] = []
    rep = gradcheck(m, batch=2, progress=lambda name, i, n: seen.append((name, i, n)))
    assert [name for name, _, _ in seen] == [c.layer for c in rep.checks]
    assert [i for _, i, _ in seen] == list(range(1, len(rep.checks) + 1))
    assert {n for _, _, n in seen} == {len(rep.checks)}
    code, out, err = run_main(capsys, "gradcheck", "-e", "conv3(4) - relu - pool - fc", "--input",
                              "1x8x8", "--classes", "3")
    assert code == 0 and "checking conv_1 (1/" in err and "checking" not in out
