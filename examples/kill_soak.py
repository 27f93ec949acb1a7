"""Kill soak: kill a digits training run at random moments (SIGKILL), resume it, and check
that every resumed run ends bit-identical to an uninterrupted one.

    python examples/kill_soak.py                  # 100 kills, half beside 2 busy processes
    python examples/kill_soak.py --kills 10 --busy 0.5 --seed 1
    python examples/kill_soak.py --points         # one kill at each crash point (CNNC_CRASH_AT)

Each kill: ``cnnc train`` starts in a fresh process with its own run folder, is killed with
SIGKILL after a random delay (uniform from the last half of its start-up to the end of the
uninterrupted run's wall time, so kills land during loading, the steps, the validation
passes and the commits alike), and is then
continued with ``cnnc train --resume`` until it finishes (resumed again if a kill landed
before the first commit: then it starts over). The finished folder must match the reference
run: every array of ``checkpoint.npz`` and ``best.npz`` (weights, optimizer state,
normalization) bit for bit, their metadata but for the wall-clock seconds, and
``history.json`` but for its timings. With ``--busy F`` a fraction F of the kills run while
two other processes keep both cores busy (so the thread count changes under load).
Prints one line per kill and a summary; exits 1 if any run differs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = """\
input 1x8x8
classes 10

conv3(8) - bn - relu - pool - dropout(0.25) - fc(32) - relu - fc

