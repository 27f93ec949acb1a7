"""examples/compare_torch.py and examples/torch_plain.py: the hand-written PyTorch models are
cnnc's architectures (parameter counts, parameter shapes, output shapes), the harness keeps
each runner in a process of its own, fails loudly on a mismatch, flags a failed self-check,
and runs end to end with every column, ONNX Runtime included."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT

import cnnc

EXAMPLES = ROOT / "examples"
CASES = ("lenet5", "vgg_cifar", "resnet8", "resnet18")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plain():
    pytest.importorskip("torch")
    return _load("torch_plain")


@pytest.fixture(scope="module")
def harness():
    return _load("compare_torch")


def test_the_harness_and_the_plain_script_name_the_same_cases(plain, harness):
    assert set(plain.MODELS) == set(harness.CASES) == set(CASES)
    assert all((ROOT / "models" / f"{stem}.cnn").is_file() for stem in CASES)


@pytest.mark.parametrize("stem", CASES)
def test_hand_written_torch_model_is_cnncs_architecture(plain, stem):
    """Same parameter count, same multiset of parameter shapes (a conv with the wrong kernel,
    bias or channel count changes it), same input shape and classes, and the output shape
    cnnc gives for that input."""
    import torch

    model = cnnc.compile_file(ROOT / "models" / f"{stem}.cnn")
    build, shape, classes = plain.MODELS[stem]
    net = build()
    assert tuple(model.input_shape) == shape and model.classes == classes
    assert sum(p.numel() for p in net.parameters()) == model.summary.total_params
    a = model.analysis
    cnnc_shapes = Counter(tuple(p.shape) for n in a.order for p in a.info[n].params)
    torch_shapes = Counter(tuple(p.shape) for p in net.parameters())
    assert torch_shapes == cnnc_shapes
    n_bn = sum(1 for n in a.order if a.layer(n).type.name == "bn")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == n_bn
    net.eval()
    with torch.inference_mode():
        out = net(torch.randn(2, *shape))
    assert tuple(out.shape) == (2, *a.shapes[a.order[-1]])


def test_torch_plain_imports_only_torch():
    """The models' module is plain PyTorch: no cnnc, no NumPy of its own, no subprocesses."""
    pytest.importorskip("torch")
    code = ("import sys; sys.path.insert(0, %r); import torch_plain; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cnnc', 'numba', 'onnxruntime'}))"
            % str(EXAMPLES))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.replace("'", '"')) == []
    code = (EXAMPLES / "torch_plain.py").read_text().split('"""', 2)[2]  # the code, not the docstring
    imports = {line.split()[1].split(".")[0] for line in code.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "argparse", "json", "time", "torch"}


def test_a_parameter_mismatch_stops_the_harness(harness):
    case = {"file": "models/x.cnn", "batch": 4, "classes": 10, "params": 100}
    harness._check_shapes(case, "torch/nchw", {"params": 100, "output_shape": [4, 10]})
    with pytest.raises(harness.HarnessError, match="parameters"):
        harness._check_shapes(case, "torch/nchw", {"params": 101, "output_shape": [4, 10]})
    with pytest.raises(harness.HarnessError, match="shape"):
        harness._check_shapes(case, "ort/-", {"output_shape": [4, 9]})


def test_a_worker_that_imports_another_framework_is_refused(harness, monkeypatch):
    monkeypatch.setattr(harness, "_spawn", lambda *a, **k: {"modules": ["torch", "cnnc"]})
    with pytest.raises(harness.HarnessError, match="imported cnnc"):
        harness.spawn_worker("torch", "nchw", {}, {})
    monkeypatch.setattr(harness, "_spawn", lambda *a, **k: {"modules": ["onnxruntime", "torch"]})
    with pytest.raises(harness.HarnessError, match="imported torch"):
        harness.spawn_worker("ort", "-", {}, {})


