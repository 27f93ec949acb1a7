"""``cnnc bench``: training and inference throughput on random data, compile times, memory.

FLOP convention: a training step costs 3 x the forward MACs (forward, input gradient,
weight gradient) x 2 FLOPs per MAC; inference 2 x MACs.
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..text import plural

FIRST_STEP_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import cnnc
from cnnc.tools.bench import first_step
spec = json.loads(sys.argv[2])
model = cnnc.compile(spec.pop("source"), **spec)
seconds = first_step(model, int(sys.argv[1]), t0)
from cnnc.training import precompile
print(seconds, precompile.started())
"""


class _BenchOptimizer:
    """The optimizer settings of a bench step (what a compile helper needs to know)."""
    optimizer, momentum, nesterov, weight_decay = "sgd", 0.9, False, 0.0


def training_setup(model, batch: int, net=None):
    """A network (``net``, or a new one), its program for ``batch`` filled with random
    data, and a step function (forward, backward and an SGD-with-momentum update)."""
    from ..runtime.optim import Optimizer

    net = model.network(seed=0) if net is None else net
    prog = net.executor(batch)
    rng = np.random.default_rng(0)
    prog.input[...] = rng.standard_normal(prog.input.shape)
    prog.labels[...] = rng.integers(0, net.classes, batch)
    opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9)

    def train_step() -> None:
        net.step(prog)
        opt.step(1e-3)

    return net, prog, train_step


def first_step(model, batch: int, t0: float) -> float:
    """Seconds from ``t0`` to the end of the first training step (compiles or loads kernels),
    with a compile helper process on a cold cache as ``cnnc train`` has
    (:mod:`cnnc.training.precompile`)."""
    from ..training import precompile

    net = model.network(seed=0)
    spec = precompile.spec_for(model, net, batch, _BenchOptimizer, []) if precompile.wanted() else None
    with precompile.CompileHelper(spec):
        training_setup(model, batch, net)[2]()
    return time.perf_counter() - t0


def _say(progress, text: str) -> None:
    if progress is not None:
        progress(text)


def _model_spec(model) -> str:
    """The model as the fresh processes of :func:`_compile_times` compile it (JSON)."""
    import json

    return json.dumps({"source": model.source, "filename": model.filename,
                       "input": "x".join(map(str, model.input_shape)), "classes": model.classes,
                       "width": model.header.width,
                       "variables": model.design.as_dict() if model.design is not None else None})


