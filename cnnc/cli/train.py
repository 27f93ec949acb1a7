"""``cnnc train``, ``cnnc eval`` and ``cnnc predict``: the command line of
:mod:`cnnc.training` (training, evaluation, classification of image files)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..lang.settings import TRAINING
from ..text import plural
from .common import (add_model_args, add_training_flags, check_memory, compile_from_args, load_weights,
                     set_threads)


def _output_flags(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("output")
    r.add_argument("--out", metavar="DIR",
                   help="run folder for checkpoints, history.csv/json and curves.png "
                        "(default: runs/<model>, numbered so nothing is overwritten)")
    r.add_argument("--resume", metavar="RUN",
                   help="continue the run in this folder (or checkpoint file); imported weights "
                        "(cnnc import --weights-out, cnnc import-weights) are fine-tuned from epoch 1, "
                        "with the input normalization they came with")
    r.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    r.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    x = p.add_argument_group("parallelism")
    x.add_argument("--threads", type=int, metavar="N",
                   help="kernel threads (default: $CNNC_THREADS, else the cores nothing else keeps busy; "
                        "under MPI: cores / ranks)")
    x.add_argument("--workers", type=int, metavar="N",
                   help="data-parallel training on N processes of this machine over MPI "
                        "(needs the mpi extra); across machines run "
                        "`mpiexec -f hosts -n N python -m mpi4py -m cnnc train ...` instead")
    r.add_argument("--viz", action="store_true",
                   help="after each epoch write the first conv's filters and a few activation maps "
                        "to <run>/viz/ (see `cnnc viz` for more views)")
    w = p.add_argument_group("live page (docs/live.md)")
    w.add_argument("--live", action="store_true",
                   help="serve a page that shows the run as it trains (curves, activations, filters, "
                        "test images, confusion matrix) with pause/save/stop/learning-rate controls; "
                        "prints its address")
    w.add_argument("--port", type=int, default=0, metavar="N", help="the page's port (default: a free one)")
    w.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="the address to listen on (default 127.0.0.1, this machine only; "
                        "another address warns: anyone reaching it with the token controls the run)")


def register(sub) -> None:
    model_args = add_model_args
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train", help="train a model on a data set", formatter_class=fmt,
        description="Train a model with compiled CPU kernels. Settings come from the model file's "
                    "header lines (epochs, lr, optimizer, ...) and are overridden by these flags. "
                    "Each epoch saves a checkpoint (atomically), the best one by validation accuracy, "
                    "history.csv/json and curves.png; Ctrl-C saves and stops, --resume continues.",
        epilog="examples:\n  cnnc train models/digits.cnn\n"
               "  cnnc train models/lenet5.cnn --data fashion-mnist --epochs 2\n"
               "  cnnc train models/lenet5.cnn --resume runs/lenet5\n"
               "  cnnc train models/lenet5.cnn --workers 2          # 2 MPI ranks, 1 thread each")
    model_args(p)
    add_training_flags(p)
    _output_flags(p)

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
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fit", action="store_true", default=None,
                      help="zero-pad or centre-crop images of another size, and convert grey/RGB, as "
                           "training's `fit` does (default: what the run was trained with)")
    size.add_argument("--no-fit", dest="fit", action="store_false",
                      help="refuse images of another size even if the run was trained with fit")
    size.add_argument("--resize", action="store_true", help="stretch images to the model's input size")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")



def cmd_train(args) -> int:
    from ..runtime.distributed import launch, world

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.workers is not None and world().size == 1:
        return launch(args.workers, _argv_without_workers(args.argv), checkpoint_hint=args.resume or args.out)
    from ..training.train import train

    set_threads(args.threads)  # also the ranks' count under MPI
    settings = {spec.key: getattr(args, spec.key) for spec in TRAINING}
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    saved_batch = args.batch
    args.batch = 1  # the summary's memory figure; the training batch is in `settings`
    model = compile_from_args(args)
    args.batch = saved_batch
    if args.resume is None:  # the batch memory must hold (a resumed run keeps its batch)
        from ..training.train import TrainConfig

        check_memory(args, model, TrainConfig.from_header(model.header, batch=args.batch).batch, training=True)
    callback = None
    if getattr(args, "viz", False):
        from ..viz.training import EpochViz

        callback = EpochViz.for_model(model)
    live = None
    if getattr(args, "live", False) and world().is_root:
        from ..live import LiveSession

        live = LiveSession(model, host=args.host, port=args.port).start()
    try:
        result = train(model, out=args.out, new_run=args.out is None and args.resume is None,
                       resume=args.resume, progress=not args.quiet, epoch_callback=callback,
                       notice=not args.quiet, hooks=live.hooks if live else (),
                       **settings)  # the notice says why a cold first run waits
    except BaseException as err:
        if live is not None:
            live.close(error=type(err).__name__)
        raise
    if live is not None:
        live.close(result)
    metrics = result.metrics()
    if not world().is_root:
        return 130 if result.interrupted else 0
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        if result.test:
            print(f"test accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f} "
                  f"({plural(metrics['test_images'], 'image')}), with the weights of the last epoch")
        print(f"trained {plural(metrics['epochs'], 'epoch')} in {metrics['seconds']:.1f}s; run folder "
              f"{result.out_dir}")
        best = _best_epoch(result.history)
        if result.out_dir is not None and best is not None:
            print(f"  checkpoint.npz: the last epoch; best.npz: epoch {best} (the best validation "
                  "accuracy), which eval, predict, viz and export read from the run folder")
    return 130 if result.interrupted else 0


def _argv_without_workers(argv) -> list[str]:
    """This command line without its --workers option (the ranks must not launch again)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def cmd_eval(args) -> int:
    import numpy as np

    from ..training import data as D
    from ..training.train import TrainConfig, evaluate

    model, net, arrays, meta, path = load_weights(args)
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
    metrics = evaluate(net, x, ds.y, tta=cfg.tta)  # test-time flips where the run used them
    metrics.update({"data": ds.name, "split": args.split, "weights": str(path)})
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"{ds.name} {args.split}: accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"({plural(metrics['images'], 'image')})")
    print(f"weights: {describe_weights(path, meta)}")
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

    from ..training import data as D

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    model, net, arrays, meta, path = load_weights(args)
    print(f"weights: {describe_weights(path, meta)}", file=sys.stderr)
    if len(model.input_shape) == 2:  # issue 11: a 1-D network takes sequences, not images
        raise UsageError("predict reads image files, but this is a 1-D network (its input is a sequence "
                         f"{'x'.join(map(str, model.input_shape))})",
                         hint="use cnnc eval --data FILE.npz with an array x of shape (N, C, L), "
                              "or Network.predict_proba in Python")
    names = meta.get("class_names") or [str(i) for i in range(net.classes)]
    fit = bool(meta.get("config", {}).get("fit")) if args.fit is None else args.fit
    images = np.stack([_prepared_image(f, model.input_shape, fit=fit and not args.resize,
                                       resize=args.resize) for f in args.images])
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


