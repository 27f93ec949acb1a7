"""`cnnc diff`: layer-list alignment and the per-layer / total differences."""
from __future__ import annotations

import json
from pathlib import Path

import cnnc
from cnnc.tools.diff import ADDED, CHANGED, REMOVED, diff_models

from conftest import one_error_message
from conftest import run_captured as run_main

ROOT = Path(__file__).resolve().parent.parent
VGG16 = (ROOT / "models" / "vgg16.cnn").read_text()


def vgg19_text() -> str:
    # configuration E: the last three stages have four convolutions instead of three
    text = VGG16.replace("[conv3(256) - relu]*3", "[conv3(256) - relu]*4")
    return text.replace("[conv3(512) - relu]*3", "[conv3(512) - relu]*4")


def conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return (k * k * c_in + 1) * c_out


def test_vgg16_vs_vgg19_shows_exactly_three_added_convs(tmp_path, capsys):
    b = tmp_path / "vgg19.cnn"
    b.write_text(vgg19_text())
    d = diff_models(cnnc.compile_file(ROOT / "models" / "vgg16.cnn"), cnnc.compile_file(b))
    added = [r.b for r in d.rows if r.status == ADDED]
    assert [r.type for r in added].count("conv") == 3
    assert {r.type for r in added} == {"conv", "relu"}  # each added conv brings its relu
    assert d.count(REMOVED) == 0 and d.count(CHANGED) == 0
    expected = conv_params(256, 256) + 2 * conv_params(512, 512)
    assert expected == 5_309_696
    assert d.totals()["params"]["delta"] == expected
    assert sum(r.params for r in d.rows) == expected
    assert sorted(r.output_shape for r in added if r.type == "conv") == \
        sorted([(256, 56, 56), (512, 28, 28), (512, 14, 14)])
    rc, out, _ = run_main(capsys, "diff", str(ROOT / "models" / "vgg16.cnn"), str(b))
    assert rc == 0
    assert "+5,309,696" in out
    assert sum(1 for line in out.splitlines() if line.startswith("+") and "filters" in line) == 3


def test_residual_block_with_and_without_projection(capsys):
    block = "conv3(16, bias=false) - bn - relu - conv3(16, bias=false) - bn"
    a = f"({block} + id) - relu - gap - fc"
    b = f"({block} + conv1(16, bias=false) - bn) - relu - gap - fc"
    rc, out, _ = run_main(capsys, "diff", "-e", a, "-e", b, "--input", "16x8x8", "--classes", "10", "--json")
    assert rc == 0
    data = json.loads(out)
    added = [r["b"] for r in data["layers"] if r["status"] == "added"]
    assert [r["type"] for r in added] == ["conv", "bn"]
    assert data["totals"]["params"]["delta"] == 16 * 16 + 2 * 16
    assert data["totals"]["buffers"]["delta"] == 2 * 16
    assert data["totals"]["macs"]["delta"] == 16 * 16 * 8 * 8
    assert data["counts"]["removed"] == 0


def test_changed_width_is_one_changed_layer_with_deltas():
    a = cnnc.compile("conv3(8) - relu - pool - fc", input="1x28x28", classes=10)
    b = cnnc.compile("conv3(16) - relu - pool - fc", input="1x28x28", classes=10)
    d = diff_models(a, b)
    conv = d.rows[0]
    assert conv.status == CHANGED and conv.a.name == conv.b.name == "conv_1"
    assert conv.params == conv_params(1, 16) - conv_params(1, 8)
    assert conv.macs == (16 - 8) * 28 * 28 * 9
    assert "output shape" in conv.changes()
    fc = d.rows[-1]
    assert fc.params == (16 - 8) * 14 * 14 * 10
    assert d.totals()["params"]["delta"] == conv.params + fc.params


def test_identical_models_have_no_differences(capsys):
    rc, out, _ = run_main(capsys, "diff", str(ROOT / "models" / "lenet5.cnn"),
                          str(ROOT / "models" / "lenet5.cnn"))
    assert rc == 0 and "identical" in out


def test_bad_inputs_one_message(capsys, tmp_path):
    rc, _, err = run_main(capsys, "diff", str(ROOT / "models" / "lenet5.cnn"))
    assert rc == 1
    one_error_message(err)
    rc, _, err = run_main(capsys, "diff", str(tmp_path / "nope.cnn"), str(ROOT / "models" / "lenet5.cnn"))
    assert rc == 1 and "no such file" in err
    one_error_message(err)
    rc, _, err = run_main(capsys, "diff", "-e", "conv3 - fc", "-e", "conv3 - bogus", "--input", "1x8x8",
                          "--classes", "2")
    assert rc == 1 and "bogus" in err


def test_an_expression_takes_input_and_classes_from_the_file_it_is_compared_with(capsys):
    """`cnnc diff models/lenet5.cnn -e 'conv5(6)-relu-pool-fc' --json` (the --help example):
    the expression has no header lines, so it runs on LeNet-5's 1x32x32 input and 10 classes,
    wherever it stands on the command line (expressions come after the files: it is B)."""
    for argv in (["models/lenet5.cnn", "-e", "conv5(6)-relu-pool-fc"],
                 ["-e", "conv5(6)-relu-pool-fc", "models/lenet5.cnn"]):
        code, out, err = run_main(capsys, "diff", *argv, "--json")
        assert code == 0, err
        d = json.loads(out)
        side = "b"
        expr = d[side]
        assert expr["input_shape"] == [1, 32, 32] and expr["classes"] == 10
        # conv5(6) at 'same' padding on 32x32, pool -> 6x16x16, then fc to 10 classes
        assert d["totals"]["params"][side] == (5 * 5 * 1 + 1) * 6 + (6 * 16 * 16 + 1) * 10
    code, _, err = run_main(capsys, "diff", "-e", "conv3", "-e", "conv5")
    assert code == 1 and "no input shape" in err