def _compile_times(model, batch: int, progress=None) -> dict:
    """Cold (empty kernel cache) and warm (cache filled by the cold run) time to first step,
    each in a fresh process, including Python start-up and imports."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="cnnc-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            _say(progress, {"cold": "first step in a fresh process with an empty kernel cache "
                                    "(compiles every kernel) ...",
                            "warm": "first step in a fresh process with the cache it filled ..."}[label])
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", FIRST_STEP_SCRIPT, str(batch), _model_spec(model)],
                                  env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                out[f"{label}_error"] = proc.stderr.strip().splitlines()[-1:] or ["failed"]
                continue
            seconds, helpers = proc.stdout.strip().splitlines()[-1].split()
            out[f"{label}_first_step_s"] = round(float(seconds), 3)
            out[f"{label}_compile_helper"] = int(helpers) > 0
            out[f"{label}_process_s"] = round(wall, 3)
    return out


def bench(model, batch: int = 64, steps: int = 20, repeats: int = 5, compile_times: bool = True,
          progress=None) -> dict:
    """Training and inference speed on random data (see ``cnnc bench --help``); ``progress``
    receives a line as each phase starts."""
    from ..kernels.threads import blas_info

    result: dict = {"model": model.filename, "batch": batch,
                    "input_shape": list(model.input_shape), "params": model.summary.total_params,
                    "macs_per_image": model.summary.total_macs}
    if compile_times:
        result.update(_compile_times(model, batch, progress))
    _say(progress, "first step in this process ...")
    t0 = time.perf_counter()
    net, prog, train_step = training_setup(model, batch)
    train_step()
    result["this_process_first_step_s"] = round(time.perf_counter() - t0, 3)
    for _ in range(3):
        train_step()
    train_times = []
    _say(progress, f"timing training: {plural(repeats, 'run')} of {plural(steps, 'step')} ...")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            train_step()
        train_times.append((time.perf_counter() - t) / steps)
    infer = net.inference_executor(batch)  # what Network.forward runs: batch norm folded
    infer.input[...] = prog.input
    for _ in range(3):
        infer.forward(False)
    infer_times = []
    _say(progress, f"timing inference: {plural(repeats, 'run')} of {plural(steps, 'batch', 'batches')} ...")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            infer.forward(False)
        infer_times.append((time.perf_counter() - t) / steps)
    calls1 = batch1_calls(steps)
    _say(progress, f"timing inference at batch 1: {plural(calls1, 'call')} of net.forward on one image ...")
    infer1_s = batch1_latency(net, prog.input[:1].copy(), calls1)
    train_s = statistics.median(train_times)
    infer_s = statistics.median(infer_times)
    macs = model.summary.total_macs * batch
    result.update({
        "train_ms_per_step": round(train_s * 1e3, 3),
        "train_images_per_s": round(batch / train_s, 1),
        "train_gflops": round(6 * macs / train_s / 1e9, 2),
        "infer_ms_per_batch": round(infer_s * 1e3, 3),
        "infer_images_per_s": round(batch / infer_s, 1),
        "infer_gflops": round(2 * macs / infer_s / 1e9, 2),
        "infer_batch1_ms": round(infer1_s * 1e3, 4),
        "infer_batch1_calls": calls1,
        "flop_convention": "train step = 6 x MACs (forward, input and weight gradients); inference = 2 x MACs",
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "timing": f"median of {plural(repeats, 'run')} of {plural(steps, 'step')}",
        "threads": blas_info().get("numba_threads"),
        "blas": blas_note(),
    })
    return result


def batch1_calls(steps: int) -> int:
    """How many single-image forwards the batch-1 latency is the median of."""
    return 10 * steps


def _median_call(fn, calls: int, warmup: int = 3) -> float:
    """Median seconds of one call of ``fn`` over ``calls`` calls, each timed alone, after
    ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def batch1_latency(net, x1: np.ndarray, calls: int) -> float:
    """Median seconds of ``net.forward(x1)`` on one image (inference: batch norm folded),
    over ``calls`` calls after a few warm-up calls: the latency a caller sees, input copy
    and output included."""
    return _median_call(lambda: net.forward(x1), calls)


def blas_note() -> dict:
    """The OpenBLAS kernels the GEMMs run on, and a warning when the environment pinned
    slower ones than this CPU has (OPENBLAS_CORETYPE set before cnnc on an AVX-512 CPU)."""
    from ..kernels.environment import BLAS_CHOICE
    from ..kernels.threads import blas_info

    kernels = sorted({str(b.get("architecture")) for b in blas_info().get("blas", [])})
    note = {"kernels": kernels, "openblas_coretype": BLAS_CHOICE.get("preset_coretype"), "warning": None}
    preset = BLAS_CHOICE.get("preset_coretype")
    if BLAS_CHOICE.get("avx512") and preset and not any(k.lower() in ("skylakex", "cooperlake", "sapphirerapids")
                                                        for k in kernels):
        note["warning"] = (f"OPENBLAS_CORETYPE={preset} is set in the environment, so OpenBLAS runs its "
                           f"{'/'.join(kernels)} kernels although this CPU has AVX-512; its SkylakeX "
                           "kernels are up to 2.5x faster for small layers (unset the variable if your "
                           "OpenBLAS is recent)")
    return note


