"""The compile helper (cnnc.training.precompile): a second process that compiles a model's kernels on
a cold cache, in the reverse of training's order, so that training loads them instead."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numba
import pytest

from cnnc.training import precompile
from cnnc.training import train as T
from conftest import ROOT

RICH = "conv3(8) - bn - relu - pool - dropout(0.25) - fc(32) - relu - fc"
SETTINGS = dict(data="digits", epochs=1, batch=32, optimizer="adam", lr=0.01)

# the Trainer's spec for RICH on the digits, and the training run, in separate processes
# that share one (cold) kernel cache
HELPER_SIDE = """
import json, sys
import cnnc
from cnnc.training import precompile
from cnnc.training import train as T
model = cnnc.compile(%(model)r, input="1x8x8", classes=10)
cfg = T.TrainConfig.from_header(model.header, **%(settings)r)
train_ds, test_ds = T.D.resolve_dataset(cfg.data, cfg.data_dir)
data = T.prepare_data(model.input_shape, model.classes, cfg, train_ds, test_ds)
spec = T.Trainer(model, cfg, data, None, progress=False)._helper_spec()
for call in precompile.timeline(spec):
    call()
print(json.dumps(spec))
"""
TRAINING_SIDE = """
import json
import cnnc
from cnnc.training import train as T
from cnnc.runtime.notice import CompileNotice
model = cnnc.compile(%(model)r, input="1x8x8", classes=10)
with CompileNotice(enabled=False) as notice:
    T.train(model, **%(settings)r)
print(json.dumps([name for name, _ in notice.times]))
"""


def _run(code: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.slow  # cold compiles, twice, in subprocesses
def test_after_the_helper_training_compiles_no_kernel(tmp_path):
    """Everything a training step and an evaluation call is on the helper's list: after
    the helper has run its whole list, training finds every kernel in the cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="2",
               CNNC_THREADS="1", CNNC_COMPILE_HELPER="1", CNNC_OFFLINE="1")
    args = {"model": RICH, "settings": SETTINGS}
    spec = json.loads(_run(HELPER_SIDE % args, env))
    assert spec["batch"] == 2 and spec["optimizer"]["kind"] == "adam" and spec["classes"] == 10
    # nothing compiled yet in a fresh process would show up as an empty cache
    assert any(p.suffix == ".nbi" for p in (tmp_path / "cache").rglob("*"))
    compiled = json.loads(_run(TRAINING_SIDE % args, dict(env, CNNC_COMPILE_HELPER="0")))
    assert compiled == []


def test_helper_stops_when_its_parent_is_not_there(tmp_path):
    """A helper whose parent is gone compiles none of its list (it stops at the first
    kernel boundary)."""
    spec = {"source": "conv3(4) - relu - pool - fc", "filename": "<string>", "input": [1, 8, 8],
            "classes": 10, "width": None, "dtype": "float32", "batch": 8, "eval_batches": [8],
            "optimizer": {"kind": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}}
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), CNNC_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "cnnc.training.precompile", "1"], input=json.dumps(spec),
                       env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    names = {p.name for p in cache.rglob("*.nbi")}
    assert not any("sgd_update" in n or "count_correct" in n for n in names), names


