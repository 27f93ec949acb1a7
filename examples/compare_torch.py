"""Training throughput of cnnc vs PyTorch (CPU), side by side on this machine.

    python examples/compare_torch.py            # LeNet-5 @ batch 64, VGG-ish CIFAR net @ batch 128
    python examples/compare_torch.py --rounds 5 --steps 30

Each measurement runs in its own subprocess (PyTorch's and Numba's thread pools fight when
they share a process, docs/performance.md), alternating cnnc and PyTorch for several rounds;
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
CASES = [("LeNet-5", ROOT / "models" / "lenet5.cnn", 64, 1.5),
         ("[[conv3-relu]*2 - pool]*3 - fc (3x32x32)", ROOT / "models" / "vgg_cifar.cnn", 128, 1.2),
         ("ResNet-8", ROOT / "models" / "resnet8.cnn", 128, 1.2)]


def torch_model(model):
    """An nn.Module that evaluates the cnnc graph node by node (NCHW, same layouts)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    from cnnc.lang.graph import INPUT

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


def worker(framework: str, layout: str, path: str, batch: int, steps: int) -> dict:
    """Training step, inference batch and batch-1 latency, in seconds (best of 3 runs of
    ``steps``), for one framework (and PyTorch memory layout) in this process."""
    import numpy as np

    import cnnc

    model = cnnc.compile_file(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, model.classes, batch)
    x1 = x[:1].copy()
    if framework == "torch":
        import torch

        torch.set_num_threads(2)
        net = torch_model(model)
        xt, yt, x1t = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x1)
        if layout == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            xt = xt.contiguous(memory_format=torch.channels_last)
            x1t = x1t.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def train():
            net.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()

        def infer(inp):
            net.eval()
            with torch.inference_mode():
                return net(inp)

        def infer_batch():
            infer(xt)

        def infer_one():
            infer(x1t)
    else:
        from cnnc.runtime.optim import Optimizer

        net = model.network(seed=0)
        prog = net.executor(batch)
        prog.input[...] = x
        prog.labels[...] = y
        opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9, weight_decay=5e-4)

        def train():
            net.step(prog)
            opt.step(1e-3)

        def infer_batch():
            net.forward(x)

        def infer_one():
            net.forward(x1)

    from threadpoolctl import threadpool_info

    out = {"macs": model.summary.total_macs,
           "blas": sorted({f"{i.get('internal_api')}/{i.get('architecture')}" for i in threadpool_info()
                           if i.get("user_api") == "blas"})}
    for key, fn, n in (("train_s", train, steps), ("infer_s", infer_batch, steps),
                       ("infer1_s", infer_one, steps * 10)):
        for _ in range(5):
            fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t) / n)
        out[key] = min(times)
    return out


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


KEYS = (("train_s", "train"), ("infer_s", "inference"), ("infer1_s", "inference, batch 1"))
RUNNERS = (("cnnc", "-"), ("torch", "nchw"), ("torch", "channels_last"))


