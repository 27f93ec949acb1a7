"""`cnnc viz` and `cnnc train --viz` end to end on a tiny digits model; bad inputs exit 1
with one message and write nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnc.training.runs import load_checkpoint
from cnnc.cli.main import main

MODEL = """input 1x8x8
classes 10
conv3(8) - relu - pool - conv3(8) - relu - fc(16) - relu - fc
data digits
epochs 2
batch 32
optimizer adam
lr 0.003
"""
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vizrun")
    model = root / "tiny.cnn"
    model.write_text(MODEL)
    assert main(["train", str(model), "--out", str(root / "run"), "--quiet", "--viz"]) == 0
    return model, root / "run"


def test_train_viz_writes_each_epoch_and_trains_the_same(run, tmp_path):
    model, folder = run
    names = sorted(p.name for p in (folder / "viz").iterdir())
    for epoch in (1, 2):
        assert f"filters-conv_1-epoch{epoch:03d}.png" in names
        assert sum(n.startswith(f"activations-relu_1-epoch{epoch:03d}-") for n in names) == 3
    assert all((folder / "viz" / n).read_bytes()[:8] == PNG for n in names)
    assert (folder / "curves.png").exists()
    assert main(["train", str(model), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    a, _ = load_checkpoint(folder / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "plain" / "checkpoint.npz")
    for k in a:
        if k.startswith("param."):
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("what,extra", [
    ("filters", []), ("activations", ["--layer", "relu_2"]), ("saliency", ["--samples", "3"]),
    ("guided", ["--class", "3"]), ("occlusion", ["--patch", "3", "--stride", "2"]),
    ("maximize", ["--steps", "5"]), ("maximize", ["--layer", "relu_2", "--channel", "1", "--steps", "5"]),
    ("neighbours", ["-k", "3", "--reference", "300"]), ("embedding", ["--method", "pca", "--count", "100"]),
    ("invert", ["--steps", "5", "--count", "2"]),
])
def test_every_view_writes_its_pngs(run, tmp_path, capsys, what, extra):
    model, folder = run
    out = tmp_path / "out"
    code = main(["viz", str(model), "--weights", str(folder), "--what", what, "-o", str(out), "--count", "2",
                 "--json", *extra])
    assert code == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert info["files"] and sorted(info["files"]) == sorted(str(p) for p in out.iterdir())
    assert all(open(f, "rb").read(8) == PNG for f in info["files"])


def test_image_files(run, tmp_path, capsys):
    from PIL import Image

    model, folder = run
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "big.png")
    assert main(["viz", str(model), "--weights", str(folder), "--what", "saliency", str(tmp_path / "a.png"),
                 "-o", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    assert main(["viz", str(model), "--weights", str(folder), "--what", "saliency", str(tmp_path / "big.png"),
                 "-o", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "big.png is 9x8 pixels" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args,message", [
    (["--what", "activations", "--layer", "relu1"], "no layer 'relu1' in this model"),
    (["--what", "activations", "--layer", "relu1"], "did you mean relu_1"),
    (["--what", "filters", "--layer", "maxpool_1"], "filters needs a conv layer, but maxpool_1 is a maxpool layer"),
    (["--what", "activations", "--layer", "fc_1"], "needs a layer with an image (CxHxW) output"),
    (["--what", "saliency", "--class", "12"], "class 12 is out of range"),
    (["--what", "maximize", "--layer", "conv_2", "--channel", "8"], "out of range 0..7"),
    (["--what", "occlusion", "--patch", "20"], "larger than the image"),
])
def test_bad_input_one_message_exit_1(run, tmp_path, capsys, args, message):
    model, folder = run
    out = tmp_path / "out"
    assert main(["viz", str(model), "--weights", str(folder), *args, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_weights_of_another_model(run, tmp_path, capsys):
    _, folder = run
    other = tmp_path / "other.cnn"
    other.write_text(MODEL.replace("conv3(8) - relu - fc(16)", "conv3(4) - relu - fc(16)"))
    assert main(["viz", str(other), "--weights", str(folder), "--what", "filters", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "the weights do not match this model" in err and "conv_2.w" in err
    assert not (tmp_path / "o").exists()
