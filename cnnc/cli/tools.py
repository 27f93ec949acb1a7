"""``cnnc diff``, ``cnnc gradcheck`` and ``cnnc import-weights``: the command lines of
:mod:`cnnc.tools.diff`, :mod:`cnnc.tools.gradcheck` and :mod:`cnnc.tools.weights_import`.
Heavy imports happen inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..text import plural
from ..errors import UsageError
from .common import add_model_args, compile_from_args


def _shared_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("header overrides (applied to every model given)")
    g.add_argument("--input", metavar="CxHxW", help="input shape, overrides the files' `input` line")
    g.add_argument("--classes", type=int, metavar="N", help="number of classes, overrides `classes`")
    g.add_argument("--width", type=int, metavar="N", help="default width, overrides `width`")


def register(sub) -> None:
    model_args = add_model_args
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "diff", help="compare two models layer by layer: shapes, parameters, MACs, RF, memory",
        formatter_class=fmt,
        description="Align the layer lists of two models (files or -e expressions) and show, per "
                    "layer and in total, what changed: output shape, parameters, MACs, receptive "
                    "field and activation memory. '+' marks a layer only B has, '-' one only A has, "
                    "'~' a layer both have that changed. Layers are matched by type and "
                    "configuration, not by name. An -e expression without its own input and "
                    "classes takes them from the other model. Static: nothing is compiled.",
        epilog="examples:\n  cnnc diff models/vgg16.cnn models/vgg19.cnn\n"
               "  cnnc diff -e 'conv3(8)-relu-pool-fc' -e 'conv3(16)-relu-pool-fc' --input 1x28x28 --classes 10\n"
               "  cnnc diff models/lenet5.cnn -e 'conv5(6)-relu-pool-fc' --json")
    p.add_argument("files", nargs="*", metavar="FILE", help="model files; A first, then B")
    p.add_argument("-e", "--expr", action="append", default=[], metavar="EXPR",
                   help="an inline model expression (repeatable); used after the files, in order")
    _shared_model_flags(p)
    p.add_argument("--all", action="store_true", help="also list the layers that did not change")
    p.add_argument("--json", action="store_true", help="print the diff as JSON")

    _add_gradcheck(sub, model_args, fmt)
    _add_import_weights(sub, model_args, fmt)


def _compile_one(source: str, is_expr: bool, args, other=None):
    """One side of a diff. An expression without its own ``input``/``classes`` header lines
    takes them from the other side's model (``other``), unless --input/--classes give them."""
    from ..compiler import compile, compile_file

    kwargs = dict(input=args.input, classes=args.classes, width=args.width)
    if args.width is not None and args.width < 1:
        raise UsageError(f"--width must be at least 1, got {args.width}")
    if not is_expr:
        return compile_file(source, **kwargs)
    if other is not None:
        headers = {line.split()[0] for line in source.splitlines() if line.strip()}
        if kwargs["input"] is None and "input" not in headers:
            kwargs["input"] = "x".join(map(str, other.input_shape))
        if kwargs["classes"] is None and "classes" not in headers:
            kwargs["classes"] = other.classes
    return compile(source, filename="<expr>", **kwargs)


def cmd_diff(args) -> int:
    from ..tools.diff import diff_models, diff_text

    sources = [(f, False) for f in args.files] + [(e, True) for e in args.expr]
    if len(sources) != 2:
        raise UsageError(f"diff needs exactly two models, got {len(sources)}",
                         hint="usage: cnnc diff A.cnn B.cnn, or -e 'EXPR' for either side")
    models: list = [None, None]
    for i in sorted(range(2), key=lambda i: sources[i][1]):  # files first: they lend their headers
        source, is_expr = sources[i]
        models[i] = _compile_one(source, is_expr, args, other=models[1 - i])
    d = diff_models(*models)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
    else:
        print(diff_text(d, show_same=args.all))
    return 0


