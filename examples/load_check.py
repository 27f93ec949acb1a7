"""Training on a shared machine: LeNet-5 step time (batch 64) alone and beside busy processes.

    python examples/load_check.py                 # 0, 2 and 8 busy processes
    python examples/load_check.py --busy 0 1 2 4 8 --seconds 6

Each measurement is a fresh process that trains for ``--seconds`` on random data with cnnc's
default thread choice (the idle cores, re-counted every 2 s as ``cnnc train`` does) and, for
comparison, with 2 threads fixed (``--threads 2``). The busy processes are pure-Python spin
loops started before the measurement and stopped after it. Reported: the median step time
and the slowdown against the quiet machine. With k busy processes on c cores a process
that gets its fair share of the CPU runs at c / (k + 1) cores, so "fair" is the slowdown
that share implies for a step that uses all c cores alone: (k + 1) / c, at least 1.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet5.cnn"


def worker(threads: str, seconds: float) -> dict:
    import cnnc
    from cnnc.tools.bench import training_setup
    from cnnc.kernels import threads as th

    th.configure(None if threads == "auto" else int(threads))
    model = cnnc.compile_file(MODEL)
    _, _, step = training_setup(model, 64)
    for _ in range(5):
        step()
    times = []
    end = time.perf_counter() + seconds
    next_adapt = time.perf_counter() + 2.0
    while time.perf_counter() < end:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if t > next_adapt:
            th.adapt()
            next_adapt = t + 2.0
    return {"step_ms": statistics.median(times) * 1e3, "steps": len(times),
            "threads_at_end": th.adapt()}


def measure(busy: int, threads: str, seconds: float) -> dict:
    env = dict(os.environ)
    for var in ("CNNC_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(var, None)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)
        out = subprocess.run([sys.executable, __file__, "--worker", threads, str(seconds)], env=env,
                             capture_output=True, text=True, timeout=600)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if out.returncode != 0:
        sys.exit(f"worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2, 8],
                    help="numbers of busy processes to measure beside (default 0 2 8)")
    ap.add_argument("--seconds", type=float, default=5.0, help="training time per measurement")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], float(args.worker[1]))))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for busy in sorted(set([0] + args.busy)):
        for threads in ("auto", "2"):
            r = measure(busy, threads, args.seconds)
            rows.append({"busy": busy, "threads": threads, **r})
    quiet = {r["threads"]: r["step_ms"] for r in rows if r["busy"] == 0}
    for r in rows:
        r["slowdown"] = r["step_ms"] / quiet[r["threads"]]
        r["fair"] = max(1.0, (r["busy"] + 1) / cores)
    if args.json:
        print(json.dumps({"cores": cores, "rows": rows}, indent=2))
        return
    print(f"LeNet-5 training step, batch 64, on {cores} cores (median step time)")
    print(f"{'busy':>4}  {'threads':>8}  {'step ms':>8}  {'slowdown':>8}  {'fair share':>10}  threads at end")
    for r in rows:
        print(f"{r['busy']:>4}  {r['threads']:>8}  {r['step_ms']:8.2f}  {r['slowdown']:7.1f}x  "
              f"{r['fair']:9.1f}x  {r['threads_at_end']}")


if __name__ == "__main__":
    main()
