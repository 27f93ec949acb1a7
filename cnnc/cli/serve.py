"""``cnnc serve``: the live page of a run folder (:mod:`cnnc.live`), for a finished run or
one training in another process (``cnnc train --workers N`` included: rank 0 writes it)."""
from __future__ import annotations

import argparse
import sys

from ..errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="show a run's live page (finished, or training in another process)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the page of `cnnc train --live` for a run folder: its curves, activation "
                    "maps, filters, test panel and confusion matrix, followed as the run's live/ "
                    "folder grows. A run trained without --live shows its history. The controls "
                    "work only on the page of the training process itself.",
        epilog="example:\n  cnnc serve runs/digits")
    p.add_argument("run", metavar="RUN", help="a run folder (runs/<model>...)")
    p.add_argument("--port", type=int, default=0, metavar="N", help="the page's port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="the address to listen on (default 127.0.0.1; another address warns)")


def cmd_serve(args) -> int:
    from ..live import serve_run

    if not 0 <= args.port < 65536:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    server = serve_run(args.run, host=args.host, port=args.port)
    print(f"live page: {server.url}", flush=True)
    print("Ctrl-C stops serving", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        server.closing.set()
        server.server_close()
    return 0


COMMANDS = {"serve": cmd_serve}
