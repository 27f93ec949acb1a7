"""Commands that run networks: ``train``, ``eval``, ``predict``, ``bench``.

Kept apart from :mod:`cnnc.cli` so that ``cnnc check`` never imports NumPy kernels or Numba.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import CheckpointError, UsageError


def _train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="NAME|PATH",
                   help="digits (built in), mnist, fashion-mnist, cifar10, a folder of IDX files, "
                        "CIFAR-10 binary batches or class subfolders of images, or an .npz with x, y "
                        "(default: the file's `data` line, else digits)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="where named data sets live (default: $CNNC_DATA, else ~/.cache/cnnc/data); "
                        "missing ones are downloaded there when the network allows")
    g.add_argument("--fit", action="store_true", default=None,
                   help="zero-pad or centre-crop images to the model's input size (e.g. MNIST 28x28 "
                        "for LeNet-5's 32x32) and convert grey<->RGB")
    g.add_argument("--val-split", type=float, metavar="F", help="fraction held out for validation (default 0.1)")
    g.add_argument("--augment", metavar="SPEC",
                   help="none, flip, crop (pad 4), cropN, or crop+flip (default: auto, crop+flip for "
                        "CIFAR-10, none for digits)")
    g.add_argument("--limit", type=int, metavar="N", help="use only the first N training images")
    o = p.add_argument_group("optimization (each overrides the model file's setting)")
    o.add_argument("--epochs", type=int, metavar="N", help="training epochs (default 10)")
    o.add_argument("--batch", type=int, metavar="N", help="mini-batch size (default 64)")
    o.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="default sgd")
    o.add_argument("--lr", type=float, metavar="LR", help="learning rate (default 0.01 sgd, 0.001 adam/adamw)")
    o.add_argument("--momentum", type=float, metavar="M", help="SGD momentum (default 0.9)")
    o.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    o.add_argument("--weight-decay", type=float, metavar="WD", help="weight decay (default 0)")
    o.add_argument("--schedule", choices=["constant", "step", "cosine"], help="learning-rate schedule")
    o.add_argument("--step-size", type=int, metavar="N", help="epochs between step decays (default 30)")
    o.add_argument("--gamma", type=float, metavar="G", help="step decay factor (default 0.1)")
    o.add_argument("--warmup", type=int, metavar="N", help="epochs of linear warm-up (default 0)")
    o.add_argument("--seed", type=int, metavar="N", help="random seed (default 0): same seed, same result")
    r = p.add_argument_group("output")
    r.add_argument("--out", metavar="DIR",
                   help="run folder for checkpoints, history.csv/json and curves.png "
                        "(default: runs/<model>, numbered so nothing is overwritten)")
    r.add_argument("--resume", metavar="RUN", help="continue the run in this folder (or checkpoint file)")
    r.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def add_runtime_commands(sub, model_args) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train", help="train a model on a data set", formatter_class=fmt,
        description="Train a model with compiled CPU kernels. Settings come from the model file's "
                    "header lines (epochs, lr, optimizer, ...) and are overridden by these flags. "
                    "Each epoch saves a checkpoint (atomically), the best one by validation accuracy, "
                    "history.csv/json and curves.png; Ctrl-C saves and stops, --resume continues.",
        epilog="examples:\n  cnnc train models/digits.cnn\n"
               "  cnnc train models/lenet5.cnn --data mnist --data-dir ../shared/data --fit\n"
               "  cnnc train models/lenet5.cnn --resume runs/lenet5")
    model_args(p)
    _train_args(p)

    p = sub.add_parser("eval", help="evaluate trained weights: accuracy, loss, confusion matrix",
                       formatter_class=fmt,
                       description="Evaluate a checkpoint on the test split of a data set (default: "
                                   "the data set it was trained on).",
                       epilog="example:\n  cnnc eval models/digits.cnn --weights runs/digits")
    model_args(p)
    p.add_argument("--weights", required=True, metavar="CKPT", help="a checkpoint file or run folder")
    p.add_argument("--data", metavar="NAME|PATH", help="data set (default: the one trained on)")
    p.add_argument("--data-dir", metavar="DIR", help="where named data sets live")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split (default test)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("predict", help="classify image files with trained weights", formatter_class=fmt,
                       description="Print the top classes with their probabilities for each image.",
                       epilog="example:\n  cnnc predict models/lenet5.cnn --weights runs/lenet5 digit.png")
    model_args(p)
    p.add_argument("--weights", required=True, metavar="CKPT", help="a checkpoint file or run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many classes to show (default 3)")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")

    p = sub.add_parser("bench", help="measure training and inference speed on random data",
                       formatter_class=fmt,
                       description="Compile the model and measure training throughput (SGD with "
                                   "momentum), inference throughput, achieved GFLOP/s, compile time "
                                   "(cold and warm kernel cache) and peak memory, on random data of "
                                   "the model's input shape. No data set needed.",
                       epilog="example:\n  cnnc bench models/lenet5.cnn --batch 64")
    model_args(p)
    p.add_argument("--batch", type=int, default=64, metavar="N", help="batch size (default 64)")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="steps per timing run (default 20)")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timing runs; the median is shown")
    p.add_argument("--no-compile-times", action="store_true",
                   help="skip the cold/warm compile measurements (they run two subprocesses)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run_command(args) -> int:
    return {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "bench": cmd_bench}[args.command](args)


def _compile(args, classes=None):
    from .cli import _compile_from_args

    if classes is not None and args.classes is None:
        args.classes = classes
    return _compile_from_args(args)


# ---------------------------------------------------------------------------


def cmd_train(args) -> int:
    from .train import train

    settings = {k: getattr(args, k) for k in (
        "data", "data_dir", "epochs", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
        "schedule", "step_size", "gamma", "warmup", "augment", "seed", "val_split", "fit", "limit")}
    settings["batch"] = args.batch
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    saved_batch = args.batch
    args.batch = 1  # the summary's memory figure; the training batch is in `settings`
    model = _compile(args)
    args.batch = saved_batch
    result = train(model, out=args.out, new_run=args.out is None and args.resume is None,
                   resume=args.resume, progress=not args.quiet, **settings)
    metrics = result.metrics()
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        if result.test:
            print(f"test accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f} "
                  f"({metrics['test_images']} images)")
        print(f"trained {metrics['epochs']} epochs in {metrics['seconds']:.1f}s; run folder "
              f"{result.out_dir}")
    return 130 if result.interrupted else 0


def _load_weights(args):
    """Model (classes from the checkpoint when not given), network with its weights, meta."""
    from .checkpoint import load_checkpoint
    from .train import BEST, CHECKPOINT

    p = Path(args.weights)
    if p.is_dir():
        p = p / BEST if (p / BEST).exists() else p / CHECKPOINT
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint")
    arrays, meta = load_checkpoint(p)
    if meta.get("kind") != "cnnc-training":
        raise CheckpointError(f"{p}: not a cnnc training checkpoint")
    model = _compile(args, classes=meta.get("classes"))
    if list(model.input_shape) != list(meta.get("input_shape", [])):
        raise CheckpointError(
            f"{p} was trained for inputs {'x'.join(map(str, meta.get('input_shape', [])))}, "
            f"but the model takes {'x'.join(map(str, model.input_shape))}")
    net = model.network()
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    try:
        net.load_state(params)
    except UsageError as err:
        raise CheckpointError(f"{p}: {err.message}",
                              hint="the checkpoint was made for another model") from None
    return model, net, arrays, meta, p


def cmd_eval(args) -> int:
    import numpy as np

    from . import data as D
    from .train import TrainConfig, evaluate

    model, net, arrays, meta, path = _load_weights(args)
    cfg = TrainConfig(**meta["config"])
    train_ds, test_ds = D.resolve_dataset(args.data or cfg.data, args.data_dir or cfg.data_dir)
    ds = test_ds if args.split == "test" else train_ds
    if tuple(ds.shape) != tuple(model.input_shape):
        if not cfg.fit:
            D.check_input_shape(model.input_shape, ds)
        ds = D.fit_to_shape(ds, model.input_shape)
    if ds.num_classes > net.classes:
        raise UsageError(f"{ds.name} has {ds.num_classes} classes, the model {net.classes}")
    x = D.to_float(ds.x, arrays["data.mean"], arrays["data.std"])
    metrics = evaluate(net, x, ds.y)
    metrics.update({"data": ds.name, "split": args.split, "weights": str(path)})
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"{ds.name} {args.split}: accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"({metrics['images']} images)")
    names = meta.get("class_names") or [str(i) for i in range(net.classes)]
    conf = np.array(metrics["confusion"])
    width = max(max(len(str(v)) for v in conf.ravel()), 3)
    short = [n[:width] for n in names]
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    print(" " * 12 + " ".join(s.rjust(width) for s in short))
    for name, row in zip(names, conf):
        print(f"{name[:11]:>11} " + " ".join(str(v).rjust(width) for v in row))
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from . import data as D

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    model, net, arrays, meta, _ = _load_weights(args)
    if len(model.input_shape) == 2:  # issue 11: a 1-D network takes sequences, not images
        raise UsageError("predict reads image files, but this is a 1-D network (its input is a sequence "
                         f"{'x'.join(map(str, model.input_shape))})",
                         hint="use cnnc eval --data FILE.npz with an array x of shape (N, C, L), "
                              "or Network.predict_proba in Python")
    names = meta.get("class_names") or [str(i) for i in range(net.classes)]
    images = np.stack([D.load_image_file(f, model.input_shape, resize=args.resize) for f in args.images])
    probs = net.predict_proba(D.to_float(images, arrays["data.mean"], arrays["data.std"]))
    results = []
    for f, p in zip(args.images, probs):
        order = np.argsort(-p)[: args.top]
        results.append({"image": f, "top": [{"class": names[i] if i < len(names) else str(i),
                                             "index": int(i), "probability": float(p[i])} for i in order]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["image"] + ": " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench, format_bench

    if args.batch < 1 or args.steps < 1 or args.repeats < 1:
        raise UsageError("--batch, --steps and --repeats must be at least 1")
    batch = args.batch
    args.batch = 1
    model = _compile(args)
    result = bench(model, batch=batch, steps=args.steps, repeats=args.repeats,
                   compile_times=not args.no_compile_times, model_args=_model_argv(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_bench(result))
    return 0


def _model_argv(args) -> list[str]:
    argv = [args.file] if args.file else ["-e", args.expr]
    for flag in ("input", "classes", "width", "set"):
        v = getattr(args, flag)
        if v is not None:
            argv += [f"--{flag}", str(v)]
    return argv


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
