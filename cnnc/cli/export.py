"""``cnnc export``: the command line of :mod:`cnnc.tools.export_onnx` and (``--format torch``)
:mod:`cnnc.tools.export_torch`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..text import plural
from ..errors import UsageError
from ..tools.export_onnx import (DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ExportError, check_opset, export,
                                 require_onnx)
from .common import add_model_args, compile_from_args, load_weights


def register(sub) -> None:
    model_args, fmt = add_model_args, argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "export", help="export a model (with trained or seeded weights) to ONNX",
        formatter_class=fmt,
        description="Write the model as an ONNX file for inference elsewhere (onnxruntime, "
                    "TensorRT, ...). Weights come from a checkpoint (--weights) or are initialized "
                    "from --seed. Dropout is exported as the identity, batch norm with its running "
                    "statistics; the input is the normalized image, as `cnnc predict` feeds it "
                    "(the checkpoint's mean and std are stored in the model's metadata and its input "
                    "is described in its doc string), or raw pixels with --with-preprocessing. Values "
                    "and initializers are named after cnnc's layers (conv_1, conv_1.w).",
        epilog="examples:\n  cnnc export models/lenet5.cnn --weights runs/lenet5 -o lenet5.onnx\n"
               "  cnnc export models/resnet18.cnn -o resnet18.onnx --opset 18 --seed 1\n"
               "  cnnc export models/lenet5.cnn --format torch -o lenet5.py --weights runs/lenet5\n"
               "      (PyTorch source, and the weights as lenet5.safetensors)")
    model_args(p, file_required=False)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the file to write: .onnx, or the .py of --format torch")
    p.add_argument("--format", choices=("onnx", "torch"), default="onnx",
                   help="onnx (default), or torch: a self-contained PyTorch nn.Module source; with "
                        "--weights also the weights as a .safetensors file beside it")
    p.add_argument("--weights", metavar="CKPT", help="a checkpoint file or run folder (default: "
                                                     "weights initialized from --seed)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the initial weights (default 0)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="put the input normalization into the model (its first nodes: / 255, - mean, "
                        "/ std per channel) so that a client feeds raw pixel values 0..255")


def cmd_export_torch(args) -> int:
    from ..tools.export_torch import write

    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give the .py file to write")
    weights_out = None
    if args.weights:
        model, net, _, _, _ = load_weights(args)
        weights_out = out.with_suffix(".safetensors")
    else:
        model, net = compile_from_args(args), None
    _, w = write(model, net, out, weights_out)
    print(f"wrote {out}: {plural(len(model.layers), 'layer')}, {model.summary.total_params:,} parameters"
          + (f"; weights {w}" if w else ""))
    return 0


def cmd_export(args) -> int:
    if args.format == "torch":
        return cmd_export_torch(args)
    check_opset(args.opset)
    require_onnx()
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give the .onnx file to write")
    normalization = None
    if args.weights:
        model, net, arrays, meta, path = load_weights(args)
        from .train import describe_weights

        print(f"weights: {describe_weights(path, meta)}")
        metadata = {"cnnc.weights": str(path)}
        if "data.mean" in arrays and "data.std" in arrays:
            normalization = (arrays["data.mean"].ravel(), arrays["data.std"].ravel())
        for key in ("data.mean", "data.std"):
            if key in arrays:
                metadata[f"cnnc.{key}"] = json.dumps([float(v) for v in arrays[key].ravel()])
        if meta.get("class_names"):
            metadata["cnnc.class_names"] = json.dumps(meta["class_names"])
    else:
        model = compile_from_args(args)
        shape = model.summary.output_shape
        if len(shape) != 1:
            raise ExportError(f"{model.filename} ends in {'x'.join(map(str, shape))}: cnnc executes, and so "
                              "exports, classifiers only (networks ending in one score per class)",
                              hint="end the network with fc (or gap - fc)")
        net = model.network(seed=args.seed)
        metadata = {"cnnc.weights": f"initialized from seed {args.seed}"}
    metadata["cnnc.input_shape"] = "x".join(map(str, model.input_shape))
    metadata["cnnc.model_text"] = model.source
    onnx_model = export(net, out, args.opset, metadata, normalization, args.with_preprocessing)
    n_nodes = len(onnx_model.graph.node)
    print(f"wrote {out}: opset {args.opset}, {plural(len(model.layers), 'layer')} -> {plural(n_nodes, 'ONNX node')}, "
          f"{net.num_params:,} parameters, input {onnx_model.graph.input[0].name} "
          f"N x {'x'.join(map(str, model.input_shape))}, output {onnx_model.graph.output[0].name}")
    print(onnx_model.doc_string.split("\n", 1)[0])  # what the input is
    return 0


COMMANDS = {"export": cmd_export}
