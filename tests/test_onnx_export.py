"""ONNX export checked against onnxruntime (optimizations off and on) and onnx.checker.

Tolerance: max |ort - cnnc| <= 1e-5 x max |cnnc| per model output, in float32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import cnnc  # noqa: E402
from cnnc.tools.export_onnx import MAX_OPSET, MIN_OPSET, ExportError, build_model, export  # noqa: E402

from onnx_helpers import ort_outputs, randomize_norm_stats, reference, rel_error  # noqa: E402
from conftest import model_params, one_error_message  # noqa: E402
from conftest import run_captured as run_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.cnn"))
TOL = 1e-5


def check_export(model, tmp_path, *, seed=0, batch=2, opset=17):
    net = model.network(seed=seed)
    rng = np.random.default_rng(seed)
    randomize_norm_stats(net, rng)
    path = tmp_path / "m.onnx"
    proto = export(net, path, opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
    ref = reference(net, model, x)
    errors = []
    for out in ort_outputs(path, x):
        assert out.shape == ref.shape
        errors.append(rel_error(out, ref))
    return proto, net, max(errors)


@pytest.mark.parametrize("path", model_params(MODELS))  # the full-size ones are slow
def test_every_model_matches_onnxruntime(path, tmp_path):
    model = cnnc.compile_file(path)
    if len(model.summary.output_shape) != 1:
        pytest.skip(f"{path.stem} is no classifier (it ends in an image): cnnc cannot execute it, "
                    "so there is no forward to compare with")
    batch = 1 if model.summary.total_macs > 1e9 else 3
    proto, net, err = check_export(model, tmp_path, batch=batch)
    assert err <= TOL, err
    # names follow cnnc: input, output = last layer, initializers = Network.state() keys
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == [model.layers[-1]]
    assert {t.name for t in proto.graph.initializer if "/" not in t.name} == set(net.state())
    assert set(model.layers) <= {n.name for n in proto.graph.node}


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, 18, MAX_OPSET])
def test_corner_cases_every_opset(opset, tmp_path):
    """ceil windows starting in the padding, avg-pool divisor, depthwise, dilation, maxout 2/3,
    bn on vectors, softmax; 1-D networks (sequences), LRN on images, sequences and vectors, elu."""
    cases = [
        ("avgpool3(stride=2, pad=1, round=ceil) - maxpool3(stride=2, pad=1, round=ceil) - fc", "2x4x4"),
        ("avgpool2(pad=1) - maxpool3(stride=2, round=ceil) - fc", "3x7x7"),
        ("conv3(6, groups=6) - conv3(6, dilation=2) - conv3(4, stride=2, pad=2, dilation=2) - fc", "6x9x9"),
        ("conv3(6) - maxout(3) - conv1x3(4, bias=false) - maxout(2) - flatten - fc(9) - maxout(3) - bn - fc",
         "2x5x6"),
        ("conv3(4) - bn - leaky(0.2) - gap - bn - tanh - fc(5) - sigmoid - fc - softmax", "3x6x6"),
        ("conv1(3) - fc(7, bias=false) - relu - dropout(0.5) - fc(4, bias=false) - fc", "2x3x5"),
        # the layers of the 1-D and LRN issue, and elu
        ("conv5(6, stride=2) - bn - elu(0.7) - lrn(3, alpha=0.1) - maxpool3(stride=2, round=ceil) - "
         "( conv3(4) | avgpool3(stride=1, pad=1) ) - maxout(2) - gap - fc(6) - lrn(3) - fc", "2x23"),
        ("conv3(4, groups=2, dilation=2) - relu - avgpool2(round=ceil) - flatten - fc", "2x9"),
        ("conv3(8) - lrn(5, alpha=1e-3, beta=0.75, k=2) - relu - pool - fc", "3x8x8"),
        ("conv3(8) - relu6 - conv3(8, groups=8) - bn - relu6 - fc", "3x6x6"),  # MobileNet's ReLU6 (Clip)
    ]
    for i, (text, shape) in enumerate(cases):
        model = cnnc.compile(text, input=shape, classes=3)
        _, _, err = check_export(model, tmp_path, seed=i, batch=4, opset=opset)
        assert err <= TOL, (text, err)


def test_python_api_and_cli(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    rc, stdout, _ = run_main(capsys, "export", str(ROOT / "models" / "lenet5.cnn"), "-o", str(out), "--seed", "3")
    assert rc == 0 and out.exists() and "opset 17" in stdout
    model = cnnc.compile_file(ROOT / "models" / "lenet5.cnn")
    net = model.network(seed=3)  # the same seed gives the same weights, so the same outputs
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32), dtype=np.float32)
    for o in ort_outputs(out, x):
        assert rel_error(o, net.forward(x)) <= TOL
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["cnnc.input_shape"] == "1x32x32"


def test_export_with_weights_from_a_checkpoint(tmp_path, capsys):
    from cnnc.training.runs import save_checkpoint

    model = cnnc.compile_file(ROOT / "models" / "digits.cnn")
    net = model.network(seed=5)
    run = tmp_path / "run"
    run.mkdir()
    arrays = {f"param.{k}": v for k, v in net.state().items()}
    arrays["data.mean"] = np.zeros(1, np.float32)
    arrays["data.std"] = np.ones(1, np.float32)
    save_checkpoint(run / "best.npz", arrays, {"kind": "cnnc-training", "classes": net.classes,
                                               "input_shape": list(model.input_shape)})
    out = tmp_path / "d.onnx"
    rc, _, err = run_main(capsys, "export", str(ROOT / "models" / "digits.cnn"), "--weights", str(run),
                          "-o", str(out))
    assert rc == 0, err
    x = np.random.default_rng(2).standard_normal((3, *model.input_shape), dtype=np.float32)
    for o in ort_outputs(out, x):
        assert rel_error(o, net.forward(x)) <= TOL
    seeded = model.network(seed=0).forward(x)
    assert rel_error(ort_outputs(out, x)[0], seeded) > 1e-3  # really the checkpoint's weights


def test_bad_inputs_write_nothing(tmp_path, capsys):
    lenet = str(ROOT / "models" / "lenet5.cnn")
    out = tmp_path / "x.onnx"
    for argv in (["--weights", str(tmp_path / "missing")], ["--opset", "7"], ["--opset", "99"]):
        rc, _, err = run_main(capsys, "export", lenet, "-o", str(out), *argv)
        assert rc == 1
        one_error_message(err)
        assert not out.exists()
    rc, _, err = run_main(capsys, "export", lenet, "-o", str(tmp_path / "no" / "dir" / "x.onnx"))
    assert rc == 1
    one_error_message(err)


def test_a_layer_without_mapping_is_named(tmp_path, monkeypatch):
    from cnnc.layers.activation import Tanh
    from cnnc.layers.base import LayerType

    monkeypatch.setattr(Tanh, "to_onnx", LayerType.to_onnx)
    net = cnnc.compile("conv3(4) - tanh - fc", input="1x5x5", classes=2).network()
    with pytest.raises(ExportError, match="tanh_1"):
        export(net, tmp_path / "t.onnx")
    assert not (tmp_path / "t.onnx").exists()
    with pytest.raises(ExportError, match="tanh_1"):
        build_model(net)


def test_the_input_is_documented_and_preprocessing_can_ride_along(tmp_path, capsys):
    """The exported model says what its input is (doc string and metadata `cnnc.input`, with the
    checkpoint's mean and std); with --with-preprocessing it takes raw pixels 0..255 and gives
    what cnnc gives for the same uint8 images normalized its own way."""
    onnx = pytest.importorskip("onnx")
    digits = Path(__file__).resolve().parents[1] / "models" / "digits.cnn"
    model = cnnc.compile_file(digits)
    src = tmp_path / "w.npz"
    np.savez(src, **model.network(seed=3).state())
    run = tmp_path / "run"
    rc, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(src), "-o", str(run),
                          "--mean", "0.3", "--std", "0.25")
    assert rc == 0, err
    plain, raw = tmp_path / "plain.onnx", tmp_path / "raw.onnx"
    rc, out, err = run_main(capsys, "export", str(digits), "--weights", str(run), "-o", str(plain))
    assert rc == 0, err
    assert "pixels / 255, minus mean (0.3), divided by std (0.25)" in out
    proto = onnx.load(str(plain))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnc.input"] in proto.doc_string and "mean (0.3)" in meta["cnnc.input"]
    rc, out, err = run_main(capsys, "export", str(digits), "--weights", str(run), "-o", str(raw),
                            "--with-preprocessing")
    assert rc == 0, err
    assert onnx.load(str(raw)).graph.input[0].name == "pixels" and "raw pixel values" in out
    pixels = np.random.default_rng(5).integers(0, 256, (3, *model.input_shape)).astype(np.uint8)
    normalized = ((pixels / 255.0 - 0.3) / 0.25).astype(np.float32)  # written out, not cnnc's code
    want = ort_outputs(plain, normalized)[0]
    for o in ort_outputs(raw, pixels.astype(np.float32)):
        assert rel_error(o, want) < 1e-5
    seq = tmp_path / "seq.onnx"
    rc, _, err = run_main(capsys, "export", "-e", "conv3(4)-gap-fc", "--input", "1x16", "--classes", "3",
                          "-o", str(seq), "--with-preprocessing")
    assert rc == 1 and "sequences" in err and not seq.exists()
    one_error_message(err)
