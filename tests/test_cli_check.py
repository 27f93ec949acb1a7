"""`cnnc check`, `cnnc layers` and `cnnc --help`, in-process through ``cnnc.cli.main.main`` and,
for the end-to-end path (exit status, stderr, what it imports), as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import MODEL_FILES, ROOT, one_error_message, run_subprocess

# ---- check ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.name for p in MODEL_FILES])
def test_check_every_model(cli, path):
    r = cli("check", str(path))
    assert r.code == 0, r.err
    assert r.err == ""
    assert "parameters" in r.out and "MACs" in r.out
    assert r.out.startswith(f"{path}: input ")


def test_check_text_shows_formulas_and_totals(cli):
    r = cli("check", str(ROOT / "models" / "lenet5.cnn"))
    assert r.code == 0
    assert "(5*5*1+1)*6 = 156" in r.out
    assert "61,706" in r.out and "416,520" in r.out
    assert "FLOPs = 2 x MACs" in r.out


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.name for p in MODEL_FILES])
def test_check_json(cli, path):
    r = cli("check", str(path), "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert isinstance(d["total_params"], int) and isinstance(d["total_macs"], int)
    assert d["layers"]
    for layer in d["layers"]:
        for key in ("name", "output_shape", "params", "macs", "receptive_field"):
            assert key in layer
        assert set(layer["receptive_field"]) >= {"size", "jump"}
    assert d["total_params"] == sum(layer["params"] for layer in d["layers"])
    assert d["total_macs"] == sum(layer["macs"] for layer in d["layers"])


def test_check_json_reference_numbers(cli):
    r = cli("check", str(ROOT / "models" / "resnet18.cnn"), "--json", "--batch", "8")
    d = json.loads(r.out)
    assert d["total_params"] == 11_689_512
    assert d["buffers"] == 9_600
    assert d["batch"] == 8


def test_check_expression(cli):
    r = cli("check", "-e", "[[conv3-relu]*2 - pool]*3 - fc",
                            "--input", "3x32x32", "--classes", "10", "--json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert d["total_params"] == 307_498
    assert d["input_shape"] == [3, 32, 32] and d["output_shape"] == [10]
    assert [x["output_shape"][0] for x in d["layers"] if x["type"] == "conv"] == [32, 32, 64, 64, 128, 128]


def test_check_expression_width_flag(cli):
    r = cli("check", "-e", "conv3 - pool - conv3 - fc", "--input", "3x8x8",
                          "--classes", "2", "--width", "4", "--json")
    assert r.code == 0
    d = json.loads(r.out)
    assert [x["output_shape"][0] for x in d["layers"] if x["type"] == "conv"] == [4, 8]


def test_check_flags_override_the_header(cli):
    r = cli("check", str(ROOT / "models" / "vgg_cifar.cnn"), "--input", "1x16x16",
                          "--classes", "3", "--json")
    assert r.code == 0
    d = json.loads(r.out)
    assert d["input_shape"] == [1, 16, 16] and d["output_shape"] == [3]


def test_check_bad_model_reports_position(cli, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x7x7\nclasses 10\nconv3(8, stride=3) - relu - fc\n")
    r = cli("check", str(bad))
    assert r.code == 1
    assert r.out == ""
    one_error_message(r.err)
    assert r.err.startswith(f"{bad}:3:1: error: conv3(stride=3) does not fit its 7x7 input")
    assert "    conv3(8, stride=3) - relu - fc\n    ^^^^^^^^^^^^^^^^^^\n" in r.err


def test_check_bad_expression_reports_position(cli):
    r = cli("check", "-e", "conv3 - reul", "--input", "3x8x8")
    assert r.code == 1
    one_error_message(r.err)
    assert r.err.startswith("<expr>:1:9: error: unknown layer 'reul'")
    assert "did you mean 'relu'" in r.err


@pytest.mark.parametrize("argv,needle", [
    (["check", "no/such/model.cnn"], "no such file"),
    (["check", str(ROOT / "models")], "directory"),
    (["check", "-e", "conv3", "--input", "3x32x32x2"], "bad input shape"),
    (["check", "-e", "conv3", "--input", "3x32x32", "--batch", "0"], "--batch must be at least 1"),
    (["check", str(ROOT / "models" / "lenet5.cnn"), "-e", "conv3"], "not both"),
    (["check"], "no model given"),
    (["check", "-e", "conv3 - fc"], "no input shape"),
    (["check", "-e", "conv3", "--input", "3x8x8", "--width", "0"], "--width must be at least 1"),
    (["check", "--classes", "ten", str(ROOT / "models" / "lenet5.cnn")], "invalid int value"),
    (["frobnicate"], "invalid choice"),
])
def test_check_usage_errors(cli, argv, needle):
    r = cli(*argv)
    assert r.code == 1
    one_error_message(r.err)
    assert needle in r.err


def test_check_binary_file(cli, tmp_path):
    binary = tmp_path / "weights.cnn"
    binary.write_bytes(bytes(range(256)) * 4)
    r = cli("check", str(binary))
    assert r.code == 1
    one_error_message(r.err)
    assert "not a text file" in r.err


def test_check_empty_file(cli, tmp_path):
    empty = tmp_path / "empty.cnn"
    empty.write_text("# nothing here\n")
    r = cli("check", str(empty), "--input", "3x8x8")
    assert r.code == 1
    one_error_message(r.err)
    assert "no network expression" in r.err


# ---- help and layers -------------------------------------------------------------------------


def test_help(cli):
    r = cli("--help")
    assert r.code == 0
    assert "check" in r.out and "layers" in r.out
    r = cli("check", "--help")
    assert r.code == 0
    assert "--input" in r.out and "--json" in r.out and "--batch" in r.out


def test_layers(cli):
    r = cli("layers")
    assert r.code == 0
    for name in ("conv", "maxpool", "avgpool", "gap", "fc", "relu", "bn", "dropout", "softmax", "id"):
        assert f"\n{name}" in "\n" + r.out
    assert "concat" not in r.out.split("\n\n")[0]  # internal merges are not listed as layers
    r = cli("layers", "--json")
    items = json.loads(r.out)
    assert {"conv", "fc", "relu"} <= {it["name"] for it in items}


# ---- as a subprocess -------------------------------------------------------------------------


def test_subprocess_check_ok_and_error(tmp_path):
    p = run_subprocess("check", "models/lenet5.cnn")
    assert p.code == 0, p.err
    assert "61,706" in p.out
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x32x32\nconv3 - (relu | relu + relu)\n")
    p = run_subprocess("check", str(bad))
    assert p.code == 1
    assert p.out == ""
    assert p.err.startswith(f"{bad}:2:22: error: ")
    assert "Traceback" not in p.err


#: Libraries whose import alone takes a large part of a second or more: `cnnc check` stays quick
#: by loading none of them (what it imports is the measure, not the wall clock, which depends on
#: the machine's load).
HEAVY_IMPORTS = ("numba", "llvmlite", "networkx", "scipy", "matplotlib", "sklearn", "PIL", "torch",
                 "onnx", "onnxruntime")


def test_subprocess_check_does_not_import_numba_or_networkx():
    code = ("import sys, json\n"
            "from cnnc.cli.main import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['check', 'models/resnet18.cnn'])\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_IMPORTS!r}))\n"
            "print(json.dumps([rc, heavy]))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rc, heavy = json.loads(p.stdout.splitlines()[-1])
    assert rc == 0
    assert "numba" not in heavy, "cnnc check must not import numba"
    assert "networkx" not in heavy, "cnnc check must not import networkx (Model.graph imports it)"
    assert heavy == [], f"cnnc check imports {heavy}"
