"""A second process that compiles a model's kernels while training compiles them too.

On a cold kernel cache the first training run spends most of its time in Numba compiling
kernels, one at a time, on one core (the digits example: about 24 s of compiling against
3 s of training on a 2-core machine). Training calls its kernels in a fixed order: the
forward steps, the loss, the backward steps (last layer first), the optimizer, and at the
end of the epoch the inference pass of the evaluation. :class:`CompileHelper` starts, at
the first compilation it sees, a second Python process (:func:`helper_argv`) that builds the
same network and calls the same kernels in the *reverse* order, on zeros. Every kernel it
compiles lands in Numba's on-disk cache, so when training reaches that kernel it loads it
(a few milliseconds) instead of compiling it; the two processes meet in the middle and the
wait is roughly halved. Neither compiles a kernel the other is compiling at that moment:
each names the kernel it compiles in a file of a shared temporary folder, and on a cache
miss for the kernel the other one names, it waits for that result and loads it from the
cache instead (the digits example: the helper compiled the fully connected layer's backward
kernel, 1.6 s, a second time before the helper waited too). Nothing else is shared: the
helper reads its model from stdin, writes nothing but the cache and its file, and its
results are thrown away.

It runs only where it can help: a cold cache (a compilation actually started), at least two
cores, one process (not under MPI, whose ranks already fill the cores), and not with
``CNNC_COMPILE_HELPER=0``. It stops by itself when its list is done, when training ends its
first epoch (by then every kernel is compiled), or when its parent goes away.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

ENV_SWITCH = "CNNC_COMPILE_HELPER"
WAIT_LIMIT = 300.0  # seconds training waits at most for one kernel the helper compiles


_STARTED = [0]  # helpers started by this process (the compile notice mentions them)


def started() -> int:
    """How many compile helpers this process has started."""
    return _STARTED[0]


def enabled() -> bool:
    """Whether training may start a compile helper (``CNNC_COMPILE_HELPER``, default on)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def wanted() -> bool:
    """Whether a helper can help this process: switched on, and a second core for it."""
    from ..kernels.threads import cores

    return enabled() and cores() >= 2


