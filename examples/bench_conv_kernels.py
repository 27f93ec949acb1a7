"""Benchmark cnnc's conv kernels against PyTorch (CPU, 2 threads) on LeNet-5 and VGG-ish layers.

    python examples/bench_conv_kernels.py [--reps 9] [--only lenet|vgg] [--threads 2]
                                          [--path auto|compact|wide|wino|direct]

PyTorch and Numba run in *separate processes* (two thread pools side by side stall each other,
see docs/performance.md).  Each figure is the median of ``--reps`` runs after warm-ups.  Passes:

* fwd    conv + bias + ReLU
* dw     weight+bias gradient only (what the first layer needs)
* dx+dw  full backward; ``dx`` is reported as (dx+dw) - dw

GFLOP/s counts 2*N*OH*OW*F*(C/groups)*KH*KW per pass (the direct-convolution count, also for
Winograd, whose figures are therefore "effective").  ``--path`` forces one conv path (sets
``CNNC_CONV_PATH``, docs/kernels.md); the default picks per layer (the direct micro-kernel,
Winograd F(4x4,3x3) for 3x3 stride-1 layers with enough channels, im2col otherwise).
"""

from __future__ import annotations

import os

# must precede the NumPy import (docs/performance.md): AVX-512 OpenBLAS kernels
if "OPENBLAS_CORETYPE" not in os.environ:
    try:
        with open("/proc/cpuinfo") as fh:
            if "avx512f" in fh.read():
                os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    except OSError:
        pass

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# name, N, C, H, W, F, K, stride, pad, first_layer
LAYERS = {
    "lenet": [
        ("LeNet conv1 1->6 5x5 @32", 64, 1, 32, 32, 6, 5, 1, 0, True),
        ("LeNet conv2 6->16 5x5 @14", 64, 6, 14, 14, 16, 5, 1, 0, False),
    ],
    "vgg": [
        ("VGG L1 3->32 @32", 128, 3, 32, 32, 32, 3, 1, 1, True),
        ("VGG L2 32->32 @32", 128, 32, 32, 32, 32, 3, 1, 1, False),
        ("VGG L3 32->64 @16", 128, 32, 16, 16, 64, 3, 1, 1, False),
        ("VGG L4 64->64 @16", 128, 64, 16, 16, 64, 3, 1, 1, False),
        ("VGG L5 64->128 @8", 128, 64, 8, 8, 128, 3, 1, 1, False),
        ("VGG L6 128->128 @8", 128, 128, 8, 8, 128, 3, 1, 1, False),
    ],
}


def _median_ms(fn, reps, warm=2):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def _data(N, C, H, W, F, K, s, p):
    rng = np.random.default_rng(0)
    OH = (H + 2 * p - K) // s + 1
    OW = (W + 2 * p - K) // s + 1
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = (0.1 * rng.standard_normal((F, C, K, K))).astype(np.float32)
    b = (0.1 * rng.standard_normal(F)).astype(np.float32)
    dy = rng.standard_normal((N, F, OH, OW), dtype=np.float32)
    return x, w, b, dy, OH, OW


def phase_torch(layers, reps, threads):
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, N, C, H, W, F, K, s, p, _first in layers:
        x, w, b, dy, OH, OW = _data(N, C, H, W, F, K, s, p)
        xt, wt, bt, dyt = map(torch.from_numpy, (x, w, b, dy))
        cb = torch.ops.aten.convolution_backward
        with torch.no_grad():
            fwd = _median_ms(lambda: torch.relu_(torch.nn.functional.conv2d(xt, wt, bt, s, p)),
                             reps)
            dw = _median_ms(lambda: cb(dyt, xt, wt, [F], [s, s], [p, p], [1, 1], False, [0, 0],
                                       1, [False, True, True]), reps)
            dxdw = _median_ms(lambda: cb(dyt, xt, wt, [F], [s, s], [p, p], [1, 1], False,
                                         [0, 0], 1, [True, True, True]), reps)
        out[name] = {"fwd": fwd, "dw": dw, "dxdw": dxdw}
    return out


