"""``cnnc check`` (one design, or every design of a ``--sweep``) and ``cnnc layers``: the
static commands. They need no NumPy and no kernels (:func:`cnnc.cli.main.build_parser` leaves
the other commands out when one of these runs)."""
from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .common import add_model_args, compile_from_args


def register(sub) -> None:
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


def cmd_check(args) -> int:
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if args.sweep is not None:
        return cmd_sweep(args)
    model = compile_from_args(args)
    if args.json:
        print(model.to_json(batch=args.batch))
    else:
        print(model.summary_text(batch=args.batch))
    return 0


def cmd_sweep(args) -> int:
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
            from ..compiler import compile_file

            compile_file(args.file)  # raises the usual UsageError for the file
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
        parts = [a["name"] if a["positional"] else f"{a['name']}={default_text(a['default'])}"
                 for a in it["args"] if not (it["size_suffix"] and a["name"] == "size")]
        if parts:
            sig += "(" + ", ".join(parts) + ")"
        alias = f"  (also: {', '.join(it['aliases'])})" if it["aliases"] else ""
        print(f"{sig:<52} {it['summary']}{alias}")
    print("\nmerges: ( a | b ) concatenates channels, ( a + b ) sums; repeat with x*N or [ ... ]*N")
    return 0


def default_text(default) -> str:
    return {"None": "auto", "default": "auto", "True": "true", "False": "false"}.get(str(default), str(default))



COMMANDS = {"check": cmd_check, "layers": cmd_layers}
