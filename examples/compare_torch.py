"""Training throughput of cnnc vs PyTorch (CPU), side by side on this machine.

    python examples/compare_torch.py            # LeNet-5 @ batch 64, VGG-ish CIFAR net @ batch 128
    python examples/compare_torch.py --rounds 5 --steps 30

Each measurement runs in its own subprocess (PyTorch's and Numba's thread pools fight when
they share a process, PERF.md section 0), alternating cnnc and PyTorch for several rounds;
the median of the rounds is reported. Both use 2 threads, float32, SGD with momentum 0.9 and
weight decay 5e-4, random data of the model's input shape, the same architecture (the
PyTorch model is built from the cnnc layer graph). Also measures the machine's sgemm rate
(NumPy, 2 threads) to put the achieved GFLOP/s in context.
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
CASES = [("LeNet-5", ROOT / "models" / "lenet5.cnn", 64, 1.0),
         ("[[conv3-relu]*2 - pool]*3 - fc", ROOT / "models" / "vgg_cifar.cnn", 128, 0.5)]


def torch_model(model):
    """An nn.Module that evaluates the cnnc graph node by node (NCHW, same layouts)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    from cnnc.graph import INPUT

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.order = []
            self.mods = nn.ModuleDict()
            a = model.analysis
            for n in a.order:
                layer = a.layer(n)
                info = a.info[n]
                cfg = layer.config
                kind = layer.type.name
                in_shape = a.shapes[a.inputs(n)[0]]
                if kind == "conv":
                    f = info.out_shape[0]
                    self.mods[n] = nn.Conv2d(in_shape[0], f, cfg.size, cfg.stride, cfg.padding(),
                                             cfg.dilation, cfg.groups, cfg.bias)
                elif kind == "fc":
                    self.mods[n] = nn.Linear(info.params[0].shape[1], info.out_shape[0], cfg.bias)
                elif kind == "bn":
                    self.mods[n] = (nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d)(
                        in_shape[0], eps=cfg.eps, momentum=cfg.momentum)
                self.order.append((n, kind, cfg, tuple(a.inputs(n))))

        def forward(self, x):
            vals = {INPUT: x}
            for n, kind, cfg, ins in self.order:
                a = vals[ins[0]]
                if kind in ("conv", "bn"):
                    y = self.mods[n](a)
                elif kind == "fc":
                    y = self.mods[n](a.flatten(1))
                elif kind == "relu":
                    y = F.relu(a)
                elif kind == "maxpool":
                    y = F.max_pool2d(a, cfg.size, cfg.step, cfg.pad, ceil_mode=cfg.round == "ceil")
                elif kind == "avgpool":
                    y = F.avg_pool2d(a, cfg.size, cfg.step, cfg.pad, ceil_mode=cfg.round == "ceil",
                                     count_include_pad=False)
                elif kind == "gap":
                    y = a.mean(dim=(2, 3))
                elif kind == "flatten":
                    y = a.flatten(1)
                elif kind == "dropout":
                    y = F.dropout(a, cfg.p, self.training)
                elif kind == "add":
                    y = sum(vals[i] for i in ins)
                elif kind == "concat":
                    y = torch.cat([vals[i] for i in ins], dim=1)
                elif kind == "softmax":
                    y = a
                else:
                    raise NotImplementedError(kind)
                vals[n] = y
            return vals[n]

    return Net()


def worker(framework: str, path: str, batch: int, steps: int) -> dict:
    import numpy as np

    import cnnc

    model = cnnc.compile_file(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, model.classes, batch)
    if framework == "torch":
        import torch

        torch.set_num_threads(2)
        net = torch_model(model)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()
    else:
        from cnnc.optim import Optimizer

        net = model.network(seed=0)
        prog = net.executor(batch)
        prog.input[...] = x
        prog.labels[...] = y
        opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9, weight_decay=5e-4)

        def step():
            net.step(prog)
            opt.step(1e-3)

    for _ in range(5):
        step()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) / steps)
    return {"step_s": min(times), "macs": model.summary.total_macs}


def sgemm_rate() -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=4, metavar=("FRAMEWORK", "MODEL", "BATCH", "STEPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fw, path, batch, steps = args.worker
        print(json.dumps(worker(fw, path, int(batch), int(steps))))
        return
    env = dict(os.environ, OMP_NUM_THREADS="2", NUMBA_NUM_THREADS="2")
    rate = float(subprocess.run([sys.executable, "-c", "import cnnc, sys; sys.path.insert(0, %r); "
                                 "from compare_torch import sgemm_rate; print(sgemm_rate())"
                                 % str(Path(__file__).parent)], env=env, capture_output=True,
                                text=True, check=True).stdout)
    report = {"sgemm_gflops_2_threads": round(rate, 1), "cases": []}
    for name, path, batch, target in CASES:
        runs = {"cnnc": [], "torch": []}
        macs = 0
        for _ in range(args.rounds):
            for fw in ("cnnc", "torch"):
                out = subprocess.run([sys.executable, __file__, "--worker", fw, str(path), str(batch),
                                      str(args.steps)], env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{fw} worker failed:\n{out.stderr}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                runs[fw].append(r["step_s"])
                macs = r["macs"]
        c, t = statistics.median(runs["cnnc"]), statistics.median(runs["torch"])
        gflops = 6 * macs * batch / c / 1e9
        report["cases"].append({
            "model": name, "batch": batch, "cnnc_images_per_s": round(batch / c, 1),
            "torch_images_per_s": round(batch / t, 1), "ratio": round(t / c, 3), "target": target,
            "cnnc_ms_per_step": round(c * 1e3, 3), "torch_ms_per_step": round(t * 1e3, 3),
            "cnnc_gflops": round(gflops, 1), "fraction_of_sgemm": round(gflops / rate, 3),
            "cnnc_runs_ms": [round(v * 1e3, 3) for v in runs["cnnc"]],
            "torch_runs_ms": [round(v * 1e3, 3) for v in runs["torch"]]})
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"machine sgemm (NumPy, 2 threads, 2048^3): {rate:.0f} GFLOP/s")
    for r in report["cases"]:
        print(f"{r['model']} @ batch {r['batch']}: cnnc {r['cnnc_images_per_s']:,.0f} img/s "
              f"({r['cnnc_ms_per_step']:.2f} ms/step), PyTorch {r['torch_images_per_s']:,.0f} img/s "
              f"({r['torch_ms_per_step']:.2f} ms/step): ratio {r['ratio']:.2f}x (target {r['target']}x); "
              f"cnnc {r['cnnc_gflops']:.0f} GFLOP/s = {r['fraction_of_sgemm']:.0%} of sgemm")


if __name__ == "__main__":
    main()