def phase_numba(layers, reps, threads):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from cnnc.kernels import threads as runtime

    runtime.configure(threads)
    from cnnc.kernels import conv

    out = {}
    t0 = time.perf_counter()
    for name, N, C, H, W, F, K, s, p, _first in layers:
        x, w, b, dy, OH, OW = _data(N, C, H, W, F, K, s, p)
        y = np.empty((N, F, OH, OW), np.float32)
        dx = np.empty_like(x)
        dwt = np.empty_like(w)
        db = np.empty_like(b)
        geom = conv.ConvGeometry.square(stride=s, pad=p)
        ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, y.shape, geom), np.float32)
        dyc = dy.copy()

        def f():
            conv.conv2d_forward(x, w, b, y, ws, geom, True, True)

        def gw():
            conv.conv2d_backward(x, w, y, dyc, dx, dwt, db, ws, geom, True, True, False)

        def gxw():
            conv.conv2d_backward(x, w, y, dyc, dx, dwt, db, ws, geom, True, True, True)

        f()
        gxw()
        if t0 is not None:
            out["_first_call_s"] = time.perf_counter() - t0
            t0 = None
        out[name] = {"fwd": _median_ms(f, reps), "dw": _median_ms(gw, reps),
                     "dxdw": _median_ms(gxw, reps)}
    out["_blas"] = runtime.blas_info()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(LAYERS), default=None)
    ap.add_argument("--path", choices=["auto", "compact", "wide", "wino", "direct"], default="auto",
                    help="force one conv path (CNNC_CONV_PATH) for the Numba phase")
    ap.add_argument("--phase", choices=["torch", "numba"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    layers = LAYERS[args.only] if args.only else [l for v in LAYERS.values() for l in v]

    if args.phase:
        fn = phase_torch if args.phase == "torch" else phase_numba
        print(json.dumps(fn(layers, args.reps, args.threads)))
        return

    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    if args.path != "auto":
        env["CNNC_CONV_PATH"] = args.path
    res = {}
    for ph in ("torch", "numba"):
        cmd = [sys.executable, os.path.abspath(__file__), "--phase", ph, "--reps", str(args.reps),
               "--threads", str(args.threads)] + (["--only", args.only] if args.only else [])
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        except subprocess.CalledProcessError as e:
            if ph == "torch" and "No module named 'torch'" in e.stderr:
                print("(PyTorch not installed: Numba figures only)")
                res[ph] = None
                continue
            sys.stderr.write(e.stderr)
            raise
        res[ph] = json.loads(r.stdout.strip().splitlines()[-1])

    nb, tc = res["numba"], res["torch"]
    print(f"threads={args.threads}  path={args.path}  "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}  "
          f"numba first call (compile or cache load) {nb['_first_call_s']:.2f} s")
    hdr = (f"{'layer':28s} {'pass':5s} {'numba ms':>9s} {'GF/s':>6s} {'torch ms':>9s} {'GF/s':>6s}"
           f" {'speed vs torch':>14s}")
    print(hdr)
    print("-" * len(hdr))
    tot = {"numba": 0.0, "torch": 0.0}
    for name, N, C, H, W, F, K, s, p, first in layers:
        OH = (H + 2 * p - K) // s + 1
        OW = (W + 2 * p - K) // s + 1
        gf = 2.0 * N * OH * OW * F * C * K * K / 1e9
        passes = [("fwd", lambda r: r["fwd"]), ("dw", lambda r: r["dw"]),
                  ("dx", lambda r: max(r["dxdw"] - r["dw"], 1e-3))]  # floor: timing noise
        for pname, get in passes:
            a = get(nb[name])
            line = f"{name:28s} {pname:5s} {a:9.3f} {gf / a * 1e3:6.0f}"
            if tc is not None:
                t = get(tc[name])
                line += f" {t:9.3f} {gf / t * 1e3:6.0f} {t / a:13.2f}x"
            print(line)
        used = ["fwd", "dxdw"] if not first else ["fwd", "dw"]
        tot["numba"] += sum(nb[name][k] for k in used)
        if tc is not None:
            tot["torch"] += sum(tc[name][k] for k in used)
        a = sum(nb[name][k] for k in used)
        line = f"{'':28s} {'train':5s} {a:9.3f} {'':6s}"
        if tc is not None:
            t = sum(tc[name][k] for k in used)
            line += f" {t:9.3f} {'':6s} {t / a:13.2f}x"
        print(line + ("   (fwd+dw: first layer)" if first else "   (fwd+dx+dw)"))
    if tc is not None:
        print(f"total training-pass time: numba {tot['numba']:.2f} ms, torch {tot['torch']:.2f} ms, "
              f"speed {tot['torch'] / tot['numba']:.2f}x")
    print("BLAS:", json.dumps(nb["_blas"]["blas"]))
    print("Note: timings are only meaningful on an otherwise idle machine; with another busy "
          "process the 2-thread pool stalls in multiples of the ~4 ms scheduler tick.")


if __name__ == "__main__":
    main()
