"""models/mnist_fast.cnn's recipe written in PyTorch, as a PyTorch user would write it: the
images as tensors in memory (no DataLoader), the same architecture, one-cycle schedule,
label smoothing, moving average of the weights, epochs and batch size, on 2 threads.

    python examples/torch_recipe.py --seed 0                       # NCHW
    python examples/torch_recipe.py --seed 0 --layout channels_last

Prints one JSON line: test accuracy (of the averaged weights), the training seconds, and the
validation accuracy and seconds since the start after each epoch. examples/recipes.py
--torch runs it beside cnnc, each in a process of its own, alternating. The clock runs from
the first step to the end of the last validation, as cnnc's does (``elapsed`` in its
history); reading the data is not timed in either.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip'd or not) as a uint8 array."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder: Path, split: str):
    stem = "train" if split == "train" else "t10k"
    find = lambda kind: next(p for p in folder.iterdir() if p.name.startswith(f"{stem}-{kind}"))  # noqa: E731
    return read_idx(find("images")), read_idx(find("labels")).astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("CNNC_DATA", "/work/shared/data"))
    p.add_argument("--data", default="mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    p.add_argument("--threads", type=int, default=2)
    # mnist_fast.cnn's settings
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--peak", type=float, default=0.2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--val-split", type=float, default=0.1)
    args = p.parse_args()

    import torch
    from torch import nn
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # data: a random 10% of the training images held out for validation, normalized with
    # the training images' mean and standard deviation
    x, y = load(Path(args.data_dir) / args.data, "train")
    x_test, y_test = load(Path(args.data_dir) / args.data, "test")
    perm = rng.permutation(len(x))
    n_val = round(args.val_split * len(x))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    mean, std = x_train.mean() / 255.0, x_train.std() / 255.0
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format

    def tensor(images):
        t = (torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) / std
        return t[:, None].contiguous(memory_format=fmt)

    x_train, x_val, x_test = tensor(x_train), tensor(x_val), tensor(x_test)
    y_train, y_val, y_test = map(torch.from_numpy, (y_train, y_val, y_test))

    # models/mnist_fast.cnn:
    # conv5(16, pad=valid) - bn - relu - pool - conv5(32, pad=valid) - bn - relu - pool - fc(128) - relu - fc
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(memory_format=fmt)
    averaged = copy.deepcopy(model)
    avg_tensors = [t for t in list(averaged.parameters()) + list(averaged.buffers()) if t.is_floating_point()]
    live_tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    steps_per_epoch = len(x_train) // args.batch
    total = args.epochs * steps_per_epoch
    rise = min(max(round(args.peak * total), 1), total)

    def one_cycle(step: int) -> float:  # step 0-based: up linearly to lr, then down
        u = min(step + 1, total)
        return u / rise if u <= rise else (total - u + 1) / (total - rise + 1)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle)

    @torch.inference_mode()
    def accuracy(net, xs, ys) -> float:
        net.eval()
        correct = sum(int((net(xs[i:i + 500]).argmax(1) == ys[i:i + 500]).sum())
                      for i in range(0, len(xs), 500))
        return correct / len(xs)

    history, n = [], 0
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for it in range(steps_per_epoch):
            idx = order[it * args.batch:(it + 1) * args.batch]
            xb, yb = x_train[idx].contiguous(memory_format=fmt), y_train[idx]
            loss = F.cross_entropy(model(xb), yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n += 1
            d = min(args.ema, (1 + n) / (10 + n))  # the same warm-up of the decay as cnnc's
            with torch.no_grad():
                torch._foreach_lerp_(avg_tensors, live_tensors, 1.0 - d)
        history.append({"epoch": epoch + 1, "val_accuracy": accuracy(averaged, x_val, y_val),
                        "elapsed": time.perf_counter() - start})
    seconds = time.perf_counter() - start
    print(json.dumps({"framework": "torch", "layout": args.layout, "seed": args.seed,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "accuracy": accuracy(averaged, x_test, y_test), "seconds": seconds,
                      "history": history}))


if __name__ == "__main__":
    main()