class _Status:
    """The folder the two processes share: each keeps the file named after it (``main``,
    ``helper``) naming the kernel it compiles now ('' between kernels), and waits for the
    other where that one is compiling the kernel it misses in the cache."""

    def __init__(self, folder: str, mine: str, theirs: str):
        self.folder, self.mine, self.theirs = folder, mine, theirs
        self.waited = 0.0  # seconds spent waiting for the other process

    def report(self, py_func) -> None:
        """Name ``py_func`` (None: nothing) as the kernel this process compiles now."""
        path = os.path.join(self.folder, self.mine)
        tmp = f"{path}.{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(_kernel_name(py_func) if py_func is not None else "")
            os.replace(tmp, path)
        except OSError:
            pass

    def compiling(self) -> str:
        """The kernel the other process compiles now ('' if none or unknown)."""
        try:
            with open(os.path.join(self.folder, self.theirs), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""

    def wait_for(self, py_func, alive: Callable[[], bool]) -> bool:
        """Wait (at most WAIT_LIMIT s, while ``alive()``) as long as the other process
        compiles ``py_func``; whether it was compiling it."""
        name = _kernel_name(py_func)
        if self.compiling() != name:
            return False
        start = time.monotonic()
        while alive() and self.compiling() == name and time.monotonic() - start < WAIT_LIMIT:
            time.sleep(0.02)
        self.waited += time.monotonic() - start
        return True


def _wrap_cache(wait: Callable[[object], bool]):
    """Make Numba's cache lookup, on a miss, call ``wait(py_func)`` and look again if it
    waited (the other process has put its result in the cache by then). Returns the
    original lookup, for :func:`_unwrap_cache`."""
    from numba.core import caching

    original = caching.Cache.load_overload

    def load_overload(cache, sig, target_context):
        cres = original(cache, sig, target_context)
        if cres is None and wait(cache._py_func):
            cres = original(cache, sig, target_context)
        return cres

    caching.Cache.load_overload = load_overload
    return original


def _unwrap_cache(original) -> None:
    from numba.core import caching

    caching.Cache.load_overload = original


class CompileHelper:
    """Context manager: on the first Numba compilation while active, start the helper
    process with ``spec`` (see :func:`timeline` for what it runs); :meth:`stop` (or leaving)
    ends it. ``spec`` is a JSON-able dict: the model (``source``, ``filename``, ``input``,
    ``classes``, ``width``), ``dtype``, the training ``batch``, the ``optimizer`` settings
    and the ``eval_batches`` sizes."""

    def __init__(self, spec: dict | None):
        self.spec = spec
        self.proc: subprocess.Popen | None = None
        self._listener = None
        self._status: _Status | None = None  # shared with the helper (see _Status)
        self._load_overload = None  # Numba's cache lookup, while ours wraps it

    @property
    def waited(self) -> float:
        """Seconds training waited for kernels the helper was compiling."""
        return self._status.waited if self._status is not None else 0.0

    # ---- numba's compile events
    def __enter__(self) -> "CompileHelper":
        if self.spec is None:
            return self
        from ..kernels.events import listen_top_level

        self._listener = listen_top_level(self._compile_starts, self._compile_ends)
        self._load_overload = _wrap_cache(self._wait_for)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _compile_starts(self, py_func) -> None:
        self._start()
        if self._status is not None:
            self._status.report(py_func)

    def _compile_ends(self, py_func) -> None:
        if self._status is not None:
            self._status.report(None)

    def _wait_for(self, py_func) -> bool:
        """On a cache miss: wait while the helper compiles ``py_func``; whether it was."""
        proc = self.proc
        if proc is None or self._status is None:
            return False
        return self._status.wait_for(py_func, lambda: proc.poll() is None)

    def _unlisten(self) -> None:
        if self._listener is not None:
            from ..kernels.events import unlisten

            unlisten(self._listener)
            self._listener = None

    def _start(self) -> None:
        if self.spec is None or self._listener is None:
            return
        import numba

        env = dict(os.environ)
        # the same work split as the parent (kernels choose their path by it), run on 1 thread
        env["NUMBA_NUM_THREADS"] = str(numba.config.NUMBA_NUM_THREADS)
        env["CNNC_THREADS"] = "1"
        env[ENV_SWITCH] = "0"
        try:
            self._status = _Status(tempfile.mkdtemp(prefix="cnnc-compile-"), "main", "helper")
            proc = subprocess.Popen(
                helper_argv(os.getpid(), self._status.folder),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        except OSError:  # no process to spare: training compiles everything itself
            self.spec = None
            self.stop()
            return
        self.proc = proc
        _STARTED[0] += 1
        try:
            proc.stdin.write(json.dumps(self.spec).encode())
            proc.stdin.close()
        except OSError:  # it is gone already
            self.stop()
        self.spec = None  # one helper per run

    def stop(self) -> None:
        """End the helper (if it still runs), stop listening and waiting."""
        self._unlisten()
        if self._load_overload is not None:
            _unwrap_cache(self._load_overload)
            self._load_overload = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._status is not None:
            shutil.rmtree(self._status.folder, ignore_errors=True)


def spec_for(model, net, batch: int, cfg, eval_sizes: list[int], eval_batch: int = 500) -> dict:
    """The helper's spec for training ``model`` (network ``net``) at ``batch`` with the
    :class:`~cnnc.training.train.TrainConfig` ``cfg``; ``eval_sizes``: the evaluation set sizes,
    evaluated ``eval_batch`` images at a time."""
    from ..kernels.threads import work_chunks

    # kernels choose their path by whether a batch is smaller than the work split, never
    # by its size otherwise: the helper runs batches of at most that many images (its
    # memory stays small whatever the training batch)
    most = work_chunks()
    chunks = set()
    for n in eval_sizes:
        if n > 0:
            chunks.add(min(eval_batch, n, most))
            if n % eval_batch:
                chunks.add(min(n % eval_batch, most))
    batch = min(batch, most)
    return {
        "source": model.source, "filename": model.filename, "input": list(model.input_shape),
        "classes": net.classes, "width": model.header.width, "dtype": str(net.dtype),
        "variables": model.design.as_dict() if model.design is not None else None,
        "batch": batch, "eval_batches": sorted(chunks),
        "optimizer": {"kind": cfg.optimizer, "momentum": cfg.momentum, "nesterov": cfg.nesterov,
                      "weight_decay": cfg.weight_decay},
    }


def timeline(spec: dict) -> list[Callable[[], object]]:
    """The kernel calls of a training step and an evaluation (the network of ``spec``, on
    zero-filled buffers), in the order that meets training's in the middle: what training
    reaches last comes first. Training runs forward, loss, backward (last layer first),
    optimizer, then the evaluation; so the helper runs the backward steps first layer first
    (the first layers' backward kernels are the costliest to compile, and training needs
    them last but one), the optimizer, the loss, the forward steps last layer first, and the
    evaluation's forward last (it mostly calls the training forward's kernels, compiled by
    then)."""
    from ..compiler import compile as compile_text
    from ..kernels import loss as loss_kernels
    from ..runtime.optim import Optimizer

    model = compile_text(spec["source"], filename=spec["filename"], input=tuple(spec["input"]),
                         classes=spec["classes"], width=spec["width"],
                         variables=spec.get("variables"))
    net = model.network(seed=0, dtype=spec["dtype"])
    opt = spec["optimizer"]
    optimizer = Optimizer(opt["kind"], net.theta, net.grad, momentum=opt["momentum"],
                          nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
    calls: list[Callable[[], object]] = []

    def forward(ex, training):
        for step in reversed(ex.plan.steps):
            op = ex.ops[step.node]
            calls.append(lambda op=op, step=step: op.forward(
                [ex.values[s] for s in step.inputs], ex.values[step.output], training))

    ex = net.executor(spec["batch"])
    for op in ex.ops.values():  # backward before forward: as after a training forward
        op.assume_trained()
    for step in ex.plan.steps:
        calls.append(lambda step=step: ex._run_backward((step,)))
    calls.append(lambda: optimizer.step(1e-3))
    calls.append(lambda: loss_kernels.count_correct(ex.logits, ex.labels))
    calls.append(lambda: loss_kernels.softmax_xent_backward(ex.probs, ex.labels,
                                                            ex.grads[ex.plan.logits]))
    calls.append(ex.loss)
    forward(ex, True)
    for batch in spec["eval_batches"]:
        iex = net.inference_executor(batch)
        if iex.plan.inference:
            calls.append(iex.refold)
        forward(iex, False)
        calls.append(iex.loss)
    return calls


# The helper must import *this* copy of cnnc: its kernels are cached next to their source
# files, and a copy found elsewhere caches into its own folder, where training never looks.
# ``python -m`` would put the current directory first on sys.path, so a user training from
# a clone of the repository (the README's command, after ``pip install .``) had a helper
# compiling the clone's kernels while the installed package compiled everything itself.
_LAUNCH = ("import sys; sys.path.insert(0, {root!r}); "
           "from cnnc.training.precompile import main; sys.exit(main(sys.argv[1:]))")


def helper_argv(parent: int, folder: str) -> list[str]:
    """The helper's command line: this Python, this copy of cnnc, :func:`main`."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, "-c", _LAUNCH.format(root=root), str(parent), folder]


def _kernel_name(py_func) -> str:
    return f"{getattr(py_func, '__module__', '?')}.{getattr(py_func, '__qualname__', '?')}"


def main(argv: list[str]) -> int:
    """The helper process: ``argv`` = [parent pid, status folder]; the model spec on stdin."""
    parent = int(argv[0]) if argv else os.getppid()
    try:
        spec = json.loads(sys.stdin.read())
        calls = timeline(spec)
    except Exception:
        return 1
    if len(argv) > 1:  # name what it compiles; wait for what training compiles
        from ..kernels.events import listen_top_level

        status = _Status(argv[1], "helper", "main")
        listen_top_level(status.report, lambda py_func: status.report(None))
        _wrap_cache(lambda py_func: status.wait_for(py_func, lambda: os.getppid() == parent))
    for call in calls:
        if os.getppid() != parent:  # training is gone: nothing to compile for
            return 0
        try:
            call()
        except Exception:  # a kernel the helper cannot run on zeros: training compiles it
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