data digits
batch 32
optimizer adam
lr 0.003
schedule cosine
"""
ARGS = ["--epochs", "3", "--augment", "crop1", "--quiet"]
#: the crash points of cnnc/training/runs/commit.py and the Trainer, for --points
POINTS = ["validation", "validation:2", "before-commit", "written:checkpoint.npz",
          "written:history.csv", "written:history.json", "before-manifest", "after-manifest",
          "published:checkpoint.npz", "published:best.npz", "published:history.json",
          "after-manifest:2", "published:best.npz:2", "after-manifest:4"]


def cnnc_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "cnnc", "train", *map(str, args)]


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ, CNNC_OFFLINE="1", CNNC_COMPILE_NOTICE="0")
    e.pop("CNNC_CRASH_AT", None)
    e.update(extra or {})
    return e


def run(cmd, extra_env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(extra_env), capture_output=True, text=True, timeout=timeout)


def strip_history(h: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s", "elapsed")} for row in h]


def strip_meta(meta: dict) -> dict:
    meta = json.loads(json.dumps(meta))
    meta.get("position", {}).pop("seconds", None)
    meta["history"] = strip_history(meta.get("history", []))
    return meta


def load(path: Path):
    from cnnc.training.runs import load_checkpoint

    return load_checkpoint(path)


def differences(ref: Path, got: Path) -> list[str]:
    """What differs between two finished run folders (empty: bit-identical)."""
    out = []
    for name in ("checkpoint.npz", "best.npz"):
        if not (got / name).exists():
            out.append(f"{name} missing")
            continue
        (a, ma), (b, mb) = load(ref / name), load(got / name)
        if set(a) != set(b):
            out.append(f"{name}: arrays {sorted(set(a) ^ set(b))}")
        for k in sorted(set(a) & set(b)):
            if a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes():
                out.append(f"{name}: {k} differs ({int(np.sum(a[k] != b[k]))} elements)")
        if strip_meta(ma) != strip_meta(mb):
            out.append(f"{name}: metadata differs")
    try:
        ha = json.loads((ref / "history.json").read_text())
        hb = json.loads((got / "history.json").read_text())
        if strip_history(ha) != strip_history(hb):
            out.append("history.json differs")
    except (OSError, ValueError) as err:
        out.append(f"history.json: {err}")
    left = [p.name for p in got.iterdir() if p.name.endswith((".tmp", ".link"))]
    if left:
        out.append(f"temporary files left: {left}")
    return out


class Busy:
    """Two processes spinning on the two cores."""

    def __init__(self, n: int = 2):
        self.n, self.procs = n, []

    def __enter__(self):
        spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"  # ends with the soak
        self.procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def finish(model: Path, out: Path, log: list[str]) -> None:
    """Resume ``out`` until it finishes (a kill before the first commit left nothing to
    resume: then train it afresh)."""
    for _ in range(3):
        if (out / "run.json").exists() or (out / "checkpoint.npz").exists():
            r = run(cnnc_cmd(model, "--resume", out, "--quiet", "--json"))
        else:
            shutil.rmtree(out, ignore_errors=True)
            r = run(cnnc_cmd(model, *ARGS, "--out", out, "--json"))
        if r.returncode == 0:
            return
        log.append(f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
    raise RuntimeError("; ".join(log))


def one_kill(model: Path, out: Path, delay: float | None, crash_at: str | None) -> tuple[str, list[str]]:
    """Start, kill (after ``delay`` s, or at crash point ``crash_at``), resume; what happened."""
    extra = {"CNNC_CRASH_AT": crash_at} if crash_at else None
    proc = subprocess.Popen(cnnc_cmd(model, *ARGS, "--out", out), env=env(extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    killed = proc.returncode == -signal.SIGKILL
    log: list[str] = []
    stage = "nothing saved"
    manifest = out / "run.json"
    if manifest.exists():
        stage = f"generation {json.loads(manifest.read_text())['generation']}"
    finish(model, out, log)
    return ("killed, " + stage) if killed else "finished before the kill", log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--busy", type=float, default=0.5, help="fraction of kills beside 2 busy processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", action="store_true", help="kill once at each crash point instead")
    ap.add_argument("--training", action="store_true",
                    help="kill only from the middle of the first epoch to the end (not during start-up)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kill_soak-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "soak.cnn"
    model.write_text(MODEL)
    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    warm = run(cnnc_cmd(model, *ARGS, "--out", work / "warm-up"))  # compiles the kernels if the
    shutil.rmtree(work / "warm-up", ignore_errors=True)               # cache is cold: not timed
    if warm.returncode != 0:
        print(warm.stderr, file=sys.stderr)
        return 1
    t0 = time.monotonic()
    proc = subprocess.Popen(cnnc_cmd(model, *ARGS, "--out", ref, "--json"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ref.exists() and proc.poll() is None:  # the folder appears when training starts
        time.sleep(0.01)
    start = time.monotonic() - t0
    while not (ref / "run.json").exists() and proc.poll() is None:  # epoch 1 committed
        time.sleep(0.005)
    first_commit = time.monotonic() - t0
    if args.training:  # from the middle of the first epoch on: kills while training and committing
        start = first_commit
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        print(stderr, file=sys.stderr)
        return 1
    wall = time.monotonic() - t0
    print(f"reference run: {wall:.1f} s wall ({start:.1f} s to the start of training), test accuracy "
          f"{json.loads(stdout)['accuracy']:.4f}", flush=True)
    rng = random.Random(args.seed)
    # the moments: uniform from the last half of the start-up to the end of the run (a kill
    # earlier has nothing to lose, and start-up is most of a short run's wall time)
    plan = ([(None, p, False) for p in POINTS] if args.points else
            [(rng.uniform(start / 2, wall), None, i < round(args.busy * args.kills))
             for i in range(args.kills)])
    if not args.points:
        rng.shuffle(plan)
    failures, killed = 0, 0
    for i, (delay, point, busy) in enumerate(plan, 1):
        out = work / f"run-{i:03d}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            if busy:
                with Busy():
                    what, log = one_kill(model, out, delay, point)
            else:
                what, log = one_kill(model, out, delay, point)
            diff = differences(ref, out)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            what, log, diff = "error", [], [str(err)]
        killed += what.startswith("killed")
        failures += bool(diff)
        at = f"at {point}" if point else f"after {delay:.2f} s"
        print(f"{i:3d}/{len(plan)} {at}{' (busy)' if busy else ''}: {what}: "
              + ("bit-identical" if not diff else "DIFFERS: " + "; ".join(diff)) , flush=True)
        if not diff and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"{len(plan)} runs, {killed} killed before finishing, {len(plan) - failures} bit-identical "
          f"after --resume, {failures} differ", flush=True)
    if not args.keep and failures == 0:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