def format_bench(r: dict) -> str:
    lines = [f"{r['model']}: batch {r['batch']}, input {'x'.join(map(str, r['input_shape']))}, "
             f"{r['params']:,} parameters, {r['macs_per_image']:,} MACs per image", ""]
    lines.append(f"training   {r['train_images_per_s']:>12,.0f} images/s  {r['train_ms_per_step']:9.3f} ms/step"
                 f"  {r['train_gflops']:8.2f} GFLOP/s")
    lines.append(f"inference  {r['infer_images_per_s']:>12,.0f} images/s  {r['infer_ms_per_batch']:9.3f} ms/batch"
                 f" {r['infer_gflops']:8.2f} GFLOP/s")
    if "infer_batch1_ms" in r:
        lines.append(f"latency    batch 1: {r['infer_batch1_ms']:.3f} ms per image (median of "
                     f"{plural(r['infer_batch1_calls'], 'call')} of net.forward on one image)")
    if "cold_first_step_s" in r:
        helper = " (a compile helper process beside it)" if r.get("cold_compile_helper") else ""
        lines.append(f"compile    cold cache {r['cold_first_step_s']:.2f} s{helper}, warm cache "
                     f"{r.get('warm_first_step_s', float('nan')):.2f} s to the first training step "
                     "(fresh process, imports included)")
    for key in ("cold_error", "warm_error"):
        if key in r:
            lines.append(f"compile    {key.split('_')[0]} run failed: {r[key]}")
    lines.append(f"memory     peak resident {r['peak_rss_mib']:.0f} MiB")
    blas = r.get("blas") or {}
    if blas.get("kernels"):
        lines.append(f"BLAS       OpenBLAS {', '.join(blas['kernels'])} kernels"
                     + (f" (OPENBLAS_CORETYPE={blas['openblas_coretype']} from the environment)"
                        if blas.get("openblas_coretype") else ""))
    if blas.get("warning"):
        lines.append(f"note       {blas['warning']}")
    lines.append(f"({r['timing']}; {r['flop_convention']}; {r['threads']} threads)")
    return "\n".join(lines)


def layer_profile(model, batch: int = 64, steps: int = 20) -> list[dict]:
    """Per scheduled layer: median forward and backward time of a training step and the
    GFLOP/s they reach (forward 2 x MACs, backward 4 x MACs: input and weight gradients).
    A ReLU fused into its conv, fc or bn, and a residual add fused into its bn, are timed with it."""
    net, prog, train_step = training_setup(model, batch)
    times: dict[str, tuple[list, list]] = {n: ([], []) for n in prog.ops}
    for n, op in prog.ops.items():
        fwd, bwd = op.forward, op.backward

        def timed_forward(xs, y, training, fwd=fwd, acc=times[n][0]):
            t = time.perf_counter()
            fwd(xs, y, training)
            acc.append(time.perf_counter() - t)

        def timed_backward(xs, y, dy, dxs, bwd=bwd, acc=times[n][1], **kw):
            t = time.perf_counter()
            bwd(xs, y, dy, dxs, **kw)  # kw: ``add``, for ops that add to shared gradients
            acc.append(time.perf_counter() - t)

        op.forward, op.backward = timed_forward, timed_backward  # instance attributes shadow
    try:
        for _ in range(3):
            train_step()
        for f, b in times.values():
            f.clear()
            b.clear()
        t = time.perf_counter()
        for _ in range(steps):
            train_step()
        step_s = (time.perf_counter() - t) / steps
    finally:
        for op in prog.ops.values():
            del op.forward, op.backward
    rows = []
    for s in net.plan.steps:
        f, b = times[s.node]
        fwd_s, bwd_s = statistics.median(f), statistics.median(b)
        macs = s.info.macs * batch
        rows.append({
            "layer": s.node, "type": s.layer.type.name + ("+add" if s.fused_add else "")
                    + ("+relu" if s.fused_relu else ""),
            "output": list(s.info.out_shape), "forward_ms": round(fwd_s * 1e3, 4),
            "backward_ms": round(bwd_s * 1e3, 4),
            "forward_gflops": round(2 * macs / fwd_s / 1e9, 2) if macs and fwd_s > 0 else None,
            "backward_gflops": round(4 * macs / bwd_s / 1e9, 2) if macs and bwd_s > 0 else None,
            "share": round((fwd_s + bwd_s) / step_s, 4),
        })
    return rows


