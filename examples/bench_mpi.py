"""Data-parallel training speed: 1 process (2 threads) against 2 MPI ranks (1 thread each).

    python examples/bench_mpi.py                 # LeNet-5 (batch 64) and the VGG-ish net (batch 128)
    python examples/bench_mpi.py --steps 30

For each model it times the training step (forward, backward, gradient Allreduce, SGD) on
random data, median over steps after warm-up, and reports images/s, the share of the step
spent in the Allreduce, and the Allreduce time of a flat float32 array of ResNet-18's
11.7 M parameters. The 2-rank figures run under ``mpiexec -n 2 python -m mpi4py`` (the
``mpi`` extra); each rank times its own steps, and the slower rank's median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"lenet5": (ROOT / "models" / "lenet5.cnn", 64),
          "vgg_cifar": (ROOT / "models" / "vgg_cifar.cnn", 128)}
RESNET18_PARAMS = 11_689_512


def worker(name: str, steps: int, warmup: int) -> None:
    """One rank (or the single process): time ``steps`` training steps of ``name``."""
    import numpy as np

    import cnnc
    from cnnc.runtime.distributed import world
    from cnnc.kernels.threads import configure
    from cnnc.runtime.optim import Optimizer

    w = world()
    configure(int(os.environ.get("CNNC_THREADS", "1")))
    path, batch = MODELS[name]
    model = cnnc.compile_file(path)
    net = model.network(seed=0)
    opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9)
    local = batch // w.size
    ex = net.executor(local)
    for op in ex.ops.values():
        op.join(w)
    rng = np.random.default_rng(w.rank)
    ex.input[...] = rng.standard_normal(ex.input.shape, dtype=np.float32)
    ex.labels[...] = rng.integers(0, net.classes, local)
    step_s, comm_s = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        net.step(ex)
        t1 = time.perf_counter()
        w.allreduce_sum(net.grad)
        net.grad *= 1.0 / w.size
        t2 = time.perf_counter()
        opt.step(0.01)
        t3 = time.perf_counter()
        if i >= warmup:
            step_s.append(t3 - t0)
            comm_s.append(t2 - t1)
    result = np.array([np.median(step_s), np.median(comm_s)])
    if w.size > 1:  # the job is as fast as its slower rank
        from mpi4py import MPI

        w.comm.Allreduce(MPI.IN_PLACE, result, op=MPI.MAX)
    big = np.ones(RESNET18_PARAMS, np.float32)
    times = []
    for _ in range(7 if w.size > 1 else 0):
        t = time.perf_counter()
        w.allreduce_sum(big)
        times.append(time.perf_counter() - t)
    if w.is_root:
        print(json.dumps({"model": name, "ranks": w.size, "threads": int(os.environ.get("CNNC_THREADS", "1")),
                          "batch": batch, "step_ms": 1e3 * result[0], "allreduce_ms": 1e3 * result[1],
                          "images_per_s": batch / result[0],
                          "allreduce_fraction": result[1] / result[0],
                          "resnet18_allreduce_ms": 1e3 * float(np.median(times)) if times else None}))


def run(name: str, ranks: int, steps: int, warmup: int) -> dict:
    threads = max(1, (os.cpu_count() or 1) // ranks)
    env = dict(os.environ, CNNC_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps), "--warmup", str(warmup)]
    if ranks > 1:
        from cnnc.runtime.distributed import find_mpiexec

        cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", *cmd[1:]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.warmup)
    rows = [run(name, ranks, args.steps, args.warmup) for name in MODELS for ranks in (1, 2)]
    print(f"{'model':10} {'ranks':>5} {'threads':>7} {'batch':>5} {'step ms':>8} {'img/s':>7} "
          f"{'allreduce ms':>12} {'share':>6}")
    for r in rows:
        print(f"{r['model']:10} {r['ranks']:5d} {r['threads']:7d} {r['batch']:5d} {r['step_ms']:8.2f} "
              f"{r['images_per_s']:7.0f} {r['allreduce_ms']:12.3f} {r['allreduce_fraction']:6.1%}")
    big = [r["resnet18_allreduce_ms"] for r in rows if r["resnet18_allreduce_ms"]]
    print(f"Allreduce of ResNet-18's {RESNET18_PARAMS:,} float32 gradients over 2 ranks: "
          f"{min(big):.1f} ms (median of 7, best of {len(big)} jobs)")
    print(json.dumps(rows, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
