"""Training memory: what `cnnc check --batch N` predicts vs the measured peak RSS increase
of a training step (fresh process per model; kernels loaded beforehand on a tiny batch, so
the increase is the network's parameters, buffers and workspaces, not machine code).

    python examples/memory_check.py                  # LeNet-5 @ 64, VGG-ish @ 128, ResNet-8 @ 128
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("LeNet-5", ROOT / "models" / "lenet5.cnn", 64),
         ("[[conv3-relu]*2 - pool]*3 - fc", ROOT / "models" / "vgg_cifar.cnn", 128),
         ("ResNet-8", ROOT / "models" / "resnet8.cnn", 128)]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def worker(path: str, batch: int) -> dict:
    import numpy as np

    import cnnc
    from cnnc.tools.bench import training_setup

    from cnnc.kernels.threads import work_chunks

    model = cnnc.compile_file(path)
    # loads (or compiles) every kernel the step uses: a batch of one image per thread chunk
    # takes the batch-parallel kernels (a smaller one takes those that split each image).
    # The warm-up network stays alive until the end: freed, its memory went back to the
    # allocator and the measured network reused it (LeNet-5: 0.45 MiB of 4.7 not counted)
    warm = training_setup(model, work_chunks())
    warm[2]()
    before = _rss()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    net, ex, step = training_setup(model, batch)
    for _ in range(2):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    allocated = (sum(a.nbytes for a in ex.values.values()) + sum(g.nbytes for g in ex.grads.values() if g is not None)
                 + net.theta.nbytes + net.grad.nbytes + net.buffer_flat.nbytes)
    del warm
    return {"predicted": model.analysis.memory(batch).training, "measured": peak - before,
            "peak_before_was_higher": peak_before > peak, "values_grads_params": int(allocated),
            "rss_now": _rss() - before, "np": np.__version__}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
        return
    print(f"{'model':<34} {'batch':>5} {'predicted MiB':>14} {'measured MiB':>13} {'measured/predicted':>19}")
    for name, path, batch in CASES:
        out = subprocess.run([sys.executable, __file__, "--worker", str(path), str(batch)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<34} {batch:>5} {r['predicted'] / 2**20:14.1f} {r['measured'] / 2**20:13.1f} "
              f"{r['measured'] / r['predicted']:19.2f}")


if __name__ == "__main__":
    main()
