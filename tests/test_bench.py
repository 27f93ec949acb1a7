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
                      "timing inference: 1 run of 1 batch ..."]
    assert "images/s" in out and "timing" not in out
