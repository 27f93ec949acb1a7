"""What every command shares: the model arguments (a file or ``-e EXPR`` and the header
overrides), the training flags derived from the settings table, compiling the model the
command line names, and loading a checkpoint onto it.

The NumPy, kernel and data imports stay inside the functions, so that ``cnnc check`` never
imports Numba.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
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
    if p.prog.split()[-1] in MEMORY_COMMANDS:
        p.add_argument("--force", action="store_true",
                       help="run even when cnnc check's memory estimate exceeds the memory "
                            "this machine has available")


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


#: the commands that refuse a model and batch that would not fit in memory (``--force``)
MEMORY_COMMANDS = ("train", "eval", "predict", "bench", "viz")
#: tests and what-if runs: pretend the machine has this many bytes available
MEMORY_ENV = "CNNC_MEMORY_AVAILABLE"


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> tuple[int | None, str]:
    """Bytes this process can still allocate, and where the figure comes from: MemAvailable
    of /proc/meminfo, or less where a cgroup memory limit (v2 memory.max, v1
    memory.limit_in_bytes) leaves less; ``$CNNC_MEMORY_AVAILABLE`` overrides both. (None, '')
    where nothing can be read."""
    env = os.environ.get(MEMORY_ENV, "").strip()
    if env.isdigit():
        return int(env), f"${MEMORY_ENV}"
    best: tuple[int | None, str] = (None, "")
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    best = (int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file, name in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "the cgroup memory limit"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "the cgroup memory limit")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 1 << 60:
            free = max(0, limit - (usage or 0))
            if best[0] is None or free < best[0]:
                best = (free, f"{name} ({_human(limit)}, {_human(usage or 0)} in use)")
    return best


def _human(n: float) -> str:
    from ..lang.report import human_bytes

    return human_bytes(n)


def check_memory(args, model, batch: int, training: bool) -> None:
    """Refuse (before anything is allocated) a model and batch whose estimated memory,
    ``cnnc check``'s own training or inference figure, exceeds what the machine has
    available, unless ``--force``. The message gives both figures and the batch that fits."""
    if getattr(args, "force", False):
        return
    have, source = available_memory()
    if have is None:
        return

    def need(b: int) -> int:
        m = model.analysis.memory(b)
        return m.training if training else m.inference

    if need(batch) <= have:
        return
    lo, hi = 0, batch  # the largest batch that fits: need() grows with the batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= have:
            lo = mid
        else:
            hi = mid - 1
    kind = "training" if training else "inference"
    fits = (f"batch {lo} fits ({_human(need(lo))}); use --batch {lo}" if lo >= 1 and hasattr(args, "batch")
            else f"batch {lo} fits ({_human(need(lo))})" if lo >= 1
            else "not even batch 1 fits")
    name = model.filename if model.filename not in ("<string>", "<expr>") else "the model"
    raise UsageError(
        f"{name} at batch {batch} needs about {_human(need(batch))} for {kind} (cnnc check's "
        f"estimate), but this machine has {_human(have)} available ({source})",
        hint=f"{fits}, or --force to try anyway")


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
    recorded = meta.get("design") or {}
    if getattr(args, "set", None) is None and recorded:  # the run's --set, unless given again
        args.set = _recorded_design(args, recorded)
    model = compile_with_classes(args, classes=meta.get("classes"))
    if args.command == "eval":
        check_memory(args, model, 500, training=False)  # evaluate()'s batch
    elif args.command == "predict":
        check_memory(args, model, max(1, len(getattr(args, "images", []) or [])), training=False)
    elif args.command == "viz":  # the views run backward passes over --count images
        check_memory(args, model, max(1, getattr(args, "count", None) or 8), training=True)
    if list(model.input_shape) != list(meta.get("input_shape", [])):
        raise CheckpointError(
            f"{p} was trained for inputs {'x'.join(map(str, meta.get('input_shape', [])))}, "
            f"but the model takes {'x'.join(map(str, model.input_shape))}")
    net = model.network()
    try:
        net.load_state(params_of(arrays))
    except UsageError as err:
        used = model.design.as_dict() if model.design is not None else {}
        hint = "the checkpoint was made for another model"
        if recorded != used:
            hint += (f" (it was trained with --set {_design_text(recorded) or 'nothing'}; this one has "
                     f"{_design_text(used) or 'no design values'})")
        raise CheckpointError(f"{p}: {err.message}", hint=hint) from None
    return model, net, arrays, meta, p


def _design_text(design: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in design.items())


def _recorded_design(args, recorded: dict) -> str | None:
    """The recorded design values that the model named on the command line uses (a run of
    another model's file may record names this one does not have)."""
    from ..lang.design import design_names
    from ..lang.syntax import parse

    try:
        text = args.expr if getattr(args, "expr", None) is not None else Path(args.file).read_text("utf-8")
        variables, switches = design_names(parse(text, "<model>"))
        names = variables | switches
    except Exception:  # an unreadable or broken file: compiling it reports the problem
        return None
    used = {k: v for k, v in recorded.items() if k in names}
    return _design_text(used) or None


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


def rank_prefix() -> str:
    """``rank N: `` for the messages of an MPI rank other than 0 (from its launcher's variables)."""
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    return f"rank {rank}: " if rank not in (None, "", "0") else ""
