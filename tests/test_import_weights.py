"""`cnnc import-weights`: PyTorch state dicts (npz, safetensors) -> a cnnc checkpoint, checked
against PyTorch's own forward."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cnnc
from cnnc.training.runs import load_checkpoint

from conftest import one_error_message
from conftest import run_captured as run_main

torch = pytest.importorskip("torch")
nn = torch.nn
ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "models" / "lenet5.cnn"

SMALL = "conv3(4, bias=false) - bn - relu - maxpool2 - conv3(6, groups=2) - relu - gap - fc"


def torch_lenet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)).eval()


def torch_small():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(6, 3))
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.2, 0.2)
    return m.eval()


def state_arrays(module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def forward_of_checkpoint(model, path, x):
    arrays, _ = load_checkpoint(path)
    net = model.network()
    net.load_state({k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")})
    return net.forward(x)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_state_dict_by_order_matches_torch(fmt, tmp_path, capsys):
    tm = torch_lenet()
    src = tmp_path / f"lenet.{fmt}"
    if fmt == "npz":
        np.savez(src, **state_arrays(tm))
    else:
        from safetensors.numpy import save_file
        save_file(state_arrays(tm), str(src))
    run = tmp_path / "run"
    rc, out, err = run_main(capsys, "import-weights", str(LENET), "--from", str(src), "-o", str(run),
                            "--no-normalize")
    assert rc == 0, err
    assert "mapping by order" in out and "0.weight" in out and "conv_1.w" in out
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32), dtype=np.float32)
    ours = forward_of_checkpoint(cnnc.compile_file(LENET), run / "best.npz", x)
    theirs = tm(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_by_name_with_bn_buffers_and_eval_modes(tmp_path, capsys):
    tm = torch_small()
    names = ["conv_1", "bn_1", None, None, "conv_2", None, None, None, "fc_1"]
    sd = {}
    for k, v in state_arrays(tm).items():
        idx, rest = k.split(".", 1)
        sd[f"{names[int(idx)]}.{rest}"] = v
    src = tmp_path / "small.npz"
    np.savez(src, **dict(reversed(list(sd.items()))))  # reversed: only names can pair these
    out = tmp_path / "small_ckpt.npz"
    rc, stdout, err = run_main(capsys, "import-weights", "-e", SMALL, "--input", "2x6x6", "--classes", "3",
                               "--from", str(src), "-o", str(out), "--json", "--mean", "0.5", "--std", "0.25")
    assert rc == 0, err
    table = json.loads(stdout)
    assert table["mapping"] == "name" and table["skipped"] == ["bn_1.num_batches_tracked"]
    assert {r["target"]: r["source"] for r in table["tensors"]}["bn_1.gamma"] == "bn_1.weight"
    model = cnnc.compile(SMALL, input="2x6x6", classes=3)
    x = np.random.default_rng(3).standard_normal((5, 2, 6, 6), dtype=np.float32)
    np.testing.assert_allclose(forward_of_checkpoint(model, out, x), tm(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    arrays, meta = load_checkpoint(out)
    assert meta["kind"] == "cnnc-training" and arrays["data.std"].tolist() == [0.25, 0.25]


def test_checkpoint_works_with_eval_and_predict(tmp_path, capsys):
    digits = ROOT / "models" / "digits.cnn"
    model = cnnc.compile_file(digits)
    net = model.network(seed=4)
    src = tmp_path / "d.npz"
    np.savez(src, **net.state())  # cnnc's own names
    run = tmp_path / "imported"
    rc, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(src), "-o", str(run),
                          "--no-normalize")
    assert rc == 0, err
    rc, out, err = run_main(capsys, "eval", str(digits), "--weights", str(run), "--json")
    assert rc == 0, err
    assert 0.0 <= json.loads(out)["accuracy"] <= 1.0
    from PIL import Image
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    rc, out, err = run_main(capsys, "predict", str(digits), "--weights", str(run), str(img))
    assert rc == 0, err


def test_bad_inputs_write_nothing(tmp_path, capsys):
    tm = torch_lenet()
    sd = state_arrays(tm)
    out = tmp_path / "out"
    wrong = dict(sd)
    wrong["3.weight"] = np.zeros((16, 6, 3, 3), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    fewer = dict(list(sd.items())[:-1])
    np.savez(tmp_path / "fewer.npz", **fewer)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 20)
    from safetensors.numpy import save_file
    save_file(sd, str(tmp_path / "ok.safetensors"))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    cases = {"wrong.npz": "3.weight", "fewer.npz": "no source", "bad.safetensors": "safetensors",
             "truncated.safetensors": "safetensors", "missing.npz": "no such", "x.pt": "format"}
    (tmp_path / "x.pt").write_bytes(b"PK")
    for name, words in cases.items():
        rc, _, err = run_main(capsys, "import-weights", str(LENET), "--from", str(tmp_path / name), "-o", str(out),
                              "--no-normalize")
        assert rc == 1, name
        one_error_message(err)
        assert words in err, (name, err)
        assert not out.exists()


def test_torch_to_cnnc_to_onnx_by_order_from_safetensors(tmp_path, capsys):
    """torch -> safetensors -> import (by order, bn buffers included) -> export -> onnxruntime
    equals torch's own forward."""
    pytest.importorskip("onnxruntime")
    from safetensors.numpy import save_file

    from onnx_helpers import ort_outputs

    tm = torch_small()
    save_file(state_arrays(tm), str(tmp_path / "s.safetensors"))
    model_args = ["-e", SMALL, "--input", "2x6x6", "--classes", "3"]
    rc, out, err = run_main(capsys, "import-weights", *model_args, "--from", str(tmp_path / "s.safetensors"),
                            "--dry-run")
    assert rc == 0 and "mapping by order" in out and "1.running_var" in out, err
    assert not list(tmp_path.glob("*.npz"))
    rc, _, err = run_main(capsys, "import-weights", *model_args, "--from", str(tmp_path / "s.safetensors"),
                          "-o", str(tmp_path / "run"), "--no-normalize")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "export", *model_args, "--weights", str(tmp_path / "run"),
                          "-o", str(tmp_path / "s.onnx"))
    assert rc == 0, err
    x = np.random.default_rng(7).standard_normal((4, 2, 6, 6), dtype=np.float32)
    theirs = tm(torch.from_numpy(x)).detach().numpy()
    for o in ort_outputs(tmp_path / "s.onnx", x):
        np.testing.assert_allclose(o, theirs, rtol=1e-4, atol=1e-5)