def test_helper_rejects_a_bad_spec_quietly():
    r = subprocess.run([sys.executable, "-m", "cnnc.training.precompile", str(os.getpid())],
                       input="not json", capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1 and r.stdout == ""


class _FakeHelper:
    """Stands in for CompileHelper: records the spec and when it is stopped."""

    events: list = []
    waited = 0.0  # seconds training waited for it

    def __init__(self, spec):
        _FakeHelper.events.append(("spec", spec))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _FakeHelper.events.append(("exit",))

    def stop(self):
        _FakeHelper.events.append(("stop",))


@pytest.fixture
def fake_helper(monkeypatch):
    _FakeHelper.events = []
    monkeypatch.setattr(precompile, "CompileHelper", _FakeHelper)
    return _FakeHelper.events


def _model():
    import cnnc

    return cnnc.compile(RICH, input="1x8x8", classes=10)


def test_training_gives_the_helper_its_spec_and_stops_it_after_the_first_epoch(fake_helper,
                                                                              monkeypatch):
    monkeypatch.setenv("CNNC_COMPILE_HELPER", "1")
    monkeypatch.setattr("cnnc.kernels.threads.cores", lambda: 2)
    r = T.train(_model(), **dict(SETTINGS, epochs=2),
                epoch_callback=lambda net, data, out, epoch: fake_helper.append(("epoch", epoch)))
    spec = fake_helper[0][1]
    assert spec["batch"] == min(32, numba.config.NUMBA_NUM_THREADS)
    assert spec["optimizer"]["kind"] == "adam"
    assert spec["source"] == RICH and spec["input"] == [1, 8, 8] and spec["classes"] == 10
    assert r.history[0]["val_accuracy"] is not None and spec["eval_batches"], spec
    kinds = [e[0] for e in fake_helper]
    assert kinds.index("stop") < kinds.index("epoch") and kinds[-1] == "exit"


@pytest.mark.parametrize("switch, cores", [("0", 2), ("1", 1)])
def test_no_helper_when_switched_off_or_on_one_core(fake_helper, monkeypatch, switch, cores):
    monkeypatch.setenv("CNNC_COMPILE_HELPER", switch)
    monkeypatch.setattr("cnnc.kernels.threads.cores", lambda: cores)
    T.train(_model(), **SETTINGS)
    assert fake_helper[0] == ("spec", None)


def test_helper_batches_take_the_same_kernel_paths_with_little_memory(monkeypatch):
    """Batches of at most the work split (kernels choose a path by batch < split only):
    a batch of 1 stays 1, larger ones shrink to the split."""
    class Cfg:
        optimizer, momentum, nesterov, weight_decay = "sgd", 0.9, False, 0.0

    monkeypatch.setattr("cnnc.kernels.threads.work_chunks", lambda: 4)
    model = _model()
    net = model.network()
    spec = precompile.spec_for(model, net, 256, Cfg, [1001, 0, 3])
    assert spec["batch"] == 4 and spec["eval_batches"] == [1, 3, 4]
    assert precompile.spec_for(model, net, 2, Cfg, [4])["batch"] == 2


def test_a_compilation_starts_the_helper_and_stop_ends_it():
    """The real helper process: started by the first compilation while active, ended by stop."""
    model = _model()
    net = model.network()

    class Cfg:
        optimizer, momentum, nesterov, weight_decay = "sgd", 0.9, False, 0.0

    before = precompile.started()
    helper = precompile.CompileHelper(precompile.spec_for(model, net, 8, Cfg, [8]))
    with helper:
        assert helper.proc is None
        numba.njit(lambda v: v + 1)(1)  # a compilation
        proc = helper.proc
        assert proc is not None and precompile.started() == before + 1
        numba.njit(lambda v: v + 2)(1)  # a later one starts no second helper
        assert helper.proc is proc and precompile.started() == before + 1
        helper.stop()
        assert helper.proc is None and proc.poll() is not None
    assert precompile.started() == before + 1


def test_switch_values(monkeypatch):
    for value, on in [("0", False), ("off", False), ("no", False), ("1", True), ("", True)]:
        monkeypatch.setenv("CNNC_COMPILE_HELPER", value)
        assert precompile.enabled() is on
    monkeypatch.delenv("CNNC_COMPILE_HELPER")
    assert precompile.enabled()


def test_helper_builds_the_design_training_runs():
    """A model compiled with design variables (--set): the helper's network is that design,
    not the file's defaults."""
    import cnnc

    class Cfg:
        optimizer, momentum, nesterov, weight_decay = "sgd", 0.9, False, 0.0

    text = "let N = 1\nlet pool = on\n[conv3(4) - relu]*N - pool? - fc"
    model = cnnc.compile(text, input="1x8x8", classes=10, variables="N=3,pool=off")
    spec = precompile.spec_for(model, model.network(), 4, Cfg, [4])
    calls = precompile.timeline(json.loads(json.dumps(spec)))
    net_layers = [n for n in model.layers if n.startswith("conv")]
    assert len(net_layers) == 3 and not any(n.startswith("pool") for n in model.layers)
    # per step: backward, forward, and the evaluation's forward; plus optimizer, count,
    # the two loss calls, the evaluation's loss (no batch norm: no refold)
    steps = len(model.network().plan.steps)
    assert len(calls) == 3 * steps + 5


@pytest.mark.slow  # cold compiles in subprocesses
def test_bench_cold_compile_runs_a_helper_and_the_warm_one_none(monkeypatch, tmp_path):
    """`cnnc bench` measures the cold first step as `cnnc train` has it (a helper beside
    it); with the cache filled, nothing compiles and no helper starts."""
    import cnnc
    from cnnc.tools import bench
    from cnnc.kernels.threads import cores

    if cores() < 2:
        pytest.skip("one core: no helper")
    monkeypatch.setenv("CNNC_COMPILE_HELPER", "1")
    (tmp_path / "m.cnn").write_text("input 1x8x8\nclasses 3\nconv3(4) - relu - pool - fc\n")
    r = bench._compile_times(cnnc.compile_file(tmp_path / "m.cnn"), 4)
    assert "cold_error" not in r and "warm_error" not in r, r
    # the helper starts at the first compilation: none in the warm run means every kernel came
    # from the cache the cold run filled (the signal; the two times depend on the machine's load)
    assert r["cold_compile_helper"] is True and r["warm_compile_helper"] is False
    assert r["cold_first_step_s"] > 0 and r["warm_first_step_s"] > 0
    assert "a compile helper process" in bench.format_bench(
        {**r, "model": "m", "batch": 4, "input_shape": [1, 8, 8], "params": 1, "macs_per_image": 1,
         "train_images_per_s": 1, "train_ms_per_step": 1, "train_gflops": 1,
         "infer_images_per_s": 1, "infer_ms_per_batch": 1, "infer_gflops": 1, "peak_rss_mib": 1,
         "timing": "t", "flop_convention": "f", "threads": 2})


def _kernel():
    pass


def test_training_waits_for_the_kernel_the_helper_is_compiling(tmp_path, monkeypatch):
    """A cache miss for the kernel the helper names waits until the helper is done with it
    (then looks in the cache again); any other kernel does not wait. The waiting is counted in
    polls on a fake clock (the helper finishes at the third), not measured on the real one."""
    import types

    helper = precompile.CompileHelper(None)
    helper.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    helper._status = precompile._Status(str(tmp_path), "main", "helper")
    now = tmp_path / "helper"
    clock = {"t": 0.0, "sleeps": 0, "done_after": 3}

    def sleep(seconds):
        clock["t"] += seconds
        clock["sleeps"] += 1
        if clock["sleeps"] == clock["done_after"]:
            now.write_text("")  # the helper is done with the kernel

    monkeypatch.setattr(precompile, "time", types.SimpleNamespace(monotonic=lambda: clock["t"], sleep=sleep))
    try:
        now.write_text(precompile._kernel_name(_kernel))
        assert helper._wait_for(numba.njit) is False  # another function: no wait
        assert clock["sleeps"] == 0
        assert helper._wait_for(_kernel) is True
        assert clock["sleeps"] == 3  # it polled until the helper was done, and no longer
        assert helper.waited == clock["t"] > 0
        now.write_text(precompile._kernel_name(_kernel))
        helper.proc.kill()  # a helper that dies: no waiting for it
        helper.proc.wait()
        clock["done_after"] = None
        helper._wait_for(_kernel)
        assert clock["sleeps"] == 3
    finally:
        helper.proc.kill()
        helper.proc.wait()


def test_the_two_processes_name_what_they_compile_to_each_other(tmp_path):
    """Each side writes its own file and reads the other's: training's name is what the
    helper waits for, and the reverse."""
    main = precompile._Status(str(tmp_path), "main", "helper")
    helper = precompile._Status(str(tmp_path), "helper", "main")
    main.report(_kernel)
    assert helper.compiling() == precompile._kernel_name(_kernel) and main.compiling() == ""
    helper.report(test_switch_values)
    assert main.compiling() == precompile._kernel_name(test_switch_values)
    main.report(None)
    assert helper.compiling() == ""
    assert helper.wait_for(_kernel, lambda: True) is False  # training is not compiling it now


@pytest.mark.slow  # the real helper compiles into an empty cache
def test_the_helper_waits_for_the_kernel_training_compiles(tmp_path):
    """The real helper process, with a status folder where training names a kernel of the
    helper's list: the helper does not compile it while training does (it waits, then
    takes training's result from the cache), and it goes on once training is done."""
    import time

    model = _model()
    net = model.network()

    class Cfg:
        optimizer, momentum, nesterov, weight_decay = "sgd", 0.9, False, 0.0

    spec = precompile.spec_for(model, net, 4, Cfg, [4])
    # the first kernel of the helper's list: the first step's backward (a conv's)
    from cnnc.kernels.conv import direct

    (tmp_path / "main").write_text(precompile._kernel_name(direct.direct_backward.py_func))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), CNNC_COMPILE_HELPER="0")
    proc = subprocess.Popen([sys.executable, "-m", "cnnc.training.precompile", str(os.getpid()), str(tmp_path)],
                            stdin=subprocess.PIPE, env=env)
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    blocked = precompile._kernel_name(direct.direct_backward.py_func)

    def watch(seconds, until=None):
        seen, end = [], time.monotonic() + seconds
        while time.monotonic() < end and proc.poll() is None:
            name = (tmp_path / "helper").read_text() if (tmp_path / "helper").exists() else ""
            if name and name not in seen:
                seen.append(name)
            if until in seen:
                break
            time.sleep(0.01)
        return seen

    try:
        # training names the conv's backward kernel: the helper's first kernel waits
        assert blocked not in watch(8)
        assert proc.poll() is None
        (tmp_path / "main").write_text("")  # training is done with it (and, here, cached nothing)
        assert blocked in watch(120, until=blocked)  # so the helper compiles it itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_helper_imports_this_copy_of_cnnc_not_one_in_the_working_directory(tmp_path):
    """The README trains from a clone of the repository after ``pip install .``: the clone's
    ``cnnc/`` folder is then in the working directory. The helper must compile the kernels
    of the copy training imported (their cache lies next to their source), not the clone's."""
    import subprocess
    import sys

    from cnnc.training.precompile import helper_argv

    decoy = tmp_path / "cnnc" / "training"
    decoy.mkdir(parents=True)
    (tmp_path / "cnnc" / "__init__.py").write_text("")
    (decoy / "__init__.py").write_text("")
    marker = tmp_path / "decoy-ran"
    (decoy / "precompile.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef main(argv):\n    return 7\n")
    folder = tmp_path / "status"
    folder.mkdir()
    proc = subprocess.run(helper_argv(0, str(folder)), cwd=tmp_path, input="not json",
                          capture_output=True, text=True, timeout=120)
    assert not marker.exists(), "the helper imported the cnnc package of the working directory"
    assert proc.returncode == 1, proc.stderr  # the real helper: a bad spec on stdin -> 1
