"""Helpers shared by the test files, by section.

The fast loop: ``python -m pytest -m "not slow" -q`` (about a minute on 2 cores once Numba's
kernel cache is warm; a run after a kernel edit compiles first) leaves out the tests marked
``@pytest.mark.slow``: cold Numba compiles, subprocess training runs, MPI jobs, whole-model
ONNX exports and gradchecks of the full-size (ImageNet) models, long Hypothesis runs.
``python -m pytest -m slow -q --co`` lists those; ``python -m pytest -q`` (what CI runs) runs
everything.

Helpers by section. Import plain helpers with
``from conftest import ...``; fixtures (``cli``) need no import.

Sections: paths (the repository, its models, the shared data sets); the command line
(in-process and as a subprocess, and what a clean failure looks like); checkpoints and
run folders; finite differences; and the size rules the tests derive their expectations
from (written from docs/language.md and PyTorch's documentation, independently of cnnc's code).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Training starts a compile helper process on a cold kernel cache (cnnc.training.precompile); the
# suite runs without one (tests/test_precompile.py turns it on where it is under test)
os.environ.setdefault("CNNC_COMPILE_HELPER", "0")

# ---------------------------------------------------------------------------- paths

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
MODEL_FILES = sorted(MODELS_DIR.glob("*.cnn"))
#: The verified MNIST / Fashion-MNIST copies beside the repository (see docs/tools.md, "Data").
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST = SHARED_DATA / "mnist"
FASHION = SHARED_DATA / "fashion-mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
                                 reason=f"MNIST not found in {SHARED_DATA}")
needs_shared = pytest.mark.skipif(
    not (MNIST.is_dir() and FASHION.is_dir()),
    reason=f"the verified MNIST/Fashion-MNIST copies are not at {SHARED_DATA}")


def full_size(path: Path) -> bool:
    """A full-size (ImageNet) model: its ``input`` line names an image of 100x100 or more."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        words = line.split("#")[0].split()
        if words[:1] == ["input"] and len(words) > 1:
            dims = [int(d) for d in words[1].split("x") if d.isdigit()]
            return len(dims) == 3 and dims[1] * dims[2] >= 100 * 100
    return False


#: reference models whose layer types and structure another model already covers, left out of
#: the whole-model gradcheck and ONNX runs (VGG-19 is VGG-16 with three more 3x3 convolutions)
COVERED_BY = {"vgg19": "vgg16"}


def model_params(paths) -> list:
    """``pytest.param`` per model file, id the file's stem, the full-size ones marked slow
    (those of :data:`COVERED_BY` left out)."""
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if full_size(p) else [])
            for p in paths if p.stem not in COVERED_BY]


def write_model(folder, text: str, name: str = "tiny.cnn") -> Path:
    path = Path(folder) / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- command line


class Result:
    """What a ``cnnc`` command did: exit status, stdout, stderr."""

    def __init__(self, code, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout: {self.out}\nstderr: {self.err}"


def run_main(*args) -> Result:
    """``cnnc ARGS`` in-process through ``cnnc.cli.main.main`` (the caller captures the output:
    use the ``cli`` fixture); argparse's SystemExit counts as an exit status."""
    from cnnc.cli.main import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # --help, argparse errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run ``cnnc ARGS`` in-process (cwd tmp_path, downloads off): a Result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNC_OFFLINE", "1")

    def run(*args) -> Result:
        capsys.readouterr()
        code = run_main(*args)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_subprocess(*args, cwd=ROOT, timeout: float = 300) -> Result:
    """``python -m cnnc ARGS`` in a fresh process (downloads off)."""
    env = dict(os.environ, CNNC_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "cnnc", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def run_captured(capsys, *args) -> tuple[int, str, str]:
    """``cnnc ARGS`` in-process: (exit status, stdout, stderr), read from ``capsys``."""
    code = run_main(*args)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_message(err: str) -> None:
    """stderr holds one clear message: no traceback, one 'error:' line."""
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err


def assert_clean_failure(r: Result, *patterns: str) -> None:
    """Exit 1, one error message on stderr (no traceback), naming each pattern."""
    assert r.code == 1, r
    one_error_message(r.err)
    for p in patterns:
        assert p in r.err, (p, r)


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_params(path) -> dict:
    """The network parameters and buffers saved in a checkpoint file."""
    from cnnc.training.runs import load_checkpoint, params_of

    arrays, _ = load_checkpoint(path)
    return params_of(arrays)


def assert_same_params(a, b) -> None:
    """Two checkpoints (paths) or parameter dicts hold bitwise-equal parameters."""
    a = a if isinstance(a, dict) else checkpoint_params(a)
    b = b if isinstance(b, dict) else checkpoint_params(b)
    assert sorted(a) == sorted(b) and a
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"


def tmp_files(folder) -> list[str]:
    """Temporary files an atomic write left behind (there must be none)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- finite differences


def numgrad(f, a: np.ndarray, rng: np.random.Generator | None = None, limit: int | None = None,
            eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the scalar ``f()`` w.r.t. ``a`` (perturbed in place and restored),
    at every entry or at ``limit`` entries drawn with ``rng``; returns (flat indices, estimates)."""
    flat = a.reshape(-1)
    if limit is None or flat.size <= limit:
        idx = np.arange(flat.size)
    else:
        idx = np.sort(rng.choice(flat.size, limit, replace=False))
    est = np.empty(idx.size)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        est[k] = (fp - fm) / (2 * eps)
    return idx, est


def numgrad_full(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The whole finite-difference gradient of ``f()`` w.r.t. ``a``, shaped like ``a``."""
    g = np.zeros(a.size)
    idx, est = numgrad(f, a, eps=eps)
    g[idx] = est
    return g.reshape(a.shape)


# ---------------------------------------------------------------------------- size rules


def conv_padding(cfg) -> tuple[int, int]:
    """docs/language.md: "same" at stride 1 by default, 0 at stride > 1; pad=N; pad=valid."""
    kh, kw = cfg.size
    if cfg.pad == "valid" or (cfg.pad == "default" and cfg.stride != 1):
        return 0, 0
    if isinstance(cfg.pad, int):
        return cfg.pad, cfg.pad
    return cfg.dilation * (kh - 1) // 2, cfg.dilation * (kw - 1) // 2


def conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Convolution output length: floor((n + 2p - d(k-1) - 1)/s) + 1."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooling output length: floor or ceil, and in ceil mode the last window must
    start inside the input or the left padding."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    o = -(-(n + 2 * p - k) // s) + 1
    if (o - 1) * s >= n + p:
        o -= 1
    return o
