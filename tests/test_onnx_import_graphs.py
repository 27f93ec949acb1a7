"""``cnnc import`` on graphs that need no PyTorch to make (issue 23): every model of
``models/`` exported with ``cnnc export`` and imported back has the same summary; the
operators and constant folds on a graph written with ``onnx.helper``, against
onnxruntime; a corpus of broken files, each one message, exit 1 and no file written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_failure

import cnnc

pytest.importorskip("onnx", reason="cnnc import needs the onnx package")

from cnnc.tools.onnx_import import import_onnx  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"


# ---------------------------------------------------------------------------------------
# Round trip: cnnc export, then cnnc import
# ---------------------------------------------------------------------------------------


def _layer_rows(model) -> list[tuple]:
    """(kind, output shape, parameters, MACs) of every layer an ONNX file can carry:
    dropout is the identity at inference and leaves no trace in the file."""
    a = model.analysis
    return [(a.layer(n).type.name, a.info[n].out_shape, a.info[n].param_count, a.info[n].macs)
            for n in a.order if not a.layer(n).type.identity_at_inference]


def _small_input(path: Path) -> list[str]:
    """ImageNet-sized models 160 pixels smaller (224 -> 64, AlexNet's 227 -> 67, which every
    stride divides as it divides the full size): the same layers, files of megabytes
    instead of hundreds."""
    c, *hw = cnnc.compile_file(path).input_shape
    return ["--input", "x".join(str(v) for v in (c, *(d - 160 for d in hw)))] if len(hw) == 2 and hw[0] >= 224 else []


#: models whose files are tens of megabytes even at reduced size: in the full suite only
HEAVY = {"alexnet", "alexnet_caffe", "vgg16", "vgg19", "zfnet", "resnet50"}


def model_files():
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in HEAVY else [])
            for p in sorted(MODELS.glob("*.cnn"))]


@pytest.mark.parametrize("path", model_files())
def test_models_round_trip(path, tmp_path, cli):
    """cnnc export, then cnnc import: the same parameters, MACs and layer shapes."""
    small = _small_input(path)
    original = cnnc.compile_file(path, input=small[1] if small else None)
    if len(original.summary.output_shape) != 1:
        pytest.skip(f"{path.name} is not a classifier: cnnc exports classifiers only")
    onnx_file = tmp_path / f"{path.stem}.onnx"
    r = cli("export", str(path), "-o", str(onnx_file), *small)
    assert r.code == 0, r
    result = import_onnx(onnx_file)
    back = result.model
    assert back.summary.total_params == original.summary.total_params
    assert back.summary.total_macs == original.summary.total_macs
    assert _layer_rows(back) == _layer_rows(original), result.text


# ---------------------------------------------------------------------------------------
# The command line, and broken files
# ---------------------------------------------------------------------------------------


def test_operators_and_folded_constants(tmp_path):
    """A graph written with onnx.helper: a bias-free conv whose per-channel Mul and Add fold
    into its weights, Clip as relu6, LeakyRelu, Elu, Sigmoid, Tanh, LRN, an AveragePool with
    count_include_pad, Sum of two branches, Concat, Dropout, Identity, Reshape to a vector,
    MatMul + Add as an fc, Softmax at the end; against onnxruntime."""
    import onnx
    import onnx.helper as oh

    rng = np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    inits = {"w": r(6, 3, 3, 3), "scale": r(1, 6, 1, 1), "shift": r(6, 1, 1), "lo": np.float32(0),
             "hi": np.float32(6), "w2": r(6, 6, 1, 1), "b2": r(6), "w3": r(4, 6, 3, 3), "shape": None,
             "mm": r(8 * 3 * 3, 5), "bias": r(5)}
    nodes = [
        oh.make_node("Conv", ["x", "w"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        oh.make_node("Mul", ["c1", "scale"], ["m1"], name="scale"),
        oh.make_node("Add", ["shift", "m1"], ["a1"], name="shift"),
        oh.make_node("Clip", ["a1", "lo", "hi"], ["r6"], name="clip"),
        oh.make_node("Conv", ["r6", "w2", "b2"], ["c2"], name="conv1x1"),
        oh.make_node("LeakyRelu", ["c2"], ["l2"], name="leaky", alpha=0.2),
        oh.make_node("Elu", ["r6"], ["e2"], name="elu"),
        oh.make_node("Sum", ["l2", "e2"], ["s2"], name="sum"),
        oh.make_node("Dropout", ["s2"], ["d2"], name="dropout"),
        oh.make_node("LRN", ["d2"], ["n2"], name="lrn", size=3, alpha=1e-3, beta=0.75, bias=1.0),
        oh.make_node("AveragePool", ["n2"], ["p2"], name="avg", kernel_shape=[2, 2], strides=[2, 2],
                     count_include_pad=1),
        oh.make_node("Conv", ["p2", "w3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        oh.make_node("Sigmoid", ["c3"], ["g3"], name="sigmoid"),
        oh.make_node("Tanh", ["c3"], ["t3"], name="tanh"),
        oh.make_node("Concat", ["g3", "t3"], ["k3"], name="concat", axis=1),
        oh.make_node("Identity", ["k3"], ["i3"], name="identity"),
        oh.make_node("Reshape", ["i3", "shape"], ["v"], name="reshape"),
        oh.make_node("MatMul", ["v", "mm"], ["f"], name="matmul"),
        oh.make_node("Add", ["f", "bias"], ["logits"], name="bias"),
        oh.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    inits["shape"] = np.array([0, -1], np.int64)
    model = _onnx_model(nodes, {k: v for k, v in inits.items() if k != "shape"}, in_dims=["N", 3, 6, 6])
    model.graph.initializer.append(onnx.numpy_helper.from_array(inits["shape"], "shape"))
    ort = pytest.importorskip("onnxruntime", reason="the reference is onnxruntime")
    path = tmp_path / "ops.onnx"
    path.write_bytes(model.SerializeToString())
    result = import_onnx(path)
    assert result.text.endswith(
        "conv3(6) - relu6 - ( conv1(6) - leaky(0.2) + elu ) - lrn(3, alpha=0.001, k=1) - avgpool2 -\n"
        "    conv3(4, bias=false) - ( sigmoid | tanh ) - fc - softmax\n"), result.text
    net = result.model.network()
    net.load_state(result.state)
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    logits = net.forward(x)  # softmax is fused into the loss: forward gives the logits
    ours = np.exp(logits - logits.max(1, keepdims=True))
    ours /= ours.sum(1, keepdims=True)
    assert np.abs(ours - ref).max() <= 1e-5


def _onnx_model(nodes, inits, in_shape=(1, 3, 8, 8), out="y", in_dims=None):
    import onnx
    import onnx.helper as oh
    import onnx.numpy_helper as nh

    dims = in_dims if in_dims is not None else list(in_shape)
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, dims)],
                          [oh.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)],
                          initializer=[nh.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a piece of the one message it must give)."""
    import onnx
    import onnx.helper as oh

    w = np.ones((4, 3, 3, 3), np.float32)
    good = _onnx_model([oh.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        oh.make_node("Relu", ["c"], ["y"], name="relu")], {"w": w})
    files = {}

    def put(name, data: bytes, expect: str):
        p = tmp_path / f"{name}.onnx"
        p.write_bytes(data)
        files[name] = (p, expect)

    data = good.SerializeToString()
    put("truncated", data[: len(data) // 2], "not an ONNX model")
    put("not_protobuf", b"\x89PNG\r\n\x1a\n not a model at all", "not an ONNX model")
    put("empty", b"", "not an ONNX model")
    put("unknown_op", _onnx_model([oh.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                                   oh.make_node("HardSwish", ["c"], ["y"], name="act_7")],
                                  {"w": w}).SerializeToString(), "HardSwish node 'act_7'")
    put("missing_weights", _onnx_model([oh.make_node("Conv", ["x", "w"], ["y"], name="conv")], {})
        .SerializeToString(), "reads 'w'")
    put("cycle", _onnx_model([oh.make_node("Add", ["x", "b"], ["a"], name="first"),
                              oh.make_node("Relu", ["a"], ["b"], name="second"),
                              oh.make_node("Relu", ["b"], ["y"], name="third")], {}).SerializeToString(), "cycle")
    put("dynamic_shape", _onnx_model([oh.make_node("Relu", ["x"], ["y"], name="r")], {},
                                     in_dims=["N", 3, "H", "W"]).SerializeToString(), "dynamic shape")
    put("absurd_dims", _onnx_model([oh.make_node("Relu", ["x"], ["y"], name="r")], {},
                                   in_dims=["N", 3, 1 << 40, 8]).SerializeToString(), "absurd dimension")
    put("asymmetric_pad", _onnx_model([oh.make_node("Conv", ["x", "w"], ["y"], name="tf_conv",
                                                    pads=[0, 0, 2, 2])], {"w": w}).SerializeToString(),
        "asymmetric padding")
    big = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 3, 3])
    m = _onnx_model([oh.make_node("Conv", ["x", "w"], ["y"], name="conv")], {})
    m.graph.initializer.append(big)
    put("absurd_weight", m.SerializeToString(), "elements")
    return files


def test_broken_files_give_one_message_and_write_nothing(tmp_path, cli):
    for name, (path, expect) in _broken_files(tmp_path).items():
        out, run = tmp_path / f"{name}.cnn", tmp_path / f"{name}-run"
        r = cli("import", str(path), "-o", str(out), "--weights-out", str(run))
        assert_clean_failure(r, expect)
        assert not out.exists() and not run.exists(), name


def test_unsupported_operator_names_what_cnnc_supports(tmp_path, cli):
    path, _ = _broken_files(tmp_path)["unknown_op"]
    r = cli("import", str(path))
    assert r.code == 1
    assert "HardSwish" in r.err and "Conv" in r.err and "BatchNormalization" in r.err
