"""What ``cnnc train --live`` costs: the same training with and without the live page, runs
alternating (off, on, on, off, ...), one page open on every live run (a client reading the
event stream, as a browser tab does; the browser's own drawing happens in its process).

    python examples/live_cost.py lenet5 --rounds 3       # LeNet-5 on MNIST (../shared/data)
    python examples/live_cost.py vgg --rounds 3          # models/vgg_cifar.cnn on random 3x32x32 data
    python examples/live_cost.py lenet5 --blocks 4       # one run, live on/off every 4 s

Prints images/s (training steps only, from history.json, first epoch left out: it warms up)
per run and the median of each mode; docs/live.md has the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def page(url: str, stop: threading.Event, stats: dict) -> None:
    """An open page: read the event stream until the run ends."""
    base, token = url.split("/?token=")
    try:
        with urllib.request.urlopen(f"{base}/events?token={token}", timeout=600) as r:
            while not stop.is_set():
                chunk = r.read1(65536)
                if not chunk:
                    break
                stats["bytes"] = stats.get("bytes", 0) + len(chunk)
    except OSError:
        pass


def run(args: list[str], live: bool, folder: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "cnnc", "train", *args, "--out", str(folder), "--quiet"]
    if live:
        cmd.append("--live")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    stats: dict = {}
    stop = threading.Event()
    reader = None
    if live:
        line = proc.stderr.readline()
        m = re.search(r"(http://\S+)", line)
        if not m:
            raise SystemExit(line + proc.stderr.read())
        reader = threading.Thread(target=page, args=(m.group(1), stop, stats), daemon=True)
        reader.start()
    out, err = proc.communicate()
    stop.set()
    if proc.returncode:
        raise SystemExit(err)
    if live:  # the time the training thread spent in the live hook, from the run's end event
        end = json.loads((folder / "live" / "events.jsonl").read_text().splitlines()[-1])
        if end.get("hook_seconds") is not None:
            stats["hook_share"] = end["hook_seconds"] / max(end["train_seconds"], 1e-9)
    history = json.loads((folder / "history.json").read_text())
    rates = [h["images_per_s"] for h in history[1:]] or [history[0]["images_per_s"]]
    return statistics.mean(rates), stats


class Blocks:
    """A hook that switches the live writer on and off every ``seconds`` and counts the steps
    and the time of each block: the two modes interleave finely, so a machine whose load
    drifts (other jobs) affects both alike."""

    def __init__(self, writer, seconds: float):
        self.writer, self.seconds = writer, seconds
        self.on = False
        self.t0 = time.perf_counter()
        self.steps = 0
        self.blocks: dict[bool, list[float]] = {False: [], True: []}

    def on_step(self, trainer, loss, correct):
        if self.on:
            self.writer.on_step(trainer, loss, correct)
        self.steps += 1
        now = time.perf_counter()
        if now - self.t0 >= self.seconds:
            self.blocks[self.on].append(self.steps * trainer.batch / (now - self.t0))
            self.on, self.t0, self.steps = not self.on, time.perf_counter(), 0

    def on_epoch(self, trainer, row, val):
        self.writer.on_epoch(trainer, row, val)
        self.t0, self.steps = time.perf_counter(), 0  # the evaluation is not a block

    def on_control(self, trainer, action, value):
        self.writer.on_control(trainer, action, value)


def in_process(net: str, epochs: int, limit: int, seconds: float, tmp: str) -> None:
    import cnnc
    from cnnc.live import LiveSession

    if net == "lenet5":
        model = cnnc.compile_file(ROOT / "models" / "lenet5.cnn")
        data = dict(data="mnist", data_dir=str(ROOT.parent / "shared" / "data"), fit=True)
    else:
        import numpy as np

        model = cnnc.compile_file(ROOT / "models" / "vgg_cifar.cnn")
        rng = np.random.default_rng(0)
        data = dict(x=rng.integers(0, 256, (limit, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, limit))
    live = LiveSession(model, log=lambda m: None).start()
    blocks = Blocks(live.writer, seconds)
    stop, stats = threading.Event(), {}
    if os.environ.get("LIVE_COST_NO_PAGE") != "1":
        threading.Thread(target=page, args=(live.url, stop, stats), daemon=True).start()
    result = cnnc.fit(model, out=Path(tmp) / "blocks", epochs=epochs, limit=limit, hooks=[blocks], **data)
    live.close(result)
    stop.set()
    off, on = (statistics.median(blocks.blocks[m]) for m in (False, True))
    print(f"{net}: {len(blocks.blocks[False])} + {len(blocks.blocks[True])} blocks of {seconds:g} s; median "
          f"off {off:.1f} images/s, live {on:.1f} images/s: {100 * (off - on) / off:+.1f}% slower with --live; "
          f"the hook took {100 * live.writer.hook_seconds / max(result.seconds, 1e-9):.2f}% of the training "
          f"thread's time, the writer thread {100 * live.writer.writer_seconds / max(result.seconds, 1e-9):.2f}% "
          f"of a core; the page read {stats.get('bytes', 0) // 1024} KiB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("net", choices=["lenet5", "vgg"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=12000)
    p.add_argument("--blocks", type=float, metavar="SECONDS",
                   help="one process, the live writer switched on and off every SECONDS (a page open "
                        "throughout) instead of whole runs")
    a = p.parse_args()
    if a.blocks:
        with tempfile.TemporaryDirectory() as tmp:
            in_process(a.net, a.epochs, a.limit, a.blocks, tmp)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if a.net == "lenet5":
            args = ["models/lenet5.cnn", "--data", "mnist", "--data-dir", str(ROOT.parent / "shared" / "data"),
                    "--fit", "--limit", str(a.limit), "--epochs", str(a.epochs)]
        else:
            import numpy as np

            rng = np.random.default_rng(0)
            n = a.limit
            data = Path(tmp) / "random.npz"
            np.savez(data, x=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, n),
                     x_test=rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8), y_test=rng.integers(0, 10, 200))
            args = ["models/vgg_cifar.cnn", "--data", str(data), "--epochs", str(a.epochs)]
        results: dict[bool, list[float]] = {False: [], True: []}
        for r in range(a.rounds):
            for live in ((False, True) if r % 2 == 0 else (True, False)):
                t = time.perf_counter()
                rate, stats = run(args, live, Path(tmp) / f"run{r}{int(live)}")
                results[live].append(rate)
                print(f"round {r + 1} {'live' if live else 'off '}: {rate:8.1f} images/s "
                      f"({time.perf_counter() - t:.1f} s"
                      + (f", page read {stats.get('bytes', 0) // 1024} KiB, hook {100 * stats.get('hook_share', 0):.2f}%"
                         " of the training thread" if live else "") + ")",
                      flush=True)
    off, on = statistics.median(results[False]), statistics.median(results[True])
    print(f"median: off {off:.1f} images/s, live {on:.1f} images/s: {100 * (off - on) / off:+.1f}% slower with --live")


if __name__ == "__main__":
    main()
