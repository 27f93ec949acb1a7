"""Subcommands for interchange and tooling: ``diff``, ``gradcheck``, ``export``, ``import-weights``.

Registered by :func:`add_tool_commands` (called from :mod:`cnnc.cli.main`); each handler is a thin
layer over a module of its own (:mod:`cnnc.tools.diff`, :mod:`cnnc.tools.gradcheck`,
:mod:`cnnc.tools.export_onnx`, :mod:`cnnc.tools.weights_import`). Heavy imports happen inside handlers.
"""
from __future__ import annotations

import argparse
import json

from ..errors import UsageError

TOOL_COMMANDS = ("diff", "gradcheck", "export", "import-weights")


def _shared_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("header overrides (applied to every model given)")
    g.add_argument("--input", metavar="CxHxW", help="input shape, overrides the files' `input` line")
    g.add_argument("--classes", type=int, metavar="N", help="number of classes, overrides `classes`")
    g.add_argument("--width", type=int, metavar="N", help="default width, overrides `width`")


def add_tool_commands(sub, model_args) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "diff", help="compare two models layer by layer: shapes, parameters, MACs, RF, memory",
        formatter_class=fmt,
        description="Align the layer lists of two models (files or -e expressions) and show, per "
                    "layer and in total, what changed: output shape, parameters, MACs, receptive "
                    "field and activation memory. '+' marks a layer only B has, '-' one only A has, "
                    "'~' a layer both have that changed. Layers are matched by type and "
                    "configuration, not by name. Static: nothing is compiled.",
        epilog="examples:\n  cnnc diff models/vgg16.cnn vgg19.cnn\n"
               "  cnnc diff -e 'conv3(8)-relu-pool-fc' -e 'conv3(16)-relu-pool-fc' --input 1x28x28 --classes 10\n"
               "  cnnc diff models/lenet5.cnn -e 'conv5(6)-relu-pool-fc' --json")
    p.add_argument("files", nargs="*", metavar="FILE", help="model files; A first, then B")
    p.add_argument("-e", "--expr", action="append", default=[], metavar="EXPR",
                   help="an inline model expression (repeatable); used after the files, in order")
    _shared_model_flags(p)
    p.add_argument("--all", action="store_true", help="also list the layers that did not change")
    p.add_argument("--json", action="store_true", help="print the diff as JSON")

    from ..tools.gradcheck import add_parser as add_gradcheck

    add_gradcheck(sub, model_args, fmt)
    from .export import add_parser as add_export

    add_export(sub, model_args, fmt)
    from ..tools.weights_import import add_parser as add_import

    add_import(sub, model_args, fmt)


def _compile_one(source: str, is_expr: bool, args):
    import cnnc

    kwargs = dict(input=args.input, classes=args.classes, width=args.width)
    if args.width is not None and args.width < 1:
        raise UsageError(f"--width must be at least 1, got {args.width}")
    if is_expr:
        return cnnc.compile(source, filename="<expr>", **kwargs)
    return cnnc.compile_file(source, **kwargs)


def cmd_diff(args) -> int:
    from ..tools.diff import diff_models, diff_text

    sources = [(f, False) for f in args.files] + [(e, True) for e in args.expr]
    if len(sources) != 2:
        raise UsageError(f"diff needs exactly two models, got {len(sources)}",
                         hint="usage: cnnc diff A.cnn B.cnn, or -e 'EXPR' for either side")
    a, b = (_compile_one(s, is_expr, args) for s, is_expr in sources)
    d = diff_models(a, b)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
    else:
        print(diff_text(d, show_same=args.all))
    return 0


def run_tool_command(args) -> int:
    if args.command == "diff":
        return cmd_diff(args)
    if args.command == "gradcheck":
        from ..tools.gradcheck import cmd_gradcheck
        return cmd_gradcheck(args)
    if args.command == "export":
        from .export import cmd_export
        return cmd_export(args)
    from ..tools.weights_import import cmd_import_weights
    return cmd_import_weights(args)
