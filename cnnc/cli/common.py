"""What every command shares: the model arguments (a file or ``-e EXPR`` and the header
overrides), the training flags derived from the settings table, compiling the model the
command line names, and loading a checkpoint onto it.

The NumPy, kernel and data imports stay inside the functions, so that ``cnnc check`` never
imports Numba.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import CheckpointError, UsageError
from ..lang.settings import FLAG_GROUPS, TRAINING


def add_model_args(p: argparse.ArgumentParser, file_required: bool = True) -> None:
    """The model: a file (or -e EXPR), and flags for the header lines they may override."""
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
    src.add_argument("--set", metavar="NAME=V,...", dest="set",
                     help="design variables and optional layers, e.g. N=2,M=3,pool=off "
                          "(overrides the file's `let` lines)")


def compile_from_args(args):
    """The model the parsed command line names (its file or -e EXPR, and the overrides)."""
    import cnnc

    if getattr(args, "expr", None) is not None and args.file is not None:
        raise UsageError("give a model file or -e EXPR, not both")
    if getattr(args, "expr", None) is None and args.file is None:
        raise UsageError("no model given", hint="usage: cnnc check FILE  or  cnnc check -e 'EXPR' --input CxHxW")
    kwargs = dict(input=args.input, classes=args.classes, width=args.width,
                  variables=getattr(args, "set", None))
    if getattr(args, "batch", None) is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if args.width is not None and args.width < 1:
        raise UsageError(f"--width must be at least 1, got {args.width}")
    if getattr(args, "expr", None) is not None:
        return cnnc.compile(args.expr, filename="<expr>", **kwargs)
    return cnnc.compile_file(args.file, **kwargs)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """One ``cnnc train`` flag per training setting of :data:`cnnc.lang.settings.TRAINING`, in
    groups, defaults shown in the help. Every flag defaults to None, so that only the flags
    given override the file."""
    groups = {name: parser.add_argument_group(title) for name, title in FLAG_GROUPS.items()}
    for spec in TRAINING:
        if spec.kind == "bool":  # a switch: off unless given (or set in the file)
            groups[spec.group].add_argument(spec.flag, action="store_true", default=None,
                                            help=spec.help)
            continue
        default = spec.default_text or (f"{spec.default:g}" if spec.kind == "float"
                                        else str(spec.default))
        kwargs: dict[str, Any] = {"help": f"{spec.help} (default {default})"}
        if spec.kind == "choice" and spec.strict_choices:
            kwargs["choices"] = list(spec.choices)
        else:
            kwargs.update(type=spec.type, metavar=spec.metavar)
        groups[spec.group].add_argument(spec.flag, **kwargs)


def compile_with_classes(args, classes=None):
    """:func:`compile_from_args`, with ``classes`` (a checkpoint's) unless --classes is given."""
    if classes is not None and args.classes is None:
        args.classes = classes
    return compile_from_args(args)


def load_weights(args):
    """Model (classes from the checkpoint when not given), network with its weights, meta."""
    from ..training.runs import find_weights, load_training_checkpoint, params_of

    p = find_weights(args.weights)
    arrays, meta = load_training_checkpoint(p)
    model = compile_with_classes(args, classes=meta.get("classes"))
    if list(model.input_shape) != list(meta.get("input_shape", [])):
        raise CheckpointError(
            f"{p} was trained for inputs {'x'.join(map(str, meta.get('input_shape', [])))}, "
            f"but the model takes {'x'.join(map(str, model.input_shape))}")
    net = model.network()
    try:
        net.load_state(params_of(arrays))
    except UsageError as err:
        raise CheckpointError(f"{p}: {err.message}",
                              hint="the checkpoint was made for another model") from None
    return model, net, arrays, meta, p


def set_threads(threads: int | None) -> None:
    """``--threads N``: the kernels' thread pool, and ``$CNNC_THREADS`` for the processes this
    one starts (MPI ranks, compile-time measurements)."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    from ..kernels.threads import configure

    os.environ["CNNC_THREADS"] = str(threads)
    configure(threads)


def model_argv(args) -> list[str]:
    argv = [args.file] if args.file else ["-e", args.expr]
    for flag in ("input", "classes", "width", "set"):
        v = getattr(args, flag)
        if v is not None:
            argv += [f"--{flag}", str(v)]
    return argv



def rank_prefix() -> str:
    """``rank N: `` for the messages of an MPI rank other than 0 (from its launcher's variables)."""
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    return f"rank {rank}: " if rank not in (None, "", "0") else ""
