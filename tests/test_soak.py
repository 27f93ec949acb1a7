"""Short forms of the soaks in examples/ (issue 25): random kills of a training run resumed
bit-identically (kill_soak.py), generated and mutated model texts (text_soak.py), broken data
files of every format (data_corpus.py). The full forms are the scripts themselves."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_text_soak_short():
    soak = load("text_soak")
    counts, failures, slowest = soak.soak(300, seed=25, limit=30.0)  # the 2 s bound is the script's
    assert failures == [], failures[:3]
    assert counts["ok"] > 10 and counts["positioned"] > 100  # both outcomes are exercised
    assert sum(counts.values()) == 300


def test_text_soak_finds_what_it_looks_for(monkeypatch):
    """The soak can fail: an unpositioned error and a crash are counted as failures."""
    import cnnc

    soak = load("text_soak")
    calls = iter([cnnc.UsageError("no position"), ValueError("a bug")])

    def broken(text):
        raise next(calls)

    monkeypatch.setattr(cnnc, "compile", broken)
    assert soak.check("conv3", 30.0, 60.0)[0] == "unpositioned"
    assert soak.check("conv3", 30.0, 60.0)[0] == "crash"


def test_data_corpus(tmp_path):
    corpus = load("data_corpus")
    lines = []
    counts = corpus.run(tmp_path, seed=0, variants=1, show=lines.append)
    crashes = [line for line in lines if line.startswith("crash")]
    assert crashes == [] and counts["valid-failed"] == 0
    assert counts["refused"] > 100 and counts["cases"] == len(lines)
    formats = {line.split(":")[0].split()[-1] for line in lines if ": " in line}
    assert {"idx", "idx-gz", "cifar", "npz", "images"} <= formats


@pytest.mark.parametrize("kills,busy", [pytest.param(2, 0.5, id="short"),
                                        pytest.param(20, 0.5, id="long", marks=pytest.mark.slow)])
def test_kill_soak(tmp_path, kills, busy):
    soak = load("kill_soak")
    assert soak.main(["--kills", str(kills), "--busy", str(busy), "--seed", "7",
                      "--keep", str(tmp_path / "work")]) == 0
