"""The ``cnnc`` command line: a thin layer over the Python API.

Every user mistake is a :class:`cnnc.CnncError`: printed as one message, exit status 1.
Anything else is a bug in cnnc and shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from . import __version__
from .errors import CnncError, UsageError
from .tools_cli import TOOL_COMMANDS

DESCRIPTION = """\
cnnc compiles convolutional networks written the way lectures write them,
e.g. [[conv3-relu]*2 - pool]*3 - fc, checks them (shapes, parameters, MACs,
receptive field, memory) and trains them with compiled CPU kernels."""

EPILOG = """\
examples:
  cnnc check models/lenet5.cnn
  cnnc check -e '[[conv3-relu]*2 - pool]*3 - fc' --input 3x32x32 --classes 10
  cnnc train models/digits.cnn
  cnnc layers
run 'cnnc COMMAND --help' for the options of a command."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2; we keep 1 for every bad input
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(1)


def _model_args(p: argparse.ArgumentParser, file_required: bool = True) -> None:
    src = p.add_argument_group("model")
    if file_required:
        src.add_argument("file", help="model file (.cnn)")
    else:
        src.add_argument("file", nargs="?", help="model file (.cnn); or give -e EXPR")
        src.add_argument("-e", "--expr", metavar="EXPR",
                         help="an inline model expression instead of a file, e.g. 'conv3-relu-pool-fc'")
    src.add_argument("--input", metavar="CxHxW", help="input shape, overrides the file's `input` line")
    src.add_argument("--classes", type=int, metavar="N", help="number of classes, overrides `classes`")
    src.add_argument("--width", type=int, metavar="N",
                     help="filters of the first conv without a count (default 32), overrides `width`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnc", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("check", help="check a model: shapes, parameters, MACs, receptive field, memory",
                       description="Check a model statically and print one row per layer: output shape, "
                                   "parameters with their formula, MACs, receptive field (size and jump) "
                                   "and activation memory, then totals. Needs no data and compiles "
                                   "nothing.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  cnnc check models/vgg16.cnn --batch 64\n"
                              "  cnnc check -e 'conv5(10)' --input 3x32x32 --json")
    _model_args(p, file_required=False)
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="batch size for the memory figures (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("layers", help="list the layers the language knows",
                       description="List every layer with its arguments and defaults.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    from .commands import add_runtime_commands

    add_runtime_commands(sub, _model_args)

    from .tools_cli import add_tool_commands  # diff, gradcheck, export, import-weights

    add_tool_commands(sub, _model_args)
    return parser


def _compile_from_args(args):
    import cnnc

    if getattr(args, "expr", None) is not None and args.file is not None:
        raise UsageError("give a model file or -e EXPR, not both")
    if getattr(args, "expr", None) is None and args.file is None:
        raise UsageError("no model given", hint="usage: cnnc check FILE  or  cnnc check -e 'EXPR' --input CxHxW")
    kwargs = dict(input=args.input, classes=args.classes, width=args.width,
                  batch=getattr(args, "batch", 1) or 1)
    if getattr(args, "batch", 1) is not None and getattr(args, "batch", 1) < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if args.width is not None and args.width < 1:
        raise UsageError(f"--width must be at least 1, got {args.width}")
    if getattr(args, "expr", None) is not None:
        return cnnc.compile(args.expr, filename="<expr>", **kwargs)
    return cnnc.compile_file(args.file, **kwargs)


def cmd_check(args) -> int:
    model = _compile_from_args(args)
    if args.json:
        print(model.to_json())
    else:
        print(model.summary_text())
    return 0


def cmd_layers(args) -> int:
    from .layers import layer_types

    items = []
    for t in sorted(layer_types(), key=lambda t: t.name):
        if t.internal:
            continue
        items.append({
            "name": t.name, "aliases": list(t.aliases), "size_suffix": bool(t.suffix),
            "summary": t.summary,
            "args": [{"name": a.name, "positional": a.positional, "type": a.describe(),
                      "default": None if a.default is None else str(a.default)} for a in t.args],
        })
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for it in items:
        sig = it["name"] + ("N" if it["size_suffix"] else "")
        parts = [a["name"] if a["positional"] else f"{a['name']}={_default_text(a['default'])}"
                 for a in it["args"] if a["name"] != "size"]
        if parts:
            sig += "(" + ", ".join(parts) + ")"
        alias = f"  (also: {', '.join(it['aliases'])})" if it["aliases"] else ""
        print(f"{sig:<52} {it['summary']}{alias}")
    print("\nmerges: ( a | b ) concatenates channels, ( a + b ) sums; repeat with x*N or [ ... ]*N")
    return 0


def _default_text(default) -> str:
    return {"None": "auto", "default": "auto", "True": "true", "False": "false"}.get(str(default), str(default))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    handler = {"check": cmd_check, "layers": cmd_layers}.get(args.command)
    try:
        if handler is None and args.command in TOOL_COMMANDS:
            from .tools_cli import run_tool_command

            return run_tool_command(args)
        if handler is None:
            from .commands import run_command

            return run_command(args)
        return handler(args)
    except CnncError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
