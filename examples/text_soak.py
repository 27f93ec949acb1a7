"""Model-text soak: generated and mutated model texts through ``cnnc.compile``.

    python examples/text_soak.py                 # 10,000 texts
    python examples/text_soak.py --count 500 --seed 3 --show 5

Every text must either compile or raise a :class:`cnnc.SourceError` whose span has a line
and column inside the text; any other exception (a bug), an error without a position, or a
text that takes over ``--limit`` seconds (default 2) is a failure. Texts come from three
sources: random networks built from the whole language (layers with random arguments,
repetitions, branches, sums, definitions, design variables, optional layers, headers and
training settings), the models in ``models/``, and mutations of either (characters deleted,
inserted, replaced or duplicated, tokens swapped, numbers replaced by 0, -1 or huge values,
the text cut short). Prints a summary; exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import traceback
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"
ACTS = ["relu", "leaky", "leaky(0.1)", "elu", "elu(0.5)", "tanh", "sigmoid"]
SPECIALS = list("()[]|+-*=,?#:.\n\t ") + ["->", "x", "0", "-1", "1e9", "é", "\x00", "'", '"']


def rand_conv(r: random.Random) -> str:
    k = r.choice(["conv3", "conv5", "conv1", "conv1x7", "conv7x1", "conv", "conv11", "conv0"])
    args = []
    if r.random() < 0.7:
        args.append(str(r.choice([1, 4, 8, 16, 32, 3, 0, -2])))
    for name, values in (("stride", [1, 2, 3, 0]), ("pad", ["same", "valid", 0, 1, 2, -1]),
                         ("dilation", [1, 2, 0]), ("groups", [1, 2, 4, 3]), ("bias", ["false", "true", 2])):
        if r.random() < 0.2:
            args.append(f"{name}={r.choice(values)}")
    return k + (f"({', '.join(args)})" if args else "")


def rand_layer(r: random.Random, depth: int = 0) -> str:
    roll = r.random()
    if roll < 0.3:
        return rand_conv(r)
    if roll < 0.45:
        return r.choice(ACTS)
    if roll < 0.55:
        return r.choice(["pool", "maxpool3(stride=2)", "avgpool2", "maxpool3(stride=2, round=ceil)",
                         "pool(pad=1)", "maxpool", "avgpool5(stride=1)"])
    if roll < 0.62:
        return r.choice(["bn", "lrn", "lrn(5, alpha=1e-4, beta=0.75, k=2)", "dropout(0.5)", "dropout(1.5)",
                         "maxout(2)", "flatten", "id", "gap"])
    if roll < 0.7:
        return f"fc({r.choice([10, 64, 120, 0])})" if r.random() < 0.8 else "fc"
    if depth < 3 and roll < 0.8:
        return f"[{rand_seq(r, depth + 1)}]*{r.choice([1, 2, 3, 'N', 0])}"
    if depth < 3 and roll < 0.9:
        op = r.choice([" | ", " + "])
        return "(" + op.join(rand_seq(r, depth + 1, 3) for _ in range(r.randint(1, 3))) + ")"
    if roll < 0.95:
        return r.choice(["block(16)", "block(2*C)", "block(8)?", "conv3(C)", "pool?"])
    return rand_conv(r) + "?"


def rand_seq(r: random.Random, depth: int = 0, most: int = 8) -> str:
    return r.choice([" - ", " -> ", "-"]).join(rand_layer(r, depth) for _ in range(r.randint(1, most)))


def rand_model(r: random.Random) -> str:
    lines = []
    if r.random() < 0.9:
        lines.append(r.choice(["input 3x32x32", "input 1x28x28", "input 1x8x8", "input 1x128",
                               "input 3x224x224", "input 3x7x7", "input 0x8x8", "input 3x32"]))
    if r.random() < 0.8:
        lines.append(f"classes {r.choice([10, 2, 1, 0, 1000])}")
    if r.random() < 0.2:
        lines.append(f"width {r.choice([8, 16, 0])}")
    if r.random() < 0.3:
        lines.append(f"let N = {r.choice([1, 2, 3, 0])}")
        lines.append(f"let C = {r.choice([8, 16, 0])}")
    if r.random() < 0.3:
        lines.append("block(c) = conv3(c) - bn - relu")
    lines.append(rand_seq(r) + (" - fc" if r.random() < 0.7 else ""))
    for key, values in (("epochs", [1, 0, 3]), ("lr", [0.1, -1, "x"]), ("batch", [32, 0]),
                        ("optimizer", ["sgd", "adam", "rmsprop"]), ("data", ["digits", "mnist", "nope"])):
        if r.random() < 0.1:
            lines.append(f"{key} {r.choice(values)}")
    return "\n".join(lines) + "\n"


def mutate(r: random.Random, text: str) -> str:
    for _ in range(r.randint(1, 3)):
        if not text:
            return text
        i = r.randrange(len(text))
        j = min(len(text), i + r.randint(1, 6))
        roll = r.random()
        if roll < 0.2:
            text = text[:i] + text[j:]
        elif roll < 0.4:
            text = text[:i] + r.choice(SPECIALS) + text[i:]
        elif roll < 0.55:
            text = text[:i] + r.choice(SPECIALS) + text[i + 1:]
        elif roll < 0.65:
            text = text[:j] + text[i:j] + text[j:]
        elif roll < 0.75:
            text = text[:i]
        elif roll < 0.9:
            digits = [k for k, c in enumerate(text) if c.isdigit()]
            if digits:
                k = r.choice(digits)
                text = text[:k] + r.choice(["0", "-1", "99999999", "1e99", "00", "3.5"]) + text[k + 1:]
        else:
            tokens = text.split(" ")
            if len(tokens) > 2:
                a, b = r.randrange(len(tokens)), r.randrange(len(tokens))
                tokens[a], tokens[b] = tokens[b], tokens[a]
                text = " ".join(tokens)
    return text


def corpus(count: int, seed: int):
    """``count`` (name, text) pairs: a third generated, a third generated then mutated, a
    third the reference models mutated."""
    r = random.Random(seed)
    models = [(p.name, p.read_text()) for p in sorted(MODELS.glob("*.cnn"))]
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield f"generated-{i}", rand_model(r)
        elif kind == 1:
            yield f"mutated-{i}", mutate(r, rand_model(r))
        else:
            name, text = r.choice(models)
            yield f"{name}-mutated-{i}", mutate(r, text)


class _Timeout(BaseException):
    pass


def check(text: str, limit: float, hard: float) -> tuple[str, str, float]:
    """(outcome, detail, seconds): outcome one of ok, positioned, unpositioned, crash, slow."""
    import cnnc

    def alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, hard)
    t0 = time.perf_counter()
    try:
        cnnc.compile(text)
        outcome, detail = "ok", ""
    except cnnc.SourceError as err:
        span = err.span
        lines = text.count("\n") + 2
        good = span is not None and 1 <= span.line <= lines and span.column >= 1
        outcome, detail = ("positioned", "") if good else ("unpositioned", f"{err.kind}: {err.message} span={span}")
    except cnnc.CnncError as err:
        outcome, detail = "unpositioned", f"{type(err).__name__}: {err.message}"
    except _Timeout:
        outcome, detail = "slow", f"over {hard} s (stopped)"
    except Exception:  # noqa: BLE001 - the soak looks for exactly these
        outcome, detail = "crash", traceback.format_exc(limit=3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    if outcome in ("ok", "positioned") and seconds > limit:
        outcome, detail = "slow", f"{seconds:.2f} s"
    return outcome, detail, seconds


def soak(count: int, seed: int, limit: float = 2.0, hard: float = 20.0):
    """Run the soak; returns (counts by outcome, failures [(name, outcome, detail, text)], slowest)."""
    counts = {"ok": 0, "positioned": 0, "unpositioned": 0, "crash": 0, "slow": 0}
    failures, slowest = [], (0.0, "")
    for name, text in corpus(count, seed):
        outcome, detail, seconds = check(text, limit, hard)
        counts[outcome] += 1
        slowest = max(slowest, (seconds, name))
        if outcome not in ("ok", "positioned"):
            failures.append((name, outcome, detail, text))
    return counts, failures, slowest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=2.0, help="seconds a text may take (default 2)")
    ap.add_argument("--show", type=int, default=10, help="failures to print in full")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts, failures, slowest = soak(args.count, args.seed, args.limit)
    for name, outcome, detail, text in failures[:args.show]:
        print(f"--- {name}: {outcome}: {detail}\n{text!r}")
    print(f"{args.count} texts in {time.perf_counter() - t0:.1f} s: {counts['ok']} compiled, "
          f"{counts['positioned']} positioned errors, {counts['unpositioned']} errors without a "
          f"position, {counts['crash']} other exceptions, {counts['slow']} over {args.limit:g} s; "
          f"slowest {slowest[0]:.3f} s ({slowest[1]})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
