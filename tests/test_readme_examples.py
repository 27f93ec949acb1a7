"""The README and every `--help` example run as written.

* The README's `$ cnnc ...` blocks print exactly what the README shows.
* Its Python block runs (in a fresh process, in an empty folder).
* Its shell block runs, except `pip install` (this environment is installed) and the
  test-suite command (that is this suite); `cnnc train` gets `--epochs 1`.
* Every example in `cnnc COMMAND --help` runs, in one scratch folder, in an order that lets
  later ones use the runs earlier ones leave (train before eval, predict, viz, export; export before import, which reads the
  ONNX files export wrote), with
  `--epochs 1` for training and fewer steps for `bench`; the few input files they name
  (`digit.png`, `lenet.safetensors`, `sd.npz`) are made first. Named data sets are read
  from the shared data folder (`CNNC_DATA`).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA

README = ROOT / "README.md"


def blocks(kind: str) -> list[str]:
    """The README's fenced blocks of one info string ("" for a plain block)."""
    text = README.read_text(encoding="utf-8")
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
            if m.group(1) == kind]


def run(argv: list[str], cwd, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnc", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_shows_what_its_commands_print():
    shown = [b for b in blocks("") if b.startswith("$ cnnc ")]
    assert len(shown) >= 2
    for block in shown:
        command, *expected = block.rstrip("\n").split("\n")
        argv = shlex.split(command[2:].replace("\\\n", " "))[1:]
        r = run(argv, ROOT)
        printed = (r.stdout + r.stderr).rstrip("\n").split("\n")
        assert [line.rstrip() for line in printed] == [line.rstrip() for line in expected], command


def test_the_readme_python_block_runs(tmp_path):
    (code,) = blocks("python")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow  # trains in a subprocess
def test_the_readme_shell_block_runs(tmp_path):
    (block,) = blocks("sh")
    ran = []
    for line in block.splitlines():
        for part in line.split("#", 1)[0].split("&&"):
            argv = shlex.split(part)
            if not argv or argv[:2] == ["pip", "install"] or "pytest" in argv:
                continue  # installed already; the suite is what runs this test
            assert argv[0] == "cnnc", argv
            if argv[1] == "train":
                argv += ["--epochs", "1", "--out", str(tmp_path / "run")]
            r = run(argv[1:], ROOT)
            assert r.returncode == 0, (argv, r.stderr[-2000:])
            ran.append(argv[1])
    assert ran == ["train"]


# ---------------------------------------------------------------------------- --help examples


def help_examples() -> list[str]:
    """Every `cnnc ...` line of every command's --help examples."""
    from cnnc.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    found = []
    for name, p in sub.choices.items():
        text = p.epilog or ""
        found += [line.strip() for line in text.splitlines() if line.strip().startswith("cnnc ")]
    return found


def _prepare(folder: Path) -> None:
    """The files the examples name, made from shipped data."""
    import cnnc
    from PIL import Image
    from safetensors.numpy import save_file

    from cnnc.training import data as D

    (folder / "models").symlink_to(ROOT / "models")
    _, test = D.resolve_dataset("mnist", str(SHARED_DATA))
    Image.fromarray(test.x[0, 0], mode="L").save(folder / "digit.png")  # a 28x28 MNIST digit
    lenet = cnnc.compile_file(ROOT / "models" / "lenet5.cnn").network(seed=0)
    save_file({k: np.ascontiguousarray(v) for k, v in lenet.state().items()}, str(folder / "lenet.safetensors"))
    vgg = cnnc.compile_file(ROOT / "models" / "vgg_cifar.cnn").network(seed=0)
    np.savez(folder / "sd.npz", **vgg.state())


def _order(command: str) -> int:
    """Training first (new runs, then resumed ones), then everything else."""
    if " train " in f" {command} ":
        return 1 if "--resume" in command else 0
    return 2


def serve_until_it_answers(argv: list[str], cwd, env) -> None:
    """`cnnc serve ...` started, its page fetched (200), then Ctrl-C: exit status 0."""
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "cnnc", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("live page: http://127.0.0.1:"), (argv, line, proc.stderr.read() if proc.poll() else "")
        with urllib.request.urlopen(line.split(": ", 1)[1].strip(), timeout=30) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # trains, exports ResNet-18, runs MPI
def test_every_help_example_runs(tmp_path):
    examples = help_examples()
    assert len(examples) >= 20
    _prepare(tmp_path)
    env = dict(os.environ, CNNC_DATA=str(SHARED_DATA), CNNC_OFFLINE="1")
    for command in sorted(examples, key=_order):
        argv = shlex.split(command.split("  #", 1)[0])[1:]
        if argv[0] == "train":
            if "--workers" in argv:
                pytest.importorskip("mpi4py")
            argv = [a for i, a in enumerate(argv) if a != "--epochs" and (i == 0 or argv[i - 1] != "--epochs")]
            argv += ["--epochs", "2" if "--resume" in argv else "1"]
        if argv[0] == "bench":
            argv += ["--steps", "2", "--repeats", "1"]
        if argv[0] == "serve":  # serves until Ctrl-C: check the page answers, then stop it
            serve_until_it_answers(argv, tmp_path, env)
            continue
        r = run(argv, tmp_path, env=env)
        assert r.returncode == 0, (command, r.stderr[-3000:])
