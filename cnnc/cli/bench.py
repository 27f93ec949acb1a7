"""``cnnc bench``: the command line of :mod:`cnnc.tools.bench` (training and inference speed,
compile times and memory on random data)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError
from .common import add_model_args, check_memory, compile_from_args, set_threads


def register(sub) -> None:
    model_args = add_model_args
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("bench", help="measure training and inference speed on random data",
                       formatter_class=fmt,
                       description="Compile the model and measure training throughput (SGD with "
                                   "momentum), inference throughput at --batch, inference latency at "
                                   "batch 1 (the median of 10 x --steps calls of net.forward on one "
                                   "image, after warm-up), achieved GFLOP/s, compile time "
                                   "(cold and warm kernel cache) and peak memory, on random data of "
                                   "the model's input shape. No data set needed.",
                       epilog="example:\n  cnnc bench models/lenet5.cnn --batch 64")
    model_args(p)
    p.add_argument("--batch", type=int, default=64, metavar="N", help="batch size (default 64)")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="steps per timing run (default 20)")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timing runs; the median is shown")
    p.add_argument("--no-compile-times", action="store_true",
                   help="skip the cold/warm compile measurements (they run two subprocesses)")
    p.add_argument("--layers", action="store_true",
                   help="also profile each layer: forward and backward ms and GFLOP/s in a training "
                        "step, and each layer's inference forward at batch 1 with the time spent "
                        "between the kernels (the whole forward minus the layers' sum)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="kernel threads (default: $CNNC_THREADS, else the cores nothing else keeps busy)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_bench(args) -> int:
    from ..tools.bench import (batch1_calls, bench, format_bench, format_layer_profile,
                               format_layer_profile_batch1, layer_profile, layer_profile_batch1)

    if args.batch < 1 or args.steps < 1 or args.repeats < 1:
        raise UsageError("--batch, --steps and --repeats must be at least 1")
    set_threads(args.threads)  # the compile-time subprocesses too
    batch = args.batch
    model = compile_from_args(args)
    check_memory(args, model, batch, training=True)
    from ..runtime.notice import CompileNotice

    def progress(text: str) -> None:  # on stderr: stdout holds the report (or its JSON)
        print(text, file=sys.stderr, flush=True)

    with CompileNotice():
        result = bench(model, batch=batch, steps=args.steps, repeats=args.repeats,
                       compile_times=not args.no_compile_times,
                       progress=progress)
        if args.layers:
            progress("profiling each layer ...")
            result["layers"] = layer_profile(model, batch=batch, steps=args.steps)
            progress("profiling each layer's forward at batch 1 ...")
            result["layers_batch1"] = layer_profile_batch1(model, calls=batch1_calls(args.steps))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_bench(result))
        if args.layers:
            print()
            print(format_layer_profile(result["layers"], batch))
            print()
            print(format_layer_profile_batch1(result["layers_batch1"]))
    return 0



COMMANDS = {"bench": cmd_bench}