def format_layer_profile(rows: list[dict], batch: int) -> str:
    head = ("layer", "type", "output", "fwd ms", "fwd GFLOP/s", "bwd ms", "bwd GFLOP/s", "share")
    table = [head]
    for r in rows:
        table.append((r["layer"], r["type"], "x".join(map(str, r["output"])), f"{r['forward_ms']:.3f}",
                      f"{r['forward_gflops']:.1f}" if r["forward_gflops"] else "-",
                      f"{r['backward_ms']:.3f}",
                      f"{r['backward_gflops']:.1f}" if r["backward_gflops"] else "-", f"{r['share']:.1%}"))
    return "\n".join([f"per layer, training step at batch {batch} (median; the rest of the step is the "
                      "loss, the optimizer and gradient sums)", *_columns(table)])


def _columns(table: list[tuple]) -> list[str]:
    """The rows of ``table`` (its first row the header) in aligned columns, a rule under the
    header; the first three columns (names) flush left, the numbers flush right."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for k, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def layer_profile_batch1(model, calls: int = 200, net=None) -> dict:
    """Per scheduled step of the inference plan (batch norm folded into the conv or fc
    before it, ReLUs fused): the median ms of its forward at batch 1, over ``calls`` runs of
    the bound kernel calls ``net.forward`` makes (:meth:`Executor.inference_calls`) on one
    image; with the median of a whole ``net.forward`` (timed without the per-layer timers)
    and the difference: the time spent between the kernels (input copy, batch-norm
    refolding, Python dispatch)."""
    net = model.network(seed=0) if net is None else net
    x1 = np.random.default_rng(0).standard_normal((1, *net.input_shape)).astype(net.dtype)
    whole_s = batch1_latency(net, x1, calls)
    ex = net.inference_executor(1)
    ex.input[...] = x1
    steps = list(zip(ex.plan.steps, ex.inference_calls()))  # what net.forward runs, bound
    times: dict[str, list] = {s.node: [] for s, _ in steps}
    for k in range(calls + 3):
        if ex.plan.inference:
            ex.refold()
        for s, (fn, args) in steps:
            t = time.perf_counter()
            fn(*args)
            if k >= 3:  # three rounds of warm-up
                times[s.node].append(time.perf_counter() - t)
    rows = []
    for s in ex.plan.steps:
        fwd_s = statistics.median(times[s.node])
        rows.append({"layer": s.node,
                     "type": s.layer.type.name + (f"+{s.folded_bn}" if s.folded_bn else "")
                     + ("+add" if s.fused_add else "") + ("+relu" if s.fused_relu else ""),
                     "output": list(s.info.out_shape), "forward_ms": round(fwd_s * 1e3, 4),
                     "share": round(fwd_s / whole_s, 4) if whole_s > 0 else None})
    layers_s = sum(r["forward_ms"] for r in rows) / 1e3
    return {"rows": rows, "calls": calls, "forward_ms": round(whole_s * 1e3, 4),
            "layers_sum_ms": round(layers_s * 1e3, 4), "between_ms": round((whole_s - layers_s) * 1e3, 4)}


def format_layer_profile_batch1(prof: dict) -> str:
    head = ("layer", "type", "output", "fwd ms", "share")
    table = [head] + [(r["layer"], r["type"], "x".join(map(str, r["output"])), f"{r['forward_ms']:.4f}",
                       f"{r['share']:.1%}" if r["share"] is not None else "-") for r in prof["rows"]]
    lines = [f"per layer, inference forward at batch 1 (median of {plural(prof['calls'], 'run')} of "
             "the forward's bound kernel calls on one image; batch norm folded into the layer "
             "before it)", *_columns(table)]
    whole = prof["forward_ms"]
    between = prof["between_ms"]
    lines.append(f"the layers sum to {prof['layers_sum_ms']:.4f} ms of a whole forward of {whole:.4f} ms: "
                 f"{between:.4f} ms ({between / whole:.0%}) between the kernels (input copy, batch-norm "
                 "refolding, Python dispatch)" if whole > 0 else "")
    return "\n".join(lines)