def test_normalization_is_never_silent(tmp_path, capsys):
    """import-weights needs --mean/--std (on the pixels / 255 scale) or an explicit
    --no-normalize; either flag missing, or both forms at once, is one message and nothing
    is written."""
    digits = ROOT / "models" / "digits.cnn"
    src = tmp_path / "d.npz"
    np.savez(src, **cnnc.compile_file(digits).network(seed=1).state())
    out = tmp_path / "w.npz"
    for extra, words in (([], "--mean and --std missing"), (["--mean", "0.5"], "--std missing"),
                         (["--no-normalize", "--std", "0.2"], "contradict")):
        rc, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(src), "-o", str(out), *extra)
        assert rc == 1 and words in err, (extra, err)
        one_error_message(err)
        assert not out.exists()
    _, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(src), "-o", str(out))
    assert "pixels / 255" in err
    rc, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(src), "-o", str(out),
                          "--mean", "0.3", "--std", "0.2")
    assert rc == 0, err
    arrays, _ = load_checkpoint(out)
    assert arrays["data.mean"].tolist() == pytest.approx([0.3]) and arrays["data.std"].tolist() == pytest.approx([0.2])


def test_imported_weights_are_fine_tuned_with_their_normalization(tmp_path, capsys):
    """`cnnc train FILE --resume RUN` on a folder of imported weights starts from those weights
    (at a learning rate of 1e-12 they barely move, where a fresh start would be far away) and
    keeps the normalization they came with; resuming that run again continues it."""
    digits = ROOT / "models" / "digits.cnn"
    state = cnnc.compile_file(digits).network(seed=5).state()
    np.savez(tmp_path / "w.npz", **state)
    run = tmp_path / "imp"
    rc, _, err = run_main(capsys, "import-weights", str(digits), "--from", str(tmp_path / "w.npz"),
                          "-o", str(run), "--mean", "0.3", "--std", "0.3")
    assert rc == 0, err
    rc, _, err = run_main(capsys, "train", str(digits), "--resume", str(run), "--epochs", "1", "--lr", "1e-12",
                          "--quiet")
    assert rc == 0, err
    arrays, meta = load_checkpoint(run / "checkpoint.npz")
    assert meta["position"]["epoch"] == 1
    assert arrays["data.mean"].tolist() == pytest.approx([0.3]) and arrays["data.std"].tolist() == pytest.approx([0.3])
    weights = {k: v for k, v in state.items() if ".running_" not in k}  # bn statistics do move
    assert len(weights) >= 4
    for name, value in weights.items():
        np.testing.assert_allclose(arrays[f"param.{name}"], value, rtol=0, atol=1e-6, err_msg=name)
    rc, _, err = run_main(capsys, "train", str(digits), "--resume", str(run), "--epochs", "2", "--quiet")
    assert rc == 0, err
    arrays, meta = load_checkpoint(run / "checkpoint.npz")
    assert meta["position"]["epoch"] == 2 and arrays["data.mean"].tolist() == pytest.approx([0.3])
