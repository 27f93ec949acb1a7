"""`cnnc train`, `cnnc eval` and `cnnc predict` on real data, and every way they can fail.

Most commands run in-process through ``cnnc.cli.main.main``; Ctrl-C, SIGKILL and the
"no traceback" checks run the real command in a subprocess. MNIST comes from
../shared/data beside the repository (tests needing it are skipped when it is absent).
"""
from __future__ import annotations

import contextlib
import errno
import io
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnc import atomic
from cnnc.training import data as D
from cnnc.training import runs
from cnnc.training import train as T
from cnnc.cli.main import main
from cnnc.runtime.optim import Optimizer
from conftest import (MNIST, MODELS_DIR, SHARED_DATA, assert_clean_failure, assert_same_params,
                      needs_mnist, run_subprocess, tmp_files, write_model)

TINY_DIGITS = """\
input 1x8x8
classes 10

conv3(8) - relu - pool - fc

data digits
epochs 3
batch 32
optimizer adam
lr 0.01
"""
# batch norm and dropout: the random streams a resume must restore
RICH_DIGITS = """\
input 1x8x8
classes 10

conv3(8) - bn - relu - pool - dropout(0.25) - fc(32) - relu - fc

data digits
batch 32
optimizer adam
lr 0.003
schedule cosine
"""
TINY_MNIST = """\
input 1x28x28
classes 10

conv3(8) - relu - pool - fc
"""
QUIET = ["--quiet"]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished 3-epoch run of the tiny digits model (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("digits_run")
    model = write_model(folder, TINY_DIGITS)
    out = folder / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", str(model), "--out", str(out), "--json", "--quiet"])
    assert code == 0
    (folder / "train.json").write_text(buf.getvalue())
    return model, out


def copy_run(digits_run, dest):
    model, out = digits_run
    shutil.copytree(out, dest)
    return model, Path(dest)


# ---------------------------------------------------------------------------- learning


def test_builtin_digits_model_trains_offline(cli, tmp_path):
    r = cli("train", MODELS_DIR / "digits.cnn", "--epochs", 2, "--out", tmp_path / "d", "--json", *QUIET)
    assert r.code == 0, r
    m = r.json()
    assert m["accuracy"] > 0.8 and m["test_images"] == 360 and m["epochs"] == 2
    assert 0 < m["loss"] < 1 and m["interrupted"] is False
    assert m["out_dir"] == str(tmp_path / "d")
    assert (tmp_path / "d" / "checkpoint.npz").exists()


def test_text_output_and_progress_lines(cli, tmp_path):
    model = write_model(tmp_path, TINY_DIGITS)
    r = cli("train", model, "--epochs", 2, "--out", tmp_path / "run")
    assert r.code == 0, r
    assert "test accuracy" in r.out and "(360 images)" in r.out and "trained 2 epochs" in r.out
    assert "epoch 1/2" in r.err and "epoch 2/2" in r.err and "val_acc" in r.err


def test_default_run_folder_is_numbered(cli, tmp_path):
    model = write_model(tmp_path, TINY_DIGITS)
    for expected in ("tiny", "tiny-2"):
        r = cli("train", model, "--epochs", 1, "--json", *QUIET)
        assert r.code == 0, r
        assert Path(r.json()["out_dir"]) == Path("runs") / expected
        assert (tmp_path / "runs" / expected / "checkpoint.npz").exists()


@needs_mnist
def test_mnist_subset_learns_and_eval_matches_train(cli, tmp_path):
    model = write_model(tmp_path, TINY_MNIST)
    out = tmp_path / "run"
    r = cli("train", model, "--data", MNIST, "--limit", 3000, "--epochs", 1, "--batch", 16,
            "--optimizer", "adam", "--lr", 0.002, "--out", out, "--json", *QUIET)
    assert r.code == 0, r
    m = r.json()
    assert m["accuracy"] > 0.8 and m["test_images"] == 10000
    e = cli("eval", model, "--weights", out / "checkpoint.npz", "--json")
    assert e.code == 0, e
    ev = e.json()
    assert ev["accuracy"] == m["accuracy"]
    assert ev["loss"] == pytest.approx(m["loss"], rel=1e-6)
    assert ev["images"] == 10000 and ev["data"] == "mnist" and ev["split"] == "test"
    conf = np.array(ev["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 10000
    assert np.trace(conf) == round(ev["accuracy"] * 10000)
    assert conf.sum(axis=1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # text output: accuracy line and the confusion matrix
    t = cli("eval", model, "--weights", out)
    assert t.code == 0, t
    assert f"accuracy {m['accuracy']:.4f}" in t.out and "confusion matrix" in t.out
    table = t.out.split("confusion matrix", 1)[1].strip().splitlines()[1:]  # after the title
    assert len(table) == 11  # column header + one row per class
    assert [ln.split()[0] for ln in table[1:]] == [str(i) for i in range(10)]
    assert sum(int(v) for ln in table[1:] for v in ln.split()[1:]) == 10000


@needs_mnist
def test_lenet5_needs_fit_then_learns_with_it(cli, tmp_path):
    # LeNet-5 without its `fit true` line: MNIST's 28x28 does not match 32x32
    lenet = tmp_path / "lenet5_nofit.cnn"
    lenet.write_text((MODELS_DIR / "lenet5.cnn").read_text().replace("fit true", ""))
    r = cli("train", lenet, "--data", "mnist", "--data-dir", SHARED_DATA, "--limit", 300,
            "--epochs", 1, "--out", tmp_path / "nofit", *QUIET)
    assert_clean_failure(r, "the model expects 1x32x32 but mnist images are 1x28x28", "--fit")
    assert not (tmp_path / "nofit" / "checkpoint.npz").exists()
    out = tmp_path / "lenet"
    r = cli("train", lenet, "--data", "mnist", "--data-dir", SHARED_DATA, "--fit", "--limit", 2000,
            "--epochs", 2, "--batch", 32, "--optimizer", "adam", "--lr", 0.002, "--out", out,
            "--json", *QUIET)
    assert r.code == 0, r
    m = r.json()
    assert m["accuracy"] > 0.8 and m["test_images"] == 10000 and m["epochs"] == 2
    # eval remembers --fit and the data set from the checkpoint
    e = cli("eval", lenet, "--weights", out / "checkpoint.npz", "--json")
    assert e.code == 0, e
    assert e.json()["accuracy"] == m["accuracy"]
    assert np.array(e.json()["confusion"]).sum() == 10000


def test_eval_on_run_folder_uses_best_checkpoint(cli, digits_run):
    model, out = digits_run
    _, meta = runs.load_checkpoint(out / "checkpoint.npz")
    last = cli("eval", model, "--weights", out / "checkpoint.npz", "--json").json()
    best = cli("eval", model, "--weights", out / "best.npz", "--json").json()
    folder = cli("eval", model, "--weights", out, "--json").json()
    assert folder["weights"] == str(out / "best.npz")
    assert {k: v for k, v in folder.items() if k != "weights"} == \
        {k: v for k, v in best.items() if k != "weights"}
    # the trainer's own test metrics are those of the last weights
    assert last["images"] == 360 and np.array(last["confusion"]).sum() == 360
    _, best_meta = runs.load_checkpoint(out / "best.npz")
    assert best_meta["best_val_accuracy"] == max(h["val_accuracy"] for h in meta["history"])
    # train split too
    tr = cli("eval", model, "--weights", out, "--split", "train", "--json").json()
    assert tr["images"] == 1437 and tr["split"] == "train"


def test_eval_matches_train_json_for_last_weights(cli, digits_run):
    model, out = digits_run
    m = json.loads((out.parent / "train.json").read_text())
    assert m["epochs"] == 3 and m["accuracy"] > 0.8
    e = cli("eval", model, "--weights", out / "checkpoint.npz", "--json").json()
    assert e["accuracy"] == m["accuracy"] and e["loss"] == pytest.approx(m["loss"], rel=1e-6)
    assert e["images"] == m["test_images"] == 360


def test_history_files(digits_run):
    _, out = digits_run
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 1 + 3
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 3 and all(0 <= h["val_accuracy"] <= 1 for h in hist)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tmp_files(out) == []


# ---------------------------------------------------------------------------- predict


def save_png(path, pixels):
    from PIL import Image

    Image.fromarray(np.asarray(pixels, np.uint8), mode="L").save(path)
    return path


def test_predict_digit_pngs(cli, digits_run, tmp_path):
    model, out = digits_run
    test = D.load_digits("test")
    files = [save_png(tmp_path / f"digit{i}.png", test.x[i, 0]) for i in range(20)]
    r = cli("predict", model, "--weights", out, *files, "--top", 3, "--json")
    assert r.code == 0, r
    res = r.json()
    assert [x["image"] for x in res] == [str(f) for f in files]
    hits = 0
    for item, label in zip(res, test.y[:20]):
        top = item["top"]
        assert len(top) == 3
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] == str(t["index"]) for t in top)
        assert len({t["index"] for t in top}) == 3
        hits += top[0]["index"] == label
    assert hits >= 14  # trained to > 80 % test accuracy
    # --top 10 covers every class: the probabilities sum to 1
    r = cli("predict", model, "--weights", out, files[0], "--top", 10, "--json")
    assert sum(t["probability"] for t in r.json()[0]["top"]) == pytest.approx(1, abs=1e-5)
    # text output: one line per image
    r = cli("predict", model, "--weights", out, files[0], files[1], "--top", 2)
    assert r.code == 0, r
    lines = r.out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(files[0]) + ": ")
    assert len(lines[0].split(": ", 1)[1].split(", ")) == 2


def test_predict_wrong_size_and_resize(cli, digits_run, tmp_path):
    model, out = digits_run
    big = save_png(tmp_path / "big.png", np.kron(D.load_digits("test").x[0, 0], np.ones((2, 2), np.uint8)))
    r = cli("predict", model, "--weights", out, big)
    assert_clean_failure(r, "big.png", "16x16", "8x8", "--resize")
    r = cli("predict", model, "--weights", out, big, "--resize", "--json")
    assert r.code == 0, r
    assert len(r.json()[0]["top"]) == 3
    r = cli("predict", model, "--weights", out, tmp_path / "missing.png")
    assert_clean_failure(r, "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert_clean_failure(cli("predict", model, "--weights", out, tmp_path / "junk.png"), "junk.png")
    assert_clean_failure(cli("predict", model, "--weights", out, big, "--top", 0), "--top")


def test_predict_fits_a_28x28_digit_to_lenet5_as_training_did(cli, tmp_path):
    """LeNet-5 is trained with `fit true` (MNIST's 28x28 zero-padded to 32x32): a plain 28x28
    digit goes through predict the same way, with a note; --no-fit refuses it; a 3-channel
    image is converted to grey. The probabilities equal the network's on the image padded
    here with np.pad."""
    import cnnc

    lenet = MODELS_DIR / "lenet5.cnn"
    model = cnnc.compile_file(lenet)
    src = tmp_path / "w.npz"
    np.savez(src, **model.network(seed=2).state())
    run = tmp_path / "run"
    assert cli("import-weights", lenet, "--from", src, "-o", run, "--mean", "0.13", "--std", "0.31").code == 0
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)
    png = save_png(tmp_path / "seven.png", pixels)
    r = cli("predict", lenet, "--weights", run, png, "--top", 10, "--json")
    assert r.code == 0, r
    assert "28x28 zero-padded to 32x32" in r.err
    net = model.network(seed=2)
    padded = np.pad(pixels, 2)[None, None].astype(np.float64)
    want = net.predict_proba(((padded / 255 - 0.13) / 0.31).astype(np.float32))[0]
    got = {t["index"]: t["probability"] for t in r.json()[0]["top"]}
    np.testing.assert_allclose([got[i] for i in range(10)], want, rtol=1e-5, atol=1e-6)
    assert_clean_failure(cli("predict", lenet, "--weights", run, png, "--no-fit"), "28x28", "32x32", "--fit")
    from PIL import Image

    Image.fromarray(np.stack([pixels] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")
    r = cli("predict", lenet, "--weights", run, tmp_path / "rgb.png", "--top", 10, "--json")
    assert r.code == 0, r
    got = {t["index"]: t["probability"] for t in r.json()[0]["top"]}
    np.testing.assert_allclose([got[i] for i in range(10)], want, rtol=1e-5, atol=1e-6)  # grey == R == G == B


# ---------------------------------------------------------------------------- Ctrl-C, kill, resume


def wait_for(path: Path, proc: subprocess.Popen, timeout=240.0):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (exit {proc.returncode}) before {path} appeared: "
                                 + proc.stderr.read())
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.005)


def start_training(args, cwd):
    env = dict(os.environ, CNNC_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "cnnc", "train", *map(str, args)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # trains in a subprocess
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_resume_after_interruption_equals_uninterrupted_run(cli, tmp_path, how):
    model = write_model(tmp_path, RICH_DIGITS)
    args = [model, "--epochs", 3, "--augment", "crop1", "--quiet"]
    full = cli("train", *args, "--out", tmp_path / "A", "--json")
    assert full.code == 0, full
    b = tmp_path / "B"
    proc = start_training([*args, "--out", b], tmp_path)
    try:
        wait_for(b / "history.json", proc)  # written last at the end of epoch 1
        assert (b / "checkpoint.npz").exists()
        # aim for the middle of epoch 2 (any moment must do; the Python-level test in
        # test_train.py stops at exact steps)
        time.sleep(0.4 * json.loads((tmp_path / "A" / "history.json").read_text())[1]["seconds"])
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    arrays, meta = runs.load_checkpoint(b / "checkpoint.npz")  # intact in either case
    pos = meta["position"]
    assert meta["finished"] is False and 1 <= pos["epoch"] < 3
    if how == "sigint":
        assert proc.returncode == 130, (out, err)
        assert "Traceback" not in err
        assert f"interrupted at epoch {pos['epoch'] + 1}, step {pos['iteration']}" in err
        assert "saved" in err
        assert tmp_files(b) == []
    else:
        assert proc.returncode == -signal.SIGKILL
    r = cli("train", model, "--resume", b, "--json", *QUIET)
    assert r.code == 0, r
    assert_same_params(tmp_path / "A" / "checkpoint.npz", b / "checkpoint.npz")
    assert_same_params(tmp_path / "A" / "best.npz", b / "best.npz")
    done, ref = r.json(), full.json()
    for k in ("accuracy", "loss", "val_accuracy", "best_val_accuracy", "train_loss", "train_accuracy",
              "epochs", "test_images"):
        assert done[k] == ref[k], k
    ha = json.loads((tmp_path / "A" / "history.json").read_text())
    hb = json.loads((b / "history.json").read_text())
    strip = lambda h: [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s", "elapsed", "compile_seconds")} for row in h]  # noqa: E731
    assert strip(ha) == strip(hb)


def test_resume_extends_a_finished_run(cli, digits_run, tmp_path):
    model, out = copy_run(digits_run, tmp_path / "run")
    r = cli("train", model, "--resume", out, "--epochs", 4, "--json", *QUIET)
    assert r.code == 0, r
    assert r.json()["epochs"] == 4
    assert len(json.loads((out / "history.json").read_text())) == 4


# ---------------------------------------------------------------------------- faults: data


def write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


@pytest.fixture
def mini_mnist(tmp_path):
    """An MNIST-style folder: 1,000 real training images (raw IDX) and the real t10k files."""
    if not MNIST.exists():
        pytest.skip("MNIST not found in ../shared/data")
    folder = tmp_path / "mini"
    folder.mkdir()
    test = D.load_mnist_dir(MNIST, "test")
    write_idx(folder / "train-images-idx3-ubyte", test.x[:1000, 0])
    write_idx(folder / "train-labels-idx1-ubyte", test.y[:1000])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(MNIST / name, folder / name)
        os.chmod(folder / name, 0o644)
    return folder


@needs_mnist
def test_damaged_idx_files(cli, tmp_path, mini_mnist):
    model = write_model(tmp_path, TINY_MNIST)
    base = ["train", model, "--data", mini_mnist, "--epochs", 1, *QUIET]
    ok = cli(*base, "--out", tmp_path / "ok", "--limit", 200)
    assert ok.code == 0, ok
    timg = mini_mnist / "t10k-images-idx3-ubyte.gz"
    good = timg.read_bytes()
    # a gzip file cut in half
    timg.write_bytes(good[: len(good) // 2])
    assert_clean_failure(cli(*base, "--out", tmp_path / "r1"), "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "r1").exists()
    # a valid gzip stream whose IDX data is truncated
    timg.write_bytes(gzip.compress(gzip.decompress(good)[:-784 * 10]))
    assert_clean_failure(cli(*base, "--out", tmp_path / "r2"), "t10k-images-idx3-ubyte.gz", "truncated")
    timg.write_bytes(good)
    # raw IDX labels with a wrong magic number
    lab = mini_mnist / "train-labels-idx1-ubyte"
    raw = bytearray(lab.read_bytes())
    raw[2] = 0x42
    lab.write_bytes(bytes(raw))
    assert_clean_failure(cli(*base, "--out", tmp_path / "r3"), "train-labels-idx1-ubyte", "magic")
    # fewer labels than images
    write_idx(lab, D.load_mnist_dir(MNIST, "test").y[:999])
    assert_clean_failure(cli(*base, "--out", tmp_path / "r4"), "999 labels")
    write_idx(lab, D.load_mnist_dir(MNIST, "test").y[:1000])
    # eval on damaged data keeps the run intact
    timg.write_bytes(good[:1000])
    before = snapshot(tmp_path / "ok")
    assert_clean_failure(cli("eval", model, "--weights", tmp_path / "ok", "--data", mini_mnist),
                         "t10k-images-idx3-ubyte.gz")
    assert snapshot(tmp_path / "ok") == before


def test_unknown_data_set_and_missing_named_data(cli, tmp_path):
    model = write_model(tmp_path, TINY_MNIST)
    assert_clean_failure(cli("train", model, "--data", "nosuchdata", "--out", tmp_path / "r"),
                         "unknown data set")
    assert_clean_failure(cli("train", model, "--data", "mnist", "--data-dir", tmp_path / "empty",
                             "--out", tmp_path / "r"), "mnist was not found", "downloads are disabled")


# ---------------------------------------------------------------------------- faults: checkpoints


def test_checkpoint_for_another_model(cli, digits_run, tmp_path):
    model, out = copy_run(digits_run, tmp_path / "run")
    before = snapshot(out)
    digits = MODELS_DIR / "digits.cnn"
    assert_clean_failure(cli("eval", digits, "--weights", out), "another model")
    assert_clean_failure(cli("predict", digits, "--weights", out,
                             save_png(tmp_path / "d.png", D.load_digits("test").x[0, 0])), "another model")
    assert_clean_failure(cli("train", digits, "--resume", out, *QUIET), "does not match this model")
    assert_clean_failure(cli("eval", MODELS_DIR / "lenet5.cnn", "--weights", out), "1x8x8", "1x32x32")
    assert snapshot(out) == before


def test_corrupt_and_missing_checkpoints(cli, digits_run, tmp_path):
    model, out = copy_run(digits_run, tmp_path / "run")
    png = save_png(tmp_path / "d.png", D.load_digits("test").x[0, 0])
    good = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(good[: len(good) // 2])
    (out / "best.npz").unlink()
    for r in (cli("eval", model, "--weights", out),
              cli("predict", model, "--weights", out / "checkpoint.npz", png),
              cli("train", model, "--resume", out, *QUIET)):
        assert_clean_failure(r, "checkpoint.npz", "damaged or truncated")
    (out / "checkpoint.npz").write_bytes(b"garbage" * 100)
    assert_clean_failure(cli("eval", model, "--weights", out), "not a cnnc checkpoint")
    assert_clean_failure(cli("eval", model, "--weights", tmp_path / "nothing.npz"), "nothing.npz")
    assert_clean_failure(cli("train", model, "--resume", tmp_path / "none", *QUIET), "no such checkpoint")
    # an .npz from elsewhere
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    assert_clean_failure(cli("eval", model, "--weights", tmp_path / "other.npz"), "not a cnnc checkpoint")


@pytest.mark.slow  # three subprocesses
def test_faults_in_a_subprocess_print_no_traceback(digits_run, tmp_path):
    model, out = copy_run(digits_run, tmp_path / "run")
    (out / "best.npz").write_bytes((out / "best.npz").read_bytes()[:5000])
    r = run_subprocess("eval", model, "--weights", out, cwd=tmp_path)
    assert_clean_failure(r, "best.npz", "damaged or truncated")
    (tmp_path / "file.txt").write_text("x")
    r = run_subprocess("train", model, "--out", tmp_path / "file.txt" / "run", "--epochs", 1, *QUIET,
                       cwd=tmp_path)
    assert_clean_failure(r, "cannot write to the output folder", "--out")
    assert (tmp_path / "file.txt").read_text() == "x"
    r = run_subprocess("train", model, "--epochs", 0, cwd=tmp_path)
    assert_clean_failure(r, "epochs must be at least 1")


# ---------------------------------------------------------------------------- faults: training


def test_huge_learning_rate_gives_nan_message(cli, tmp_path):
    model = write_model(tmp_path, TINY_DIGITS)
    out = tmp_path / "run"
    r = cli("train", model, "--optimizer", "sgd", "--lr", 1e6, "--out", out, *QUIET)
    assert_clean_failure(r, "the loss became", "at epoch 1, step ", "--lr")
    assert not (out / "checkpoint.npz").exists() and tmp_files(out) == []


def test_nan_after_first_epoch_keeps_its_checkpoint(cli, tmp_path, monkeypatch):
    model = write_model(tmp_path, TINY_DIGITS)
    out = tmp_path / "run"
    real = Optimizer.step
    steps = {}

    def poisoned(self, lr):
        real(self, lr)
        if self.steps == steps.get("at"):
            self.theta[...] = np.inf

    tr, te = D.load_digits("train"), D.load_digits("test")
    spe = len(T.prepare_data((1, 8, 8), 10, T.TrainConfig(), tr, te).y_train) // 32
    steps["at"] = spe + 5  # the weights blow up in epoch 2: loss non-finite at step 6
    monkeypatch.setattr(Optimizer, "step", poisoned)
    r = cli("train", model, "--out", out, *QUIET)
    assert_clean_failure(r, "the loss became nan at epoch 2, step 6", "last good checkpoint")
    arrays, meta = runs.load_checkpoint(out / "checkpoint.npz")
    assert meta["position"] == {**meta["position"], "epoch": 1, "iteration": 0}
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("param."))
    assert tmp_files(out) == []
    # that checkpoint is usable: evaluate it, and resume from it
    monkeypatch.undo()
    e = cli("eval", model, "--weights", out / "checkpoint.npz", "--json")
    assert e.code == 0 and e.json()["accuracy"] > 0.5
    r = cli("train", model, "--resume", out, "--json", *QUIET)
    assert r.code == 0 and r.json()["epochs"] == 3


def test_disk_full_during_epoch_save(cli, tmp_path, monkeypatch):
    model = write_model(tmp_path, TINY_DIGITS)
    out = tmp_path / "run"
    armed = {"on": False}
    real_end, real_fsync = T.Trainer._end_epoch, os.fsync

    def end_epoch(self, epoch, *a):
        armed["on"] = epoch >= 1
        return real_end(self, epoch, *a)

    def fsync(fd):
        if armed["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(T.Trainer, "_end_epoch", end_epoch)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    r = cli("train", model, "--out", out, *QUIET)
    monkeypatch.undo()
    assert_clean_failure(r, "No space left on device", "disk is full")
    # the file being written is named: best.npz (written first when the epoch improved on
    # the best) or checkpoint.npz
    assert "best.npz" in r.err or "checkpoint.npz" in r.err, r.err
    _, meta = runs.load_checkpoint(out / "checkpoint.npz")
    assert meta["position"]["epoch"] == 1
    runs.load_checkpoint(out / "best.npz")
    assert tmp_files(out) == []


def test_out_that_holds_a_run_is_refused(cli, digits_run, tmp_path):
    model, out = copy_run(digits_run, tmp_path / "run")
    before = snapshot(out)
    r = cli("train", model, "--out", out, *QUIET)
    assert_clean_failure(r, "already holds a training run", "--resume")
    assert snapshot(out) == before


def test_unwritable_out(cli, tmp_path):
    model = write_model(tmp_path, TINY_DIGITS)
    (tmp_path / "file.txt").write_text("keep")
    r = cli("train", model, "--out", tmp_path / "file.txt" / "run", "--epochs", 1, *QUIET)
    assert_clean_failure(r, "cannot write to the output folder")
    assert (tmp_path / "file.txt").read_text() == "keep"
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            r = cli("train", model, "--out", ro / "run", "--epochs", 1, *QUIET)
            assert_clean_failure(r, "cannot write to the output folder")
        finally:
            ro.chmod(0o755)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--epochs", "-3"], "epochs must be at least 1"),
    (["--batch", "0"], "batch must be at least 1"),
    (["--lr", "-1"], "lr must be a positive number"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--val-split", "1.5"], "val_split must lie in [0, 1)"),
    (["--val-split", "-0.1"], "val_split must lie in [0, 1)"),
    (["--limit", "0"], "limit must be at least 1"),
    (["--momentum", "-1"], "momentum"),
    (["--weight-decay", "-1"], "weight_decay"),
    (["--warmup", "-1"], "warmup"),
    (["--seed", "-1"], "seed"),
    (["--augment", "rotate"], "unknown augmentation"),
    (["--nesterov", "--optimizer", "adam"], "nesterov"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--epochs", "abc"], "invalid int value"),
])
def test_bad_flags(cli, tmp_path, flags, message):
    model = write_model(tmp_path, TINY_DIGITS)
    r = cli("train", model, "--out", tmp_path / "run", *flags, *QUIET)
    assert r.code == 1, r
    assert "Traceback" not in r.err and message in r.err, r
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_eval_and_predict_say_which_weights_they_read(cli, digits_run, tmp_path):
    """A run folder means best.npz: eval and predict name it with its epoch, which is the epoch of
    the best validation accuracy in the run's history (ties: the lower loss, then the earlier)."""
    model, out = digits_run
    history = json.loads((out / "history.json").read_text())
    rows = history["epochs"] if isinstance(history, dict) else history
    best = max(range(len(rows)), key=lambda i: (rows[i]["val_accuracy"], -rows[i]["val_loss"], -i)) + 1
    r = cli("eval", model, "--weights", out)
    assert r.code == 0, r
    assert f"weights: {out / 'best.npz'} (epoch {best} of {len(rows)}, the best validation accuracy" in r.out
    r = cli("eval", model, "--weights", out / "checkpoint.npz")
    assert f"(epoch {len(rows)} of {len(rows)}, the end of training)" in r.out
    png = save_png(tmp_path / "d.png", D.load_digits("test").x[0, 0])
    r = cli("predict", model, "--weights", out, png)
    assert r.code == 0 and f"weights: {out / 'best.npz'} (epoch {best} of" in r.err


def test_a_run_folder_is_used_again_from_another_directory(cli, tmp_path, monkeypatch):
    """A run trained with a relative data path, a relative --data-dir and --set N=2 records
    them (absolute paths, the design values), so `cnnc eval` from another working directory
    needs neither the paths nor --set again; --set N=1 is named in the mismatch message."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    train, test = D.load_digits("train"), D.load_digits("test")
    np.savez(work / "digits.npz", x=train.x, y=train.y, x_test=test.x, y_test=test.y)
    model = write_model(work, "input 1x8x8\nclasses 10\n[conv3(8) - relu]*N - pool - fc\n", "d.cnn")
    monkeypatch.chdir(work)
    r = cli("train", "d.cnn", "--data", "digits.npz", "--data-dir", "cache", "--set", "N=2",
            "--epochs", "1", "--out", "run", "--quiet")
    assert r.code == 0, r
    meta = runs.load_training_checkpoint(work / "run" / "checkpoint.npz")[1]
    assert meta["design"] == {"N": 2}
    assert meta["config"]["data"] == str(work / "digits.npz") and meta["config"]["data_dir"] == str(work / "cache")
    monkeypatch.chdir(elsewhere)
    r = cli("eval", model, "--weights", work / "run", "--json")
    assert r.code == 0, r
    assert r.json()["images"] == len(test.y)
    r = cli("eval", model, "--weights", work / "run", "--set", "N=1")
    assert_clean_failure(r, "trained with --set N=2", "N=1")
    assert list(elsewhere.iterdir()) == []  # nothing created here
