"""Nothing lost, ever (issue 25): kills at exact moments between the writes of an epoch,
the run folder's atomic commit, a full disk, weights that are not numbers, models too big
for the machine's memory, and kernels that compute the same whether compiled or cached.

The kills use the crash points of ``cnnc/training/runs/commit.py`` (``CNNC_CRASH_AT``);
``examples/kill_soak.py`` kills at random moments (its short form is in test_soak.py).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnc.errors import CheckpointError
from cnnc.training import runs
from importlib import import_module
from conftest import assert_clean_failure, assert_same_params, run_subprocess, tmp_files, write_model

C = import_module("cnnc.training.runs.commit")  # the module (runs.commit is the function)
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
ARGS = ["--epochs", 3, "--augment", "crop1", "--quiet"]


def train_proc(args, cwd, crash_at=None, preexec=None):
    env = dict(os.environ, CNNC_OFFLINE="1", CNNC_COMPILE_NOTICE="0")
    env.pop(C.CRASH_ENV, None)
    if crash_at:
        env[C.CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "cnnc", "train", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, preexec_fn=preexec)


def strip(h):
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s", "elapsed", "compile_seconds")} for row in h]


# ---------------------------------------------------------------------------- the commit itself


@pytest.mark.parametrize("point", ["written:a.bin", "written:b.bin", "before-manifest",
                                   "after-manifest", "published:a.bin"])
def test_commit_is_all_or_nothing(tmp_path, monkeypatch, point):
    """A 'kill' (an exception standing in for SIGKILL) at each moment of a commit leaves the
    previous commit or the new one, whole; recover() then publishes it."""
    C.commit(tmp_path, {"a.bin": b"a1", "b.bin": b"b1", "c.bin": "a.bin"})

    class Killed(BaseException):
        pass

    def crash(name):
        if name == point:
            raise Killed

    monkeypatch.setattr(C, "crash_point", crash)
    with pytest.raises(Killed):
        C.commit(tmp_path, {"a.bin": b"a2", "b.bin": b"b2", "c.bin": "a.bin"})
    monkeypatch.undo()
    new = point in ("after-manifest", "published:a.bin")
    want = {"a.bin": b"a2", "b.bin": b"b2", "c.bin": b"a2"} if new else \
        {"a.bin": b"a1", "b.bin": b"b1", "c.bin": b"a1"}
    assert {n: C.committed(tmp_path, n).read_bytes() for n in want} == want
    C.recover(tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in want} == want
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != C.PUBLISHED)
    assert hidden == sorted(set(C.read_manifest(tmp_path)["files"].values()))  # nothing else left


def test_crash_point_spec(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setenv(C.CRASH_ENV, "written:checkpoint.npz:2")
    C._hits.clear()
    C.crash_point("written:checkpoint.npz")
    C.crash_point("before-manifest")
    assert killed == []
    C.crash_point("written:checkpoint.npz")
    assert killed == [signal.SIGKILL]


# ---------------------------------------------------------------------------- kills between writes


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    model = write_model(folder, RICH_DIGITS)
    r = train_proc([model, *ARGS, "--out", folder / "A", "--json"], folder)
    assert r.returncode == 0, r.stderr
    return model, folder / "A", json.loads(r.stdout)


# the race of issue 25: before the commit, the checkpoint and best.npz of one epoch were two
# writes with the history after them; each of these moments now leaves one consistent state
@pytest.mark.parametrize("point,epoch", [("written:checkpoint.npz:2", 1), ("before-manifest:2", 1),
                                         ("after-manifest:2", 2), ("published:best.npz:2", 2)])
def test_kill_between_writes_resumes_bit_identical(reference, tmp_path, point, epoch):
    model, ref, ref_json = reference
    out = tmp_path / "B"
    r = train_proc([model, *ARGS, "--out", out], tmp_path, crash_at=point)
    assert r.returncode == -signal.SIGKILL, r.stderr
    # whatever the moment, the committed files agree with each other
    arrays, meta = runs.load_training_checkpoint(runs.find_checkpoint(out))
    assert meta["position"] == {**meta["position"], "epoch": epoch, "iteration": 0}
    hist = json.loads(C.committed(out, "history.json").read_text())
    assert strip(hist) == strip(meta["history"]) and len(hist) == epoch
    _, best_meta = runs.load_training_checkpoint(runs.find_weights(out))
    assert best_meta["position"]["epoch"] <= epoch
    r = train_proc([model, "--resume", out, "--json", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_params(ref / "checkpoint.npz", out / "checkpoint.npz")
    assert_same_params(ref / "best.npz", out / "best.npz")
    assert strip(json.loads((ref / "history.json").read_text())) == \
        strip(json.loads((out / "history.json").read_text()))
    done = json.loads(r.stdout)
    for k in ("accuracy", "loss", "val_accuracy", "best_val_accuracy", "train_loss", "epochs"):
        assert done[k] == ref_json[k], k
    assert tmp_files(out) == []


# ---------------------------------------------------------------------------- a full disk


def test_disk_full_keeps_the_previous_checkpoint(reference, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the next checkpoint cannot be written; the run
    stops with one message and the previous commit is untouched."""
    model, ref, _ = reference
    out = tmp_path / "B"
    r = train_proc([model, *ARGS, "--out", out, "--epochs", 1], tmp_path)
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    size = (out / "checkpoint.npz").stat().st_size

    def limit():  # files may grow to half a checkpoint
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    r = train_proc([model, "--resume", out, "--epochs", 2, "--quiet"], tmp_path, preexec=limit)
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
    assert "could not save the checkpoint of epoch 2" in r.stderr and "File too large" in r.stderr
    assert "previous checkpoint" in r.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    r = train_proc([model, "--resume", out, "--epochs", 2, "--quiet"], tmp_path)  # space again
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- weights that are not numbers