def test_unknown_model_names_are_refused():
    r = subprocess.run([sys.executable, str(EXAMPLES / "compare_torch.py"), "--models", "lenet5,nosuch"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nosuch" in r.stderr


def _report(harness, self_check_ok: bool) -> dict:
    row = {"cnnc_ms": 1.0, "torch_nchw_ms": 2.0, "torch_channels_last_ms": 3.0, "ort_ms": 1.5,
           "torch_best": "nchw", "ratio": 2.0, "ratio_ort": 1.5}
    dev = 0.03 if self_check_ok else 0.25
    case = {"model": "M", "file": "models/m.cnn", "batch": 8, "params": 10, "classes": 3, "steps": 1,
            "batch1_calls": 10, "train_s": {**row, "ort_ms": None, "ratio_ort": None}, "infer_s": row,
            "infer1_s": row, "cnnc_blas": [],
            "self_check": {"plain_ms": {"train_s": 2.0, "infer_s": 2.0, "infer1_s": 2.0},
                           "deviation": {"train_s": dev, "infer_s": 0.0, "infer1_s": 0.0},
                           "max_deviation": dev, "tolerance": 0.1, "ok": self_check_ok}}
    return {"date": "d", "machine": {"cpu": "c", "cores": 2}, "versions": {"torch": "t"},
            "sgemm_gflops_2_threads": 1.0, "keep_blas_env": False, "rounds": 1, "steps": 1,
            "load_before": "0", "load_after": "0", "cases": [case]}


def test_the_table_says_whether_the_self_check_passed(harness):
    ok = harness.format_table(_report(harness, True))
    assert "self-check: PyTorch numbers within 3% of examples/torch_plain.py" in ok
    assert "FAILED" not in ok
    bad = harness.format_table(_report(harness, False))
    assert "SELF-CHECK FAILED" in bad and "25%" in bad and "within" not in bad


def test_the_table_warns_when_the_machine_was_busy(harness):
    report = _report(harness, True)
    assert "busy" not in harness.format_table(report)
    report["load_before"] = "2.50 1.00 0.50"  # above one per core on 2 cores
    assert "the machine was busy" in harness.format_table(report)


@pytest.mark.slow  # about 20 s: six fresh processes (cnnc, 2 x PyTorch, ONNX Runtime, the export, torch_plain.py)
def test_harness_runs_end_to_end_on_lenet5(harness):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    r = subprocess.run([sys.executable, str(EXAMPLES / "compare_torch.py"), "--models", "lenet5",
                        "--rounds", "1", "--steps", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["machine"]["cores"] >= 1 and report["versions"]["torch"] != "not installed"
    (case,) = report["cases"]
    assert case["file"] == "models/lenet5.cnn" and case["batch"] == 64 and case["onnx_runtime"]
    assert case["params"] == cnnc.compile_file(ROOT / "models" / "lenet5.cnn").summary.total_params
    for key in ("train_s", "infer_s", "infer1_s"):
        row = case[key]
        for col in ("cnnc_ms", "torch_nchw_ms", "torch_channels_last_ms"):
            assert row[col] > 0
        assert row["ratio"] > 0 and row["torch_best"] in ("nchw", "channels_last")
        if key == "train_s":
            assert row["ort_ms"] is None and row["ratio_ort"] is None  # ONNX Runtime: inference only
        else:
            assert row["ort_ms"] > 0 and row["ratio_ort"] > 0
    sc = case["self_check"]
    assert set(sc["plain_ms"]) == {"train_s", "infer_s", "infer1_s"} and all(v > 0 for v in sc["plain_ms"].values())
    assert isinstance(sc["ok"], bool)
    table = harness.format_table(report)
    for heading in ("cnnc", "PyTorch NCHW", "PyTorch channels_last", "ONNX Runtime", "cnnc vs better PyTorch",
                    "cnnc vs ONNX Runtime", "inference, batch 64", "inference, batch 1", "training"):
        assert heading in table
    assert ("self-check: PyTorch numbers within" in table) != ("SELF-CHECK FAILED" in table)
