"""The ``cnnc`` command line: a thin layer over the Python API.

Every user mistake is a :class:`cnnc.CnncError`: printed as one message, exit status 1.
Anything else is a bug in cnnc and shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..version import __version__
from .commands import add_model_args, add_runtime_commands, compile_from_args, run_command
from ..errors import CnncError, UsageError
from .tools import TOOL_COMMANDS

DESCRIPTION = """\
cnnc compiles convolutional networks written the way lectures write them,
e.g. [[conv3-relu]*2 - pool]*3 - fc, checks them (shapes, parameters, MACs,
receptive field, memory) and trains them with compiled CPU kernels."""

EPILOG = """\
examples:
  cnnc check models/lenet5.cnn
  cnnc check -e '[[conv3-relu]*2 - pool]*3 - fc' --input 3x32x32 --classes 10
  cnnc train models/digits.cnn
  cnnc draw models/resnet18.cnn -o resnet18.svg
  cnnc viz models/digits.cnn --weights runs/digits --what saliency -o viz/
  cnnc layers
run 'cnnc COMMAND --help' for the options of a command."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2; we keep 1 for every bad input
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(1)


def build_parser(runtime: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; ``runtime=False`` leaves out the commands that run networks
    (train, eval, predict, bench, draw, viz), whose registration imports NumPy and the
    visualizations: ``cnnc check`` and ``cnnc layers`` start faster without them."""
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
    add_model_args(p, file_required=False)
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="batch size for the memory figures (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--sweep", metavar="NAME=A..B,...",
                   help="check every design: N=1..3,M=1..4 (ranges), K=1|2|4 or pool=on|off (lists); "
                        "one row per design with parameters, MACs, output, training memory or its error")

    p = sub.add_parser("layers", help="list the layers the language knows",
                       description="List every layer with its arguments and defaults.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    if runtime:
        add_runtime_commands(sub)
        from .viz_args import add_commands as add_view_commands  # `cnnc draw` and `cnnc viz`

        add_view_commands(sub, add_model_args)
        from .tools import add_tool_commands  # diff, gradcheck, export, import-weights

        add_tool_commands(sub, add_model_args)
    return parser


def cmd_check(args) -> int:
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if args.sweep is not None:
        return _cmd_sweep(args)
    model = compile_from_args(args)
    if args.json:
        print(model.to_json(batch=args.batch))
    else:
        print(model.summary_text(batch=args.batch))
    return 0


def _cmd_sweep(args) -> int:
    """``cnnc check ... --sweep N=1..3,M=1..4``: one row per design (issue 11)."""
    from pathlib import Path

    from ..tools.sweep import sweep, sweep_text

    if getattr(args, "expr", None) is not None and args.file is not None:
        raise UsageError("give a model file or -e EXPR, not both")
    if args.expr is None and args.file is None:
        raise UsageError("no model given", hint="usage: cnnc check FILE --sweep N=1..3")
    if args.expr is not None:
        source, filename = args.expr, "<expr>"
    else:
        try:
            source, filename = Path(args.file).read_text(encoding="utf-8"), args.file
        except (OSError, UnicodeDecodeError):
            import cnnc

            cnnc.compile_file(args.file)  # raises the usual UsageError for the file
            raise
    result = sweep(source, args.sweep, filename=filename, given=args.set, batch=args.batch,
                   input=args.input, classes=args.classes, width=args.width)
    print(json.dumps(result.to_dict(), indent=2) if args.json else sweep_text(result))
    return 0


def cmd_layers(args) -> int:
    from ..layers import layer_types

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
                 for a in it["args"] if not (it["size_suffix"] and a["name"] == "size")]
        if parts:
            sig += "(" + ", ".join(parts) + ")"
        alias = f"  (also: {', '.join(it['aliases'])})" if it["aliases"] else ""
        print(f"{sig:<52} {it['summary']}{alias}")
    print("\nmerges: ( a | b ) concatenates channels, ( a + b ) sums; repeat with x*N or [ ... ]*N")
    return 0


def _default_text(default) -> str:
    return {"None": "auto", "default": "auto", "True": "true", "False": "false"}.get(str(default), str(default))


def _rank_prefix() -> str:
    """``rank N: `` for the messages of an MPI rank other than 0 (from its launcher's variables)."""
    import os

    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    return f"rank {rank}: " if rank not in (None, "", "0") else ""


STATIC_COMMANDS = ("check", "layers")  # need no runtime: see build_parser(runtime=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(runtime=not (argv and argv[0] in STATIC_COMMANDS))
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 1
    handler = {"check": cmd_check, "layers": cmd_layers}.get(args.command)
    try:
        if handler is None and args.command in TOOL_COMMANDS:
            from .tools import run_tool_command

            return run_tool_command(args)
        if handler is None:
            if args.command in ("draw", "viz"):
                from . import viz as command

                return {"draw": command.cmd_draw, "viz": command.cmd_viz}[args.command](args)
            return run_command(args)
        return handler(args)
    except CnncError as err:
        sys.stderr.write(f"{_rank_prefix()}{err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