def _add_gradcheck(sub, model_args, fmt) -> None:
    from ..tools.gradcheck import DEFAULT_TOL, KINKED_TOL

    p = sub.add_parser(
        "gradcheck", help="check every layer's gradients against float64 finite differences",
        formatter_class=fmt,
        description="Run each layer of the model on its own, as the compiled program runs it, on "
                    "random float64 data, and compare its backward pass (gradients of the inputs "
                    "and of every parameter) with central finite differences, along random "
                    "directions and at random single elements. Prints the largest relative error "
                    "per layer; exits 1 when any layer exceeds the tolerance.",
        epilog="examples:\n  cnnc gradcheck models/lenet5.cnn\n"
               "  cnnc gradcheck models/resnet18.cnn --layer conv_3 --json\n"
               "  cnnc gradcheck -e '(conv3(4) | maxpool3(stride=1, pad=1)) - maxout(2) - fc' "
               "--input 2x6x6 --classes 3")
    model_args(p, file_required=False)
    p.add_argument("--layer", metavar="NAME", help="check only this layer (a name from `cnnc check`, "
                                                   "or `loss`)")
    p.add_argument("--batch", type=int, default=4, metavar="N", help="batch of random inputs (default 4)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--tol", type=float, default=None, metavar="T",
                   help=f"largest relative error that passes, for every layer (default {DEFAULT_TOL:g} for "
                        f"smooth layers, {KINKED_TOL:g} for piecewise-linear ones)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_gradcheck(args) -> int:
    from ..tools.gradcheck import gradcheck, report_text

    batch = args.batch
    args.batch = 1
    model = compile_from_args(args)
    from ..runtime.notice import CompileNotice

    def progress(layer: str, i: int, n: int) -> None:  # a line per layer: compiles take seconds
        print(f"checking {layer} ({i}/{n}) ...", file=sys.stderr, flush=True)

    with CompileNotice():
        rep = gradcheck(model, layer=args.layer, batch=batch, seed=args.seed, tol=args.tol,
                        progress=progress)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(report_text(rep))
    return 0 if rep.ok else 1


def _add_import_weights(sub, model_args, fmt) -> None:
    from ..tools.weights_import import NORMALIZATION_SCALE

    p = sub.add_parser(
        "import-weights", help="load PyTorch-layout weights (safetensors or npz) into a cnnc checkpoint",
        formatter_class=fmt,
        description="Map the tensors of a .safetensors file or an .npz archive (e.g. a PyTorch "
                    "state dict saved with numpy.savez) onto the model's layers, by name "
                    "(conv_1.weight or conv_1.w) or by order (the file's order against the layers' "
                    "execution order), check every shape, print the table of what went where and "
                    "write a checkpoint that `cnnc eval`, `predict` and `export` accept. Layouts are "
                    "PyTorch's: conv (F, C/groups, KH, KW), fc (out, in) on the C-order flattening. "
                    "Nothing is written when any tensor is missing, left over or misshapen.",
        epilog="examples:\n  cnnc import-weights models/lenet5.cnn --from lenet.safetensors --mean 0.1307 "
               "--std 0.3081 -o runs/lenet-imported\n"
               "  cnnc import-weights models/vgg_cifar.cnn --from sd.npz --map order --mean 0.49,0.48,0.45 "
               "--std 0.25,0.24,0.26 -o vgg.npz")
    model_args(p, file_required=False)
    p.add_argument("--from", dest="source", required=True, metavar="WEIGHTS",
                   help="a .safetensors file or an .npz archive of arrays")
    p.add_argument("-o", "--out", metavar="RUN|FILE.npz",
                   help="run folder (best.npz is written in it) or checkpoint file to write; required "
                        "unless --dry-run")
    p.add_argument("--map", default="auto", choices=["auto", "name", "order"],
                   help="how tensors are paired with layers (default auto: by name if every name is a "
                        "cnnc name, else by order)")
    p.add_argument("--mean", metavar="M[,M...]",
                   help="input normalization mean the weights were trained with, " + NORMALIZATION_SCALE)
    p.add_argument("--std", metavar="S[,S...]", help="input normalization standard deviation, likewise")
    p.add_argument("--no-normalize", action="store_true",
                   help="the network takes pixels / 255 unchanged (instead of --mean/--std)")
    p.add_argument("--data", metavar="NAME|PATH", help="the data set `cnnc eval` uses by default")
    p.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def cmd_import_weights(args) -> int:
    from ..tools.weights_import import import_weights, plan_import, plan_text, read_tensors

    if args.out is None and not args.dry_run:
        raise UsageError("give the checkpoint to write with -o RUN (or FILE.npz), or use --dry-run")
    if args.out is not None and Path(args.out).exists() and Path(args.out).is_file() \
            and Path(args.out).suffix != ".npz":
        raise UsageError(f"{args.out} is a file; give a run folder or a .npz checkpoint")
    model = compile_from_args(args)
    if args.dry_run:
        net = model.network(seed=0)
        plan = plan_import(net, read_tensors(args.source), args.map)
        print(json.dumps(plan.to_dict(), indent=2) if args.json else plan_text(plan))
        return 0 if plan.ok else 1
    plan, path = import_weights(model, args.source, args.out, mode=args.map, mean=args.mean, std=args.std,
                                normalize=not args.no_normalize, data=args.data)
    if args.json:
        print(json.dumps({**plan.to_dict(), "written": str(path)}, indent=2))
    else:
        print(plan_text(plan))
        print(f"\nwrote {path}: {plural(len(plan.rows), 'tensor')}; "
              f"cnnc eval {model.filename} --weights {path}")
    return 0


COMMANDS = {"diff": cmd_diff, "gradcheck": cmd_gradcheck, "import-weights": cmd_import_weights}
