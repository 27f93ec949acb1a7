"""The ``cnnc`` command line: a thin layer over the Python API. One module per command
family registers its subcommands and handlers (``register(sub)``, ``COMMANDS``): :mod:`.check`
(check, layers), :mod:`.train` (train, eval, predict), :mod:`.serve`, :mod:`.bench`, :mod:`.viz` (draw, viz),
:mod:`.tools` (diff, gradcheck, import-weights), :mod:`.export` and :mod:`.imports` (import).

Every user mistake is a :class:`cnnc.CnncError`: printed as one message, exit status 1.
Anything else is a bug in cnnc and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Sequence

from ..errors import CnncError
from ..version import __version__
from .common import rank_prefix

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


#: the command families, in the order of ``cnnc --help``; ``check`` first: its module
#: imports nothing heavy, and ``cnnc check`` / ``cnnc layers`` load no other family
FAMILIES = ("check", "train", "serve", "bench", "viz", "tools", "export", "imports")
STATIC_COMMANDS = ("check", "layers")


def _family(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def build_parser(runtime: bool = True) -> argparse.ArgumentParser:
    """The command-line parser; ``runtime=False`` leaves out the commands that run networks
    (train, eval, predict, bench, draw, viz, ...), whose registration imports NumPy and the
    visualizations: ``cnnc check`` and ``cnnc layers`` start faster without them."""
    parser = _Parser(prog="cnnc", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in FAMILIES if runtime else FAMILIES[:1]:
        _family(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    runtime = not (argv and argv[0] in STATIC_COMMANDS)
    if runtime:  # the kernels' environment before anything loads NumPy (cnnc.kernels.environment)
        importlib.import_module("cnnc.kernels")
    parser = build_parser(runtime=runtime)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 1
    handlers = {}
    for name in FAMILIES if runtime else FAMILIES[:1]:
        handlers.update(_family(name).COMMANDS)
    try:
        return handlers[args.command](args)
    except CnncError as err:
        sys.stderr.write(f"{rank_prefix()}{err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write(f"{rank_prefix()}error: out of memory: an allocation failed (the model and "
                         "batch need more memory than this machine has free)\n"
                         "  hint: try a smaller --batch; `cnnc check FILE --batch N` estimates the memory\n")
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
