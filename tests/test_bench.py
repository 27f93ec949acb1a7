"""`cnnc bench`: the per-layer profile (--layers) over every scheduled step, fused ones
included, in text and JSON."""
from __future__ import annotations

import json

from cnnc.cli.main import main

RESIDUAL = ("conv3(8, bias=false) - bn - relu - (conv3(8, bias=false) - bn - relu - "
            "conv3(8, bias=false) - bn + id) - relu - (conv3(16, stride=2, pad=1, bias=false) - bn - "
            "relu - conv3(16, bias=false) - bn + conv1(16, stride=2, bias=false) - bn) - relu - gap - fc")


def test_layer_profile_covers_every_step_of_a_residual_network(tmp_path, capsys):
    model = tmp_path / "res.cnn"
    model.write_text(f"input 3x16x16\nclasses 10\n{RESIDUAL}\n")
    code = main(["bench", str(model), "--batch", "4", "--steps", "2", "--repeats", "1",
                 "--no-compile-times", "--layers", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)["layers"]
    types = {r["layer"]: r["type"] for r in rows}
    assert types["bn_3"] == "bn+add+relu" and types["bn_5"] == "bn+add+relu"
    assert types["conv_6"] == "conv" and "add_1" not in types
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in rows)
    code = main(["bench", str(model), "--batch", "4", "--steps", "2", "--repeats", "1",
                 "--no-compile-times", "--layers"])
    text = capsys.readouterr().out
    assert code == 0 and "bn+add+relu" in text and "per layer" in text


def test_bench_says_what_it_is_measuring(capsys, tmp_path):
    """Each phase of `cnnc bench` is announced on stderr (the cold compile measurement alone
    takes tens of seconds); the report stays on stdout."""
    from conftest import run_captured, write_model

    model = write_model(tmp_path, "input 1x8x8\nclasses 3\nconv3(4) - relu - pool - fc\n")
    code, out, err = run_captured(capsys, "bench", str(model), "--batch", "2", "--steps", "1",
                                  "--repeats", "1", "--no-compile-times")
    assert code == 0, err
    phases = [line for line in err.splitlines() if line.endswith("...") and "compiling" not in line]
    assert phases == ["first step in this process ...", "timing training: 1 run of 1 step ...",
                      "timing inference: 1 run of 1 batch ...",
                      "timing inference at batch 1: 10 calls of net.forward on one image ..."]
    assert "images/s" in out and "timing" not in out


def test_bench_reports_batch1_latency(capsys, tmp_path):
    """Beside the throughput at --batch, `cnnc bench` reports the median latency of one image
    through net.forward, in JSON and in text."""
    from conftest import run_captured, write_model

    model = write_model(tmp_path, "input 1x8x8\nclasses 3\nconv3(4) - relu - pool - fc\n")
    args = ("bench", str(model), "--batch", "4", "--steps", "2", "--repeats", "1", "--no-compile-times")
    code, out, err = run_captured(capsys, *args, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["infer_batch1_ms"] > 0 and r["infer_batch1_calls"] == 20
    assert r["infer_ms_per_batch"] > 0 and "layers_batch1" not in r
    code, out, err = run_captured(capsys, *args)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("latency"))
    assert "batch 1:" in line and "ms per image" in line and "20 calls" in line


def test_layer_profile_batch1_covers_every_inference_step(tmp_path, capsys):
    """--layers also profiles the inference forward at batch 1: one row per step of the
    inference plan (batch norm folded into its conv), each timed, and the whole forward,
    whose difference from the layers' sum is the time between the kernels."""
    import cnnc

    path = tmp_path / "res.cnn"
    path.write_text(f"input 3x16x16\nclasses 10\n{RESIDUAL}\n")
    code = main(["bench", str(path), "--batch", "4", "--steps", "2", "--repeats", "1",
                 "--no-compile-times", "--layers", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    prof = json.loads(out)["layers_batch1"]
    net = cnnc.compile_file(path).network(seed=0)
    steps = [s.node for s in net.inference_executor(1).plan.steps]
    assert [r["layer"] for r in prof["rows"]] == steps
    assert not any(r["layer"].startswith("bn_") for r in prof["rows"])  # folded into the convs
    assert "conv+bn_1+relu" in {r["type"] for r in prof["rows"]}
    assert all(r["forward_ms"] > 0 for r in prof["rows"])
    assert prof["calls"] == 20 and prof["forward_ms"] > 0
    assert abs(prof["layers_sum_ms"] - sum(r["forward_ms"] for r in prof["rows"])) < 1e-3
    assert abs(prof["between_ms"] - (prof["forward_ms"] - prof["layers_sum_ms"])) < 1e-3
    code = main(["bench", str(path), "--batch", "4", "--steps", "2", "--repeats", "1",
                 "--no-compile-times", "--layers"])
    text = capsys.readouterr().out
    assert code == 0 and "inference forward at batch 1" in text and "between the kernels" in text
