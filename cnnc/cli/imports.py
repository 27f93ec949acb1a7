"""``cnnc import``: the command line of :mod:`cnnc.tools.onnx_import`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "import", help="an ONNX model as a .cnn file in lecture notation (and its weights as a checkpoint)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read an ONNX model (Conv, Gemm/MatMul, BatchNormalization, the usual activations, "
                    "pooling, Add, Concat, LRN, ...) and write it as cnnc model text: repeated blocks "
                    "become definitions (res(c) = ( ... + id ) - relu), runs of equal groups are folded "
                    "([conv3(64) - relu]*2), defaults are left out. The text is checked and compiled "
                    "before anything is written; its parameter count must equal the file's. "
                    "--weights-out writes the weights as a checkpoint for eval, predict, viz and export.",
        epilog="examples:\n  cnnc import resnet18.onnx -o resnet18.cnn --weights-out runs/resnet18\n"
               "  cnnc import lenet5.onnx                 # the text on stdout")
    p.add_argument("file", metavar="MODEL.onnx", help="the ONNX file to read")
    p.add_argument("-o", "--output", metavar="FILE", help="the .cnn file to write (default: stdout)")
    p.add_argument("--weights-out", metavar="RUN", help="write the weights as a checkpoint: a run folder "
                                                        "(its best.npz) or an .npz file")
    p.add_argument("--mean", metavar="M[,M,...]", help="the input normalization the weights expect, per "
                                                       "channel on the 0..1 pixel scale (default 0)")
    p.add_argument("--std", metavar="S[,S,...]", help="likewise the standard deviation (default 1)")


def cmd_import(args) -> int:
    from ..atomic import atomic_write_text
    from ..tools.onnx_import import import_onnx, norm_values, write_checkpoint

    out = Path(args.output) if args.output else None
    if out is not None and out.is_dir():
        raise UsageError(f"{out} is a directory; give the .cnn file to write")
    result = import_onnx(args.file, name=str(out) if out else None)
    c = result.model.input_shape[0]
    norm_values(args.mean, c, "mean", 0.0)  # bad --mean/--std: an error before anything is written
    norm_values(args.std, c, "std", 1.0)
    layers = len(result.model.layers)
    if out is None:
        sys.stdout.write(result.text)
    else:
        atomic_write_text(out, result.text)
        print(f"wrote {out}: {result.lines} lines, {layers} layers, {result.param_count:,} parameters "
              f"(as in {Path(args.file).name})")
    if args.weights_out:
        path = write_checkpoint(result, args.weights_out, args.file, mean=args.mean, std=args.std)
        print(f"wrote {path}: the imported weights", file=sys.stderr if out is None else sys.stdout)
    return 0


COMMANDS = {"import": cmd_import}
