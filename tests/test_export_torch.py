"""``cnnc export --format torch`` (issue 23): the PyTorch source of every model in ``models/``
runs and computes what cnnc computes, in float64, with the same weights; the safetensors
file written beside it is accepted by ``load_state_dict`` as it is (strict)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import cnnc

torch = pytest.importorskip("torch", reason="the generated source is run with PyTorch")

from cnnc.tools.export_torch import source, state_dict  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _small_input(model) -> str | None:
    """ImageNet-sized models 160 pixels smaller (224 -> 64, 227 -> 67): the same layers."""
    c, *hw = model.input_shape
    return "x".join(str(v) for v in (c, *(d - 160 for d in hw))) if len(hw) == 2 and hw[0] >= 224 else None


def compare(model, tmp_path: Path, seed: int = 0) -> float:
    """Max |torch - cnnc| relative to the largest output, float64, random weights and
    batch-norm statistics."""
    net = model.network(seed=seed, dtype="float64")
    rng = np.random.default_rng(seed)
    for key, value in net.state().items():  # running statistics that matter
        layer, name = key.split(".", 1)
        if name == "running_mean":
            net.set(layer, name, rng.normal(0, 0.2, value.shape))
        elif name == "running_var":
            net.set(layer, name, rng.uniform(0.5, 2.0, value.shape))
    path = tmp_path / "generated.py"
    path.write_text(source(model))
    mod = load_module(path)
    tnet = mod.Model().double().eval()
    tnet.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict(net, "float64").items()})
    x = rng.standard_normal((2, *model.input_shape))
    ours = net.forward(x)
    with torch.no_grad():
        theirs = tnet(torch.from_numpy(x)).numpy()
    assert theirs.shape == ours.shape
    return float(np.abs(theirs - ours).max() / np.abs(ours).max())


HEAVY = {"alexnet", "alexnet_caffe", "vgg16", "vgg19", "zfnet", "resnet50"}  # in the full suite only


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in HEAVY else [])
                                  for p in sorted(MODELS.glob("*.cnn"))])
def test_models_in_pytorch_equal_cnnc(path, tmp_path):
    model = cnnc.compile_file(path)
    model = cnnc.compile_file(path, input=_small_input(model))
    if len(model.summary.output_shape) != 1:
        pytest.skip(f"{path.name} is not a classifier: cnnc runs classifiers only")
    err = compare(model, tmp_path)
    assert err <= 1e-10, err


def test_every_layer_kind_in_pytorch(tmp_path):
    """The layers models/ leaves out: relu6, leaky, elu, tanh, sigmoid, maxout, lrn on
    vectors, avgpool with padding and ceil, dilated and grouped convs, 1-D, edge=drop."""
    texts = [
        ("conv3(6, groups=3, dilation=2) - relu6 - avgpool3(stride=2, pad=1, round=ceil) - "
         "conv1x3(4, bias=false) - bn - leaky(0.2) - maxout(2) - conv3(4, stride=2, pad=valid, edge=drop) - "
         "elu(0.5) - flatten - fc(8) - bn - tanh - lrn(3) - dropout(0.3) - fc(6) - sigmoid - fc", "3x11x11"),
        ("conv5(6, stride=2) - bn - relu - ( conv3(4) | avgpool3(stride=1, pad=1) ) - maxpool3(stride=2, edge=drop) "
         "- ( conv1(10) + id ) - gap - fc", "2x25"),
    ]
    for text, shape in texts:
        model = cnnc.compile(text, input=shape, classes=5)
        assert compare(model, tmp_path) <= 1e-10, text


def test_cli_writes_source_and_weights_load_state_dict_accepts(tmp_path, cli):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from cnnc.tools.weights_import import import_weights  # a checkpoint to export from

    model = cnnc.compile_file(MODELS / "resnet8.cnn")
    net = model.network(seed=3)
    np.savez(tmp_path / "w.npz", **{k: v for k, v in net.state().items()})
    import_weights(model, tmp_path / "w.npz", tmp_path / "run", normalize=False)
    out = tmp_path / "resnet8.py"
    r = cli("export", str(MODELS / "resnet8.cnn"), "--format", "torch", "-o", str(out), "--weights",
            str(tmp_path / "run"))
    assert r.code == 0, r
    text = out.read_text()
    assert "class Resnet8(nn.Module):" in text and "self.conv_1 = nn.Conv2d(3, 16" in text
    tnet = load_module(out).Model().eval()
    tnet.load_state_dict(load_file(tmp_path / "resnet8.safetensors"))  # strict: every key, every shape
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape)).astype(np.float32)
    with torch.no_grad():
        theirs = tnet(torch.from_numpy(x)).numpy()
    ours = net.forward(x)
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()