def test_nan_weights_are_refused(reference, tmp_path):
    model, ref, _ = reference
    arrays, meta = runs.load_training_checkpoint(ref / "best.npz")
    arrays["param.conv_1.w"] = arrays["param.conv_1.w"].copy()
    arrays["param.conv_1.w"][0, 0, 0, 0] = np.nan
    bad = tmp_path / "nan.npz"
    runs.save_checkpoint(bad, arrays, meta)
    assert_clean_failure(run_subprocess("eval", model, "--weights", bad), "conv_1.w", "NaN")
    assert_clean_failure(run_subprocess("train", model, "--resume", bad), "conv_1.w", "not numbers")
    arrays["param.conv_1.w"][0, 0, 0, 0] = 0.0
    arrays["param.fc_2.b"] = np.full_like(arrays["param.fc_2.b"], np.inf)
    runs.save_checkpoint(bad, arrays, meta)
    with pytest.raises(CheckpointError, match="fc_2.b.*10 infinite"):
        runs.load_training_checkpoint(bad)


def test_imported_nan_weights_are_refused(tmp_path):
    from cnnc.tools.weights_import import read_tensors

    np.savez(tmp_path / "w.npz", **{"conv_1.weight": np.array([1.0, np.inf], np.float32)})
    with pytest.raises(CheckpointError, match="conv_1.weight.*not numbers"):
        read_tensors(tmp_path / "w.npz")


# ---------------------------------------------------------------------------- memory


def test_models_too_big_for_memory_are_refused(tmp_path, monkeypatch):
    from conftest import MODELS_DIR

    from cnnc.cli import common

    monkeypatch.setenv(common.MEMORY_ENV, str(24 << 30))
    r = run_subprocess("train", MODELS_DIR / "vgg16.cnn", "--batch", 256)
    assert_clean_failure(r, "at batch 256 needs about 32.0 GiB for training", "24.0 GiB available",
                         "--batch", "--force")
    fit = int(r.err.split("use --batch ")[1].split(",")[0])
    import cnnc

    m = cnnc.compile_file(MODELS_DIR / "vgg16.cnn")
    assert m.analysis.memory(fit).training <= 24 << 30 < m.analysis.memory(fit + 1).training
    monkeypatch.setenv(common.MEMORY_ENV, "100000")
    r = run_subprocess("bench", MODELS_DIR / "lenet5.cnn", "--batch", 64, "--no-compile-times")
    assert_clean_failure(r, "lenet5.cnn at batch 64", "for training", "97.7 KiB available")
    r = run_subprocess("bench", MODELS_DIR / "lenet5.cnn", "--batch", 2, "--steps", 1, "--repeats", 1,
                       "--no-compile-times", "--force", "--json")
    assert r.code == 0, r


def test_memory_error_is_one_message(monkeypatch, capsys, tmp_path):
    from cnnc.cli import main as M
    from cnnc.cli import bench as B

    def boom(args):
        raise MemoryError("Unable to allocate 32.0 GiB")

    monkeypatch.setitem(B.COMMANDS, "bench", boom)
    from conftest import MODELS_DIR

    code = M.main(["bench", str(MODELS_DIR / "lenet5.cnn")])
    err = capsys.readouterr().err
    assert code == 1 and "out of memory" in err and "Traceback" not in err and "--batch" in err


# ---------------------------------------------------------------------------- compiled = cached


@pytest.mark.slow  # two cold compiles of a few kernels (about a minute on 2 cores)
def test_kernels_compiled_and_cached_compute_the_same(tmp_path):
    """Kernels compiled in this process and the same kernels loaded from Numba's cache must
    give the same bits: a run killed while it compiled resumes with cached kernels. With
    fast-math "reassoc" the compact im2col path's bias gradients differed (355 of 948k
    gradient elements over 4 models, by up to 4.5e-8)."""
    script = """
import sys, numpy as np, cnnc
m = cnnc.compile("conv3(16) - relu - pool - conv3(16) - relu - fc(32) - relu - fc",
                 input="3x16x16", classes=10)
net = m.network(seed=0)
rng = np.random.default_rng(1)
x = rng.standard_normal((32, 3, 16, 16), dtype=np.float32)
loss, g = net.loss_and_grads(x, rng.integers(0, 10, 32))
np.savez(sys.argv[1], **{f"{l}.{k}": v for l, d in g.items() for k, v in d.items()})
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), CNNC_CONV_PATH="compact",
               CNNC_COMPILE_NOTICE="0")
    for name in ("cold", "warm"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{name}.npz")], env=env,
                       check=True, timeout=900)
    cold, warm = np.load(tmp_path / "cold.npz"), np.load(tmp_path / "warm.npz")
    differ = {k: int((cold[k] != warm[k]).sum()) for k in cold.files if (cold[k] != warm[k]).any()}
    assert differ == {}
