"""cnnc beside PyTorch (NCHW and channels_last) and ONNX Runtime on the CPU, on this machine.

    python examples/compare_torch.py                        # all four cases, 5 rounds
    python examples/compare_torch.py --models lenet5,resnet8 --rounds 3 --steps 10
    python examples/compare_torch.py --models lenet5 --rounds 1 --steps 2 --json

Cases: LeNet-5 (models/lenet5.cnn) at batch 64, the VGG-ish CIFAR net (models/vgg_cifar.cnn)
and ResNet-8 (models/resnet8.cnn) at batch 128, ResNet-18 (models/resnet18.cnn, 3x224x224) at
batch 16. ResNet-18 runs a fifth of ``--steps`` (at least 1) and one warm-up call, as one of
its training steps takes over a second.

What is measured, per case: a training step at the case's batch (forward, backward and an
SGD update with momentum 0.9 and weight decay 5e-4, cross-entropy loss), an inference batch
of the same size and inference on one image (latency). Runners:

- cnnc: ``net.step`` on an executor and the SGD optimizer (training), ``net.forward(x)``
  (inference, batch norm folded);
- PyTorch, NCHW and channels_last: the models of examples/torch_plain.py, written by hand
  (``nn.Sequential``, a ``BasicBlock`` module); ``model.train()`` / ``opt.zero_grad()``,
  ``F.cross_entropy``, ``backward()``, ``opt.step()`` for training, ``model.eval()`` under
  ``torch.inference_mode()`` for inference;
- ONNX Runtime (inference only): cnnc's own model, exported once per case with
  ``cnnc.export_onnx`` to a temporary file, run by an ``InferenceSession`` on the
  CPUExecutionProvider with 2 intra-op threads, 1 inter-op thread and the default graph
  optimization level (ORT_ENABLE_ALL).

How: every measurement runs in a fresh subprocess that imports only what its runner needs
(the PyTorch worker torch and numpy, not cnnc; the ONNX Runtime worker onnxruntime and
numpy; the harness checks the modules each worker loaded). Each worker times each function
as a loop of calls after a few warm-up calls (mean per call; ``--steps`` calls for the
training step and the batch, 10 x as many at batch 1). Rounds alternate the runners (cnnc,
PyTorch NCHW, PyTorch channels_last, ONNX Runtime, then again); the table shows the median
over the rounds. Everything uses 2 threads, float32 and the same random data of the model's
input shape. Before timing, the harness checks that each PyTorch model has exactly cnnc's
parameter count and that every runner's output has cnnc's shape, and stops otherwise.

Self-check: in every round the harness also runs examples/torch_plain.py (a plain PyTorch
script: a perf_counter loop, no subprocess machinery, no cnnc; NCHW) and reports whether
its medians are within 10% of the harness's PyTorch NCHW medians.

The ratios are speedups: the other framework's time over cnnc's (above 1: cnnc is faster),
against the faster PyTorch layout of that row and against ONNX Runtime. The report also
gives the date, the CPU, the versions, the machine's sgemm rate (NumPy, 2 threads), the
OpenBLAS kernel cnnc ran and the load average before and after. ``--json`` prints it all
as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parent
PLAIN = EXAMPLES / "torch_plain.py"
THREADS = 2
SELF_CHECK_TOLERANCE = 0.10
# stem of models/<stem>.cnn: (name, batch, steps divisor, warm-up calls)
CASES = {"lenet5": ("LeNet-5", 64, 1, 3),
         "vgg_cifar": ("[[conv3-relu]*2 - pool]*3 - fc (3x32x32)", 128, 1, 3),
         "resnet8": ("ResNet-8", 128, 1, 3),
         "resnet18": ("ResNet-18 (3x224x224)", 16, 5, 1)}
KEYS = (("train_s", "training"), ("infer_s", "inference, batch {batch}"), ("infer1_s", "inference, batch 1"))
RUNNERS = (("cnnc", "-"), ("torch", "nchw"), ("torch", "channels_last"), ("ort", "-"))
RUNNER_LABEL = {"cnnc/-": "cnnc", "torch/nchw": "PyTorch NCHW", "torch/channels_last": "PyTorch channels_last",
                "ort/-": "ONNX Runtime"}
# what each worker may import (top-level packages among these); checked after every run
WATCHED = ("cnnc", "numba", "torch", "onnxruntime", "onnx")
ALLOWED = {"cnnc": {"cnnc", "numba"}, "torch": {"torch"}, "ort": {"onnxruntime"}, "prepare": set(WATCHED)}


# ------------------------------------------------------------------------------- workers

def _timed(fn, calls: int, warmup: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls, after ``warmup`` calls (at least
    a tenth of ``calls``: short calls need their thread pools and caches warm)."""
    for _ in range(max(warmup, calls // 10)):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def _data(spec: dict):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((spec["batch"], *spec["input_shape"]), dtype=np.float32)
    y = rng.integers(0, spec["classes"], spec["batch"])
    return x, y, x[:1].copy()


def worker_prepare(spec: dict) -> dict:
    """cnnc's facts about the case (parameters, shapes, MACs), and its ONNX export."""
    import cnnc

    model = cnnc.compile_file(spec["path"])
    out = {"params": model.summary.total_params, "macs": model.summary.total_macs,
           "input_shape": list(model.input_shape), "classes": model.classes, "onnx": None}
    if spec.get("onnx"):
        try:
            import onnx  # noqa: F401  (export needs it)
        except ImportError:
            return out
        cnnc.set_compile_notice(False)
        cnnc.export_onnx(model.network(seed=0), spec["onnx"])
        out["onnx"] = spec["onnx"]
    return out


def worker_cnnc(spec: dict) -> dict:
    import cnnc
    from cnnc.runtime.optim import Optimizer

    cnnc.set_compile_notice(False)
    model = cnnc.compile_file(spec["path"])
    x, y, x1 = _data(spec)
    net = model.network(seed=0)
    prog = net.executor(spec["batch"])
    prog.input[...] = x
    prog.labels[...] = y
    opt = Optimizer("sgd", net.theta, net.grad, momentum=0.9, weight_decay=5e-4)

    def train():
        net.step(prog)
        opt.step(1e-3)

    from threadpoolctl import threadpool_info

    out = {"output_shape": list(net.forward(x).shape), "params": model.summary.total_params,
           "blas": sorted({f"{i.get('internal_api')}/{i.get('architecture')}" for i in threadpool_info()
                           if i.get("user_api") == "blas"})}
    return {**out, **_measure(spec, train, lambda: net.forward(x), lambda: net.forward(x1))}


def worker_torch(spec: dict, layout: str) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(EXAMPLES))
    from torch_plain import MODELS  # hand-written models; that module imports only torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    build, shape, classes = MODELS[spec["model"]]
    model = build()
    xn, yn, x1n = _data(spec)
    # copies in torch's own (64-byte aligned) memory, as torch.randn would give
    x, y, x1 = (torch.from_numpy(a).clone() for a in (xn, yn, x1n))
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        x1 = x1.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def train():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer(inp):
        with torch.inference_mode():
            return model(inp)

    model.eval()
    out = {"output_shape": list(infer(x).shape), "params": sum(p.numel() for p in model.parameters()),
           "threads": torch.get_num_threads()}
    model.train()
    times = {"train_s": _timed(train, spec["steps"], spec["warmup"])}
    model.eval()
    times["infer_s"] = _timed(lambda: infer(x), spec["steps"], spec["warmup"])
    times["infer1_s"] = _timed(lambda: infer(x1), spec["calls1"], spec["warmup"])
    return {**out, **times}


def worker_ort(spec: dict) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(spec["onnx"], so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x, _, x1 = _data(spec)
    out = {"output_shape": list(sess.run(None, {name: x})[0].shape), "version": ort.__version__,
           "providers": sess.get_providers()}
    return {**out, "infer_s": _timed(lambda: sess.run(None, {name: x}), spec["steps"], spec["warmup"]),
            "infer1_s": _timed(lambda: sess.run(None, {name: x1}), spec["calls1"], spec["warmup"])}


def _measure(spec: dict, train, infer_batch, infer_one) -> dict:
    return {"train_s": _timed(train, spec["steps"], spec["warmup"]),
            "infer_s": _timed(infer_batch, spec["steps"], spec["warmup"]),
            "infer1_s": _timed(infer_one, spec["calls1"], spec["warmup"])}


def run_worker(kind: str, layout: str, spec: dict) -> dict:
    if kind == "prepare":
        out = worker_prepare(spec)
    elif kind == "cnnc":
        out = worker_cnnc(spec)
    elif kind == "torch":
        out = worker_torch(spec, layout)
    elif kind == "ort":
        out = worker_ort(spec)
    else:
        raise ValueError(kind)
    out["modules"] = sorted({m.split(".")[0] for m in sys.modules} & set(WATCHED))
    return out


def sgemm_rate() -> float:
    """GFLOP/s of a 2048^3 float32 matrix product in NumPy on 2 threads (best of 5)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):
        a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
        a @ a
        best = min(_timed(lambda: a @ a, 1, 0) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


# ------------------------------------------------------------------------------- harness

class HarnessError(Exception):
    pass


def _spawn(args: list[str], env: dict, what: str) -> dict:
    out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise HarnessError(f"{what} failed (exit status {out.returncode}):\n{out.stderr.strip()}")
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise HarnessError(f"{what} printed no JSON result:\n{out.stdout}\n{out.stderr}") from None


def spawn_worker(kind: str, layout: str, spec: dict, env: dict) -> dict:
    r = _spawn([__file__, "--worker", kind, layout, json.dumps(spec)], env, f"the {kind} ({layout}) worker")
    extra = set(r["modules"]) - ALLOWED[kind]
    if extra:
        raise HarnessError(f"the {kind} ({layout}) worker imported {', '.join(sorted(extra))}: "
                           "each runner must run alone in its process")
    return r


def _check_shapes(case: dict, who: str, r: dict) -> None:
    want = [case["batch"], case["classes"]]
    if "params" in r and r["params"] != case["params"]:
        raise HarnessError(f"{case['file']}: {RUNNER_LABEL[who]} has {r['params']:,} parameters, cnnc "
                           f"{case['params']:,}: the hand-written model is not cnnc's architecture")
    if r["output_shape"] != want:
        raise HarnessError(f"{case['file']}: {RUNNER_LABEL[who]}'s output has shape {r['output_shape']}, "
                           f"expected {want}")


def measure_case(stem: str, rounds: int, steps: int, env: dict, with_ort: bool, tmp: str,
                 self_check: bool = True) -> dict:
    name, batch, divisor, warmup = CASES[stem]
    path = ROOT / "models" / f"{stem}.cnn"
    case_steps = max(1, steps // divisor)
    spec = {"model": stem, "path": str(path), "batch": batch, "steps": case_steps,
            "calls1": 10 * case_steps, "warmup": warmup,
            "onnx": str(Path(tmp) / f"{stem}.onnx") if with_ort else None}
    facts = spawn_worker("prepare", "-", spec, env)
    spec.update(input_shape=facts["input_shape"], classes=facts["classes"], onnx=facts["onnx"])
    runners = [r for r in RUNNERS if r[0] != "ort" or facts["onnx"]]
    case = {"model": name, "file": f"models/{stem}.cnn", "batch": batch, "params": facts["params"],
            "classes": facts["classes"], "input_shape": facts["input_shape"],
            "macs_per_image": facts["macs"], "steps": case_steps, "batch1_calls": 10 * case_steps,
            "warmup_calls": warmup, "onnx_runtime": bool(facts["onnx"])}
    runs: dict[str, dict[str, list[float]]] = {f"{fw}/{lay}": {k: [] for k, _ in KEYS} for fw, lay in runners}
    plain_runs: dict[str, list[float]] = {k: [] for k, _ in KEYS}
    for _ in range(rounds):
        for fw, lay in runners:
            who = f"{fw}/{lay}"
            r = spawn_worker(fw, lay, spec, env)
            _check_shapes(case, who, r)
            for k, _ in KEYS:
                if k in r:
                    runs[who][k].append(r[k])
            if fw == "cnnc":
                case["cnnc_blas"] = r["blas"]
        if self_check:  # the plain script takes its turn in every round, as the runners do
            for k, v in run_plain(spec, env).items():
                plain_runs[k].append(v)
    for k, _ in KEYS:
        med = {who: statistics.median(v[k]) for who, v in runs.items() if v[k]}
        best = min(("torch/nchw", "torch/channels_last"), key=med.get)
        row = {"cnnc_ms": _ms(med["cnnc/-"]), "torch_nchw_ms": _ms(med["torch/nchw"]),
               "torch_channels_last_ms": _ms(med["torch/channels_last"]),
               "ort_ms": _ms(med["ort/-"]) if "ort/-" in med else None,
               "torch_best": best.split("/")[1], "ratio": round(med[best] / med["cnnc/-"], 3),
               "ratio_ort": round(med["ort/-"] / med["cnnc/-"], 3) if "ort/-" in med else None,
               "rounds_ms": {who: [_ms(t) for t in v[k]] for who, v in runs.items() if v[k]}}
        case[k] = row
    if self_check:
        case["self_check"] = self_check_result(case, {k: statistics.median(v) for k, v in plain_runs.items()})
    return case


def run_plain(spec: dict, env: dict) -> dict:
    """examples/torch_plain.py once (NCHW, a process of its own): seconds per call by key."""
    r = _spawn([str(PLAIN), spec["model"], "--batch", str(spec["batch"]), "--steps", str(spec["steps"]),
                "--batch1-calls", str(spec["calls1"]), "--warmup", str(spec["warmup"]),
                "--threads", str(THREADS)], env, "examples/torch_plain.py")
    return {"train_s": r["train_ms"] / 1e3, "infer_s": r["infer_ms"] / 1e3, "infer1_s": r["infer1_ms"] / 1e3}


def self_check_result(case: dict, plain: dict) -> dict:
    """The plain script's medians (seconds by key) against the harness's PyTorch NCHW medians."""
    deviation = {k: round(plain[k] * 1e3 / case[k]["torch_nchw_ms"] - 1, 4) for k, _ in KEYS}
    worst = max(abs(d) for d in deviation.values())
    return {"plain_ms": {k: _ms(v) for k, v in plain.items()}, "deviation": deviation,
            "max_deviation": worst, "tolerance": SELF_CHECK_TOLERANCE, "ok": worst <= SELF_CHECK_TOLERANCE}


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f} ms" if v < 10 else f"{v:.2f} ms" if v < 100 else f"{v:.1f} ms"


def _fmt_ratio(v: float) -> str:
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def format_table(report: dict) -> str:
    m = report["machine"]
    v = report["versions"]
    lines = [f"compare_torch.py, {report['date']}",
             f"machine: {m['cpu']}, {m['cores']} cores; sgemm {report['sgemm_gflops_2_threads']:.0f} GFLOP/s "
             "(NumPy, 2048^3 float32, 2 threads)",
             "versions: " + ", ".join(f"{k} {v[k]}" for k in v),
             f"load average before: {report['load_before']}"]
    if float(report["load_before"].split()[0]) >= m["cores"]:
        lines.append(f"!! the machine was busy before the run (1-minute load average {report['load_before'].split()[0]} "
                     f"on {m['cores']} cores): thread pools that wait for each other lose whole scheduler "
                     "time slices, so these times are not a benchmark of the frameworks")
    lines.append("")
    head = ("", "cnnc", "PyTorch NCHW", "PyTorch channels_last", "ONNX Runtime",
            "cnnc vs better PyTorch", "cnnc vs ONNX Runtime")
    for c in report["cases"]:
        lines.append(f"{c['model']} ({c['file']}), batch {c['batch']}: {c['params']:,} parameters (the PyTorch "
                     f"models' too), output {c['batch']}x{c['classes']}; {c['steps']} steps per timing, "
                     f"{c['batch1_calls']} calls at batch 1")
        table = [head]
        for k, label in KEYS:
            r = c[k]
            table.append((label.format(batch=c["batch"]), _fmt_ms(r["cnnc_ms"]), _fmt_ms(r["torch_nchw_ms"]),
                          _fmt_ms(r["torch_channels_last_ms"]),
                          _fmt_ms(r["ort_ms"]) if r["ort_ms"] is not None
                          else ("(inference only)" if k == "train_s" else "(not run)"),
                          f"{_fmt_ratio(r['ratio'])} (vs {'NCHW' if r['torch_best'] == 'nchw' else 'channels_last'})",
                          _fmt_ratio(r["ratio_ort"]) if r["ratio_ort"] is not None else "-"))
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        for row in table:
            lines.append("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                          for i, (cell, w) in enumerate(zip(row, widths))))
        sc = c.get("self_check")
        if sc:
            pct = f"{sc['max_deviation']:.0%}" if sc["max_deviation"] >= 0.01 else "1%"
            plain = sc["plain_ms"]
            detail = (f"(torch_plain.py: training {_fmt_ms(plain['train_s'])}, inference "
                      f"{_fmt_ms(plain['infer_s'])}, batch 1 {_fmt_ms(plain['infer1_s'])})")
            if sc["ok"]:
                lines.append(f"  self-check: PyTorch numbers within {pct} of examples/torch_plain.py {detail}")
            else:
                worst = max(sc["deviation"], key=lambda k: abs(sc["deviation"][k]))
                label = dict(KEYS)[worst].format(batch=c["batch"])
                lines.append(f"  !! SELF-CHECK FAILED: PyTorch NCHW numbers differ by up to {pct} ({label}) "
                             f"from examples/torch_plain.py {detail}, over the "
                             f"{SELF_CHECK_TOLERANCE:.0%} allowed: treat this case's PyTorch columns "
                             "with suspicion (a busy machine, or too few --steps/--rounds)")
        lines.append("")
    lines.append("ratios: the other framework's time / cnnc's time (above 1: cnnc is faster); 'better "
                 "PyTorch' is the faster layout of that row")
    lines.append(f"times: medians of {report['rounds']} alternating rounds (cnnc, PyTorch NCHW, PyTorch "
                 "channels_last, ONNX Runtime; each a fresh process), each the mean of a timed loop after "
                 f"warm-up calls; {THREADS} threads, float32, random data; training = SGD momentum 0.9, "
                 "weight decay 5e-4, cross-entropy")
    blas = report["cases"][0].get("cnnc_blas", []) if report["cases"] else []
    lines.append("cnnc's BLAS (OpenBLAS kernel): " + ", ".join(blas)
                 + ("; OPENBLAS_CORETYPE kept from the environment" if report["keep_blas_env"] else ""))
    lines.append(f"load average after: {report['load_after']}")
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("cnnc", "torch", "onnxruntime", "numba", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="examples:" + "\n".join(__doc__.splitlines()[1:5]))
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is shown (default 5)")
    ap.add_argument("--steps", type=int, default=20,
                    help="timed training steps and inference batches per measurement, 10 x as many "
                         "calls at batch 1 (default 20; ResNet-18 a fifth)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help=f"cases to measure, by model file stem, comma- or space-separated "
                         f"({', '.join(CASES)}; default: all)")
    ap.add_argument("--no-self-check", action="store_true", help="skip the run of examples/torch_plain.py")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment (by default "
                         "they are removed, so OpenBLAS and cnnc pick the kernels for this CPU as on "
                         "a machine that does not set them)")
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "LAYOUT", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, layout, spec = args.worker
        print(json.dumps(run_worker(kind, layout, json.loads(spec))))
        return
    models = [m for item in (args.models or list(CASES)) for m in item.split(",") if m]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        sys.exit("compare_torch.py compares cnnc with PyTorch, which is not installed here:\n"
                 "  pip install torch==2.13.0   (the CPU build this project measures against)")
    with_ort = all(importlib.util.find_spec(p) is not None for p in ("onnxruntime", "onnx"))
    if not with_ort:
        print("onnxruntime or onnx is not installed: the ONNX Runtime column is left out "
              "(pip install onnx onnxruntime)", file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), NUMBA_NUM_THREADS=str(THREADS),
               CNNC_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    if not args.keep_blas_env:
        # some machines set these to pin OpenBLAS to older kernels; without them cnnc picks
        # the AVX-512 ones where the CPU has them (cnnc/kernels/environment.py)
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = _load()
    rate = float(subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); "
                                 "from compare_torch import sgemm_rate; print(sgemm_rate())" % str(EXAMPLES)],
                                env=env, capture_output=True, text=True, check=True).stdout)
    try:
        with tempfile.TemporaryDirectory(prefix="compare-torch-") as tmp:
            cases = [measure_case(m, args.rounds, args.steps, env, with_ort, tmp,
                                  self_check=not args.no_self_check) for m in models]
    except HarnessError as err:
        sys.exit(f"compare_torch.py: {err}")
    report = {"date": date, "machine": machine(), "versions": versions(),
              "sgemm_gflops_2_threads": round(rate, 1), "keep_blas_env": args.keep_blas_env,
              "rounds": args.rounds, "steps": args.steps, "threads": THREADS,
              "load_before": load_before, "load_after": _load(), "cases": cases}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(format_table(report))


if __name__ == "__main__":
    main()
