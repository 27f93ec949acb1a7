"""Time to accuracy: each recipe in models/ trained with several seeds, each run in a fresh
process, with its test accuracy and training seconds; optionally beside the same recipe in
PyTorch (examples/torch_recipe.py), alternating.

    python examples/recipes.py                                  # every recipe, seeds 0 1 2
    python examples/recipes.py --recipes mnist_fast --seeds 0 1 2
    python examples/recipes.py --torch --rounds 3               # mnist_fast vs PyTorch NCHW and channels_last

The seconds are cnnc's own (``seconds`` of ``cnnc train --json``: from the first step to
the end of the last validation; reading the data is not timed, the warm kernel cache's
loading is). Run it once before measuring so the kernel cache is warm (the first run's
compile is reported separately by ``cnnc bench``). Data: --data-dir or $CNNC_DATA
(default /work/shared/data).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: name -> (model file, target test accuracy, time budget in seconds)
RECIPES = {
    "mnist_fast": ("models/mnist_fast.cnn", 0.992, 30.0),
    "lenet5": ("models/lenet5.cnn", 0.992, None),
    "fashion_fast": ("models/fashion_fast.cnn", 0.92, 180.0),
    "digits": ("models/digits.cnn", None, None),
}


def load() -> str:
    """The 1-minute load average and the core count, for the log."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def run_cnnc(model: str, seed: int, data_dir: str, extra=()) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "cnnc", "train", str(ROOT / model), "--seed", str(seed),
               "--data-dir", data_dir, "--out", str(Path(out) / "run"), "--json", "--quiet", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CNNC_COMPILE_NOTICE="0"))
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
        m = json.loads(p.stdout)
        hist = json.loads((Path(out) / "run" / "history.json").read_text())
    m["history"] = [{"epoch": r["epoch"], "val_accuracy": r["val_accuracy"], "elapsed": r["elapsed"]}
                    for r in hist]
    return m


def run_torch(seed: int, layout: str, data_dir: str) -> dict:
    cmd = [sys.executable, str(ROOT / "examples" / "torch_recipe.py"), "--seed", str(seed),
           "--layout", layout, "--data-dir", data_dir]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--torch", action="store_true",
                   help="mnist_fast against examples/torch_recipe.py (NCHW and channels_last), alternating")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the --torch comparison (seeds 0..N-1)")
    p.add_argument("--data-dir", default=os.environ.get("CNNC_DATA", "/work/shared/data"))
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()}", flush=True)
    if args.torch:
        return compare(args)
    for name in args.recipes:
        model, target, budget = RECIPES[name]
        accs, secs = [], []
        for seed in args.seeds:
            m = run_cnnc(model, seed, args.data_dir)
            accs.append(m["accuracy"])
            secs.append(m["seconds"])
            vals = " ".join(f"{r['val_accuracy']:.4f}" for r in m["history"])
            print(f"{name:13s} seed {seed}: test {m['accuracy']:.4f}  {m['seconds']:6.1f} s  "
                  f"{m['epochs']} epochs  (val per epoch: {vals}; {load()})", flush=True)
        med_a, med_s = statistics.median(accs), statistics.median(secs)
        verdict = ""
        if target is not None:
            ok = med_a >= target and (budget is None or med_s <= budget)
            verdict = (f"  target >= {target:.1%}" + (f" in <= {budget:g} s" if budget else "")
                       + (": met" if ok else ": NOT met"))
        print(f"{name:13s} median: test {med_a:.4f}  {med_s:.1f} s  (min {min(accs):.4f}){verdict}", flush=True)


def compare(args) -> None:
    model = RECIPES["mnist_fast"][0]
    rows: dict[str, list] = {"cnnc": [], "torch nchw": [], "torch channels_last": []}
    for r in range(args.rounds):
        for label in rows:
            if label == "cnnc":
                m = run_cnnc(model, r, args.data_dir)
            else:
                m = run_torch(r, label.split()[1], args.data_dir)
            rows[label].append(m)
            print(f"round {r} {label:20s} test {m['accuracy']:.4f}  {m['seconds']:6.1f} s  "
                  f"({load()})", flush=True)
    med = {k: (statistics.median(m["accuracy"] for m in v), statistics.median(m["seconds"] for m in v))
           for k, v in rows.items()}
    for k, (a, s) in med.items():
        print(f"median {k:20s} test {a:.4f}  {s:6.1f} s")
    best = min(("torch nchw", "torch channels_last"), key=lambda k: med[k][1])
    print(f"PyTorch's better layout: {best}; cnnc reaches the same recipe's accuracy "
          f"{med[best][1] / med['cnnc'][1]:.2f}x sooner")


if __name__ == "__main__":
    main()