def measure(rounds: int, steps: int, env: dict, models: list[str] | None = None) -> list[dict]:
    """Alternating rounds: per model, each round runs cnnc, PyTorch NCHW and PyTorch
    channels_last, each in a fresh process (whole rounds alternate; the pools never meet).
    ``models``: the model files' stems to measure (default: all)."""
    cases = []
    for name, path, batch, target in CASES:
        if models and path.stem not in models:
            continue
        runs: dict[str, dict[str, list[float]]] = {f"{fw}/{lay}": {k: [] for k, _ in KEYS}
                                                   for fw, lay in RUNNERS}
        macs = 0
        blas: list[str] = []
        for _ in range(rounds):
            for fw, lay in RUNNERS:
                out = subprocess.run([sys.executable, __file__, "--worker", fw, lay, str(path), str(batch),
                                      str(steps)], env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{fw} ({lay}) worker failed:\n{out.stderr}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                for k, _ in KEYS:
                    runs[f"{fw}/{lay}"][k].append(r[k])
                macs = r["macs"]
                if fw == "cnnc":
                    blas = r["blas"]
        case = {"model": name, "batch": batch, "macs_per_image": macs, "train_target": target,
                "cnnc_blas": blas}
        for k, label in KEYS:
            med = {who: statistics.median(v[k]) for who, v in runs.items()}
            best = min(("torch/nchw", "torch/channels_last"), key=med.get)
            case[k] = {"cnnc_ms": round(med["cnnc/-"] * 1e3, 3),
                       "torch_nchw_ms": round(med["torch/nchw"] * 1e3, 3),
                       "torch_channels_last_ms": round(med["torch/channels_last"] * 1e3, 3),
                       "torch_best": best.split("/")[1],
                       "ratio": round(med[best] / med["cnnc/-"], 3),
                       "rounds_ms": {who: [round(t * 1e3, 3) for t in v[k]] for who, v in runs.items()}}
        cases.append(case)
    return cases


def format_table(report: dict) -> str:
    lines = ["| model | train cnnc / torch | inference cnnc / torch | inference batch 1 cnnc / torch |",
             "|---|---|---|---|"]
    for c in report["cases"]:
        cells = [f"{c[k]['ratio']:.2f}x" for k, _ in KEYS]
        lines.append(f"| {c['model']}, batch {c['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "ratio = time of PyTorch's better layout / time of cnnc (above 1: cnnc is faster)", ""]
    for c in report["cases"]:
        lines.append(f"{c['model']} @ batch {c['batch']}:")
        for k, label in KEYS:
            r = c[k]
            lines.append(f"  {label:<20} cnnc {r['cnnc_ms']:9.3f} ms   torch NCHW {r['torch_nchw_ms']:9.3f} ms   "
                         f"channels_last {r['torch_channels_last_ms']:9.3f} ms   -> {r['ratio']:.2f}x "
                         f"vs {r['torch_best']}")
    lines.append("")
    lines.append("cnnc's BLAS (OpenBLAS kernel): " + ", ".join(report["cases"][0]["cnnc_blas"])
                 + ("; OPENBLAS_CORETYPE kept from the environment" if report["keep_blas_env"] else ""))
    lines.append(f"medians of {report['rounds']} alternating rounds (each the best of 3 runs of "
                 f"{report['steps']} steps; batch 1: {10 * report['steps']} calls), 2 threads, random data, "
                 f"SGD momentum 0.9; machine sgemm {report['sgemm_gflops_2_threads']:.0f} GFLOP/s; "
                 f"load average before {report['load_before']}, after {report['load_after']} "
                 f"on {os.cpu_count()} cores")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    choices=[path.stem for _, path, _, _ in CASES],
                    help="measure only these models (default: all three)")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment (by default "
                         "they are removed, so OpenBLAS and cnnc pick the kernels for this CPU as on "
                         "a machine that does not set them)")
    ap.add_argument("--worker", nargs=5, metavar=("FRAMEWORK", "LAYOUT", "MODEL", "BATCH", "STEPS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fw, layout, path, batch, steps = args.worker
        print(json.dumps(worker(fw, layout, path, int(batch), int(steps))))
        return
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        sys.exit("compare_torch.py compares cnnc with PyTorch, which is not installed here:\n"
                 "  pip install torch==2.13.0   (the CPU build this project measures against)")
    env = dict(os.environ, OMP_NUM_THREADS="2", NUMBA_NUM_THREADS="2", CNNC_THREADS="2")
    if not args.keep_blas_env:
        # some machines set these to pin OpenBLAS to older kernels; without them cnnc picks
        # the AVX-512 ones where the CPU has them (cnnc/kernels/environment.py)
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rate = float(subprocess.run([sys.executable, "-c", "import cnnc, sys; sys.path.insert(0, %r); "
                                 "from compare_torch import sgemm_rate; print(sgemm_rate())"
                                 % str(Path(__file__).parent)], env=env, capture_output=True,
                                text=True, check=True).stdout)
    cases = measure(args.rounds, args.steps, env, args.models)
    report = {"sgemm_gflops_2_threads": round(rate, 1), "keep_blas_env": args.keep_blas_env, "rounds": args.rounds, "steps": args.steps,
              "load_before": load_before, "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
              "cases": cases}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(format_table(report))


if __name__ == "__main__":
    main()
