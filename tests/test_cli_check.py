"""`cnnc check`, `cnnc layers` and `cnnc --help`, in-process through ``cnnc.cli.main`` and,
for the end-to-end path (exit status, stderr, imports, start-up time), as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnc.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted((ROOT / "models").glob("*.cnn"))


def run_main(capsys, *argv):
    """main(argv) -> (exit status, stdout, stderr); SystemExit (argparse) counts as a status."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # --help, argparse errors
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return rc, out, err


def run_cli(*argv, cwd=ROOT, timeout=60):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "cnnc.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_message(err: str) -> None:
    """stderr holds one clear message: no traceback, an 'error:' line."""
    assert "Traceback" not in err
    assert "error:" in err
    assert err.count("error:") == 1, err


# ---- check ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_check_every_model(capsys, path):
    rc, out, err = run_main(capsys, "check", str(path))
    assert rc == 0, err
    assert err == ""
    assert "parameters" in out and "MACs" in out
    assert out.startswith(f"{path}: input ")


def test_check_text_shows_formulas_and_totals(capsys):
    rc, out, _ = run_main(capsys, "check", str(ROOT / "models" / "lenet5.cnn"))
    assert rc == 0
    assert "(5*5*1+1)*6 = 156" in out
    assert "61,706" in out and "416,520" in out
    assert "FLOPs = 2 x MACs" in out


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_check_json(capsys, path):
    rc, out, err = run_main(capsys, "check", str(path), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert isinstance(d["total_params"], int) and isinstance(d["total_macs"], int)
    assert d["layers"]
    for layer in d["layers"]:
        for key in ("name", "output_shape", "params", "macs", "receptive_field"):
            assert key in layer
        assert set(layer["receptive_field"]) >= {"size", "jump"}
    assert d["total_params"] == sum(layer["params"] for layer in d["layers"])
    assert d["total_macs"] == sum(layer["macs"] for layer in d["layers"])


def test_check_json_reference_numbers(capsys):
    rc, out, _ = run_main(capsys, "check", str(ROOT / "models" / "resnet18.cnn"), "--json", "--batch", "8")
    d = json.loads(out)
    assert d["total_params"] == 11_689_512
    assert d["buffers"] == 9_600
    assert d["batch"] == 8


def test_check_expression(capsys):
    rc, out, err = run_main(capsys, "check", "-e", "[[conv3-relu]*2 - pool]*3 - fc",
                            "--input", "3x32x32", "--classes", "10", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["total_params"] == 307_498
    assert d["input_shape"] == [3, 32, 32] and d["output_shape"] == [10]
    assert [x["output_shape"][0] for x in d["layers"] if x["type"] == "conv"] == [32, 32, 64, 64, 128, 128]


def test_check_expression_width_flag(capsys):
    rc, out, _ = run_main(capsys, "check", "-e", "conv3 - pool - conv3 - fc", "--input", "3x8x8",
                          "--classes", "2", "--width", "4", "--json")
    assert rc == 0
    d = json.loads(out)
    assert [x["output_shape"][0] for x in d["layers"] if x["type"] == "conv"] == [4, 8]


def test_check_flags_override_the_header(capsys):
    rc, out, _ = run_main(capsys, "check", str(ROOT / "models" / "vgg_cifar.cnn"), "--input", "1x16x16",
                          "--classes", "3", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["input_shape"] == [1, 16, 16] and d["output_shape"] == [3]


def test_check_bad_model_reports_position(capsys, tmp_path):
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x7x7\nclasses 10\nconv3(8, stride=3) - relu - fc\n")
    rc, out, err = run_main(capsys, "check", str(bad))
    assert rc == 1
    assert out == ""
    one_error_message(err)
    assert err.startswith(f"{bad}:3:1: error: conv3(stride=3) does not fit its 7x7 input")
    assert "    conv3(8, stride=3) - relu - fc\n    ^^^^^^^^^^^^^^^^^^\n" in err


def test_check_bad_expression_reports_position(capsys):
    rc, out, err = run_main(capsys, "check", "-e", "conv3 - reul", "--input", "3x8x8")
    assert rc == 1
    one_error_message(err)
    assert err.startswith("<expr>:1:9: error: unknown layer 'reul'")
    assert "did you mean 'relu'" in err


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
def test_check_usage_errors(capsys, argv, needle):
    rc, out, err = run_main(capsys, *argv)
    assert rc == 1
    one_error_message(err)
    assert needle in err


def test_check_binary_file(capsys, tmp_path):
    binary = tmp_path / "weights.cnn"
    binary.write_bytes(bytes(range(256)) * 4)
    rc, out, err = run_main(capsys, "check", str(binary))
    assert rc == 1
    one_error_message(err)
    assert "not a text file" in err


def test_check_empty_file(capsys, tmp_path):
    empty = tmp_path / "empty.cnn"
    empty.write_text("# nothing here\n")
    rc, out, err = run_main(capsys, "check", str(empty), "--input", "3x8x8")
    assert rc == 1
    one_error_message(err)
    assert "no network expression" in err


# ---- help and layers -------------------------------------------------------------------------


def test_help(capsys):
    rc, out, _ = run_main(capsys, "--help")
    assert rc == 0
    assert "check" in out and "layers" in out
    rc, out, _ = run_main(capsys, "check", "--help")
    assert rc == 0
    assert "--input" in out and "--json" in out and "--batch" in out


def test_layers(capsys):
    rc, out, _ = run_main(capsys, "layers")
    assert rc == 0
    for name in ("conv", "maxpool", "avgpool", "gap", "fc", "relu", "bn", "dropout", "softmax", "id"):
        assert f"\n{name}" in "\n" + out
    assert "concat" not in out.split("\n\n")[0]  # internal merges are not listed as layers
    rc, out, _ = run_main(capsys, "layers", "--json")
    items = json.loads(out)
    assert {"conv", "fc", "relu"} <= {it["name"] for it in items}


# ---- as a subprocess -------------------------------------------------------------------------


def test_subprocess_check_ok_and_error(tmp_path):
    p = run_cli("check", "models/lenet5.cnn")
    assert p.returncode == 0, p.stderr
    assert "61,706" in p.stdout
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 3x32x32\nconv3 - (relu | relu + relu)\n")
    p = run_cli("check", str(bad))
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.startswith(f"{bad}:2:22: error: ")
    assert "Traceback" not in p.stderr


def test_subprocess_check_does_not_import_numba():
    code = ("import sys, time\n"
            "t = time.perf_counter()\n"
            "from cnnc.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    rc = main(['check', 'models/resnet18.cnn'])\n"
            "print(rc, 'numba' in sys.modules, time.perf_counter() - t)\n")
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - start
    assert p.returncode == 0, p.stderr
    rc, has_numba, inner = p.stdout.split()
    print(f"\ncnnc check models/resnet18.cnn: {wall:.2f} s wall (process), {float(inner):.2f} s in main")
    assert rc == "0"
    assert has_numba == "False", "cnnc check must not import numba"
    assert wall < 3.0