def _best_epoch(history: list[dict]) -> int | None:
    """The epoch (from 1) training keeps in best.npz: the highest validation accuracy, ties to the
    lower validation loss, then to the earlier epoch; None without validation."""
    scored = [((h["val_accuracy"], -h["val_loss"]), -i) for i, h in enumerate(history)
              if h.get("val_accuracy") is not None and h.get("val_loss") is not None]
    return -max(scored)[1] + 1 if scored else None


def describe_weights(path, meta: dict) -> str:
    """Which weights a checkpoint holds: ``runs/x/best.npz (epoch 12 of 20, the best validation
    accuracy 0.9931)``."""
    done = int(meta.get("position", {}).get("epoch", 0))
    total = meta.get("config", {}).get("epochs")
    what = f"epoch {done}" + (f" of {total}" if total else "")
    if Path(path).name == "best.npz" and meta.get("best_val_accuracy") is not None:
        what += f", the best validation accuracy {meta['best_val_accuracy']:.4f}"
    elif meta.get("imported_from"):
        what = f"imported from {meta['imported_from']}"
    elif meta.get("finished"):
        what += ", the end of training"
    return f"{path} ({what})"


def _prepared_image(path: str, shape, *, fit: bool, resize: bool):
    """One image file as training prepared its data: read with the model's channel count
    (grey/RGB converted), then, with ``fit``, zero-padded or centre-cropped to the model's
    size (a note on stderr says so)."""
    import sys

    import numpy as np

    from ..training import data as D

    img = D.load_image_file(path, shape, resize=resize, any_size=fit)
    if img.shape[1:] == tuple(shape[1:]):
        return img
    ds = D.dataset_from_arrays(img[None], np.zeros(1, np.int64), path)
    fitted = D.fit_to_shape(ds, shape).x[0]
    how = "zero-padded" if img.shape[1] < shape[1] else "centre-cropped"
    print(f"{path}: {img.shape[1]}x{img.shape[2]} {how} to {shape[1]}x{shape[2]}, as in training (fit)",
          file=sys.stderr)
    return fitted


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}
