"""A few hundred generated architectures exported to ONNX and run in onnxruntime.

Each architecture is drawn from a seeded generator of model text (branches, residuals,
pools with ceil rounding and padding, grouped and dilated convolutions, batch norm,
maxout, every activation), compiled by cnnc (drafts cnnc rejects, e.g. a window that does
not fit, are redrawn), given random weights and batch-norm statistics, exported at a
rotating opset and compared with cnnc's forward: max |ort - cnnc| <= 1e-5 x max |cnnc|,
with onnxruntime's graph optimizations off and on."""
from __future__ import annotations

import random

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import cnnc  # noqa: E402
from cnnc.errors import CnncError  # noqa: E402
from cnnc.tools.export_onnx import export  # noqa: E402

from onnx_helpers import ort_outputs, randomize_norm_stats, reference, rel_error  # noqa: E402

COUNT = 400
OPSETS = (13, 17, 18, 21)
TOL = 1e-5


def _conv(r: random.Random, c: int) -> tuple[str, int]:
    f = r.choice([2, 4, 6, 8])
    k = r.choice([1, 2, 3, 3, 5])
    args = [str(f)]
    if r.random() < 0.3:
        args.append(f"stride={r.choice([1, 2])}")
    if r.random() < 0.3 or k % 2 == 0:
        args.append(f"pad={r.choice([0, 1, 2])}")
    if r.random() < 0.2:
        args.append("dilation=2")
    if r.random() < 0.25:
        g = r.choice([g for g in (2, 3, 4) if c % g == 0 and f % g == 0] or [1])
        args.append(f"groups={g}")
    if r.random() < 0.2:
        args.append("bias=false")
    size = f"{k}" if r.random() < 0.85 else f"{k}x{r.choice([1, 3])}"
    return f"conv{size}({', '.join(args)})", f


def _pool(r: random.Random) -> str:
    kind = r.choice(["maxpool", "avgpool"])
    k = r.choice([2, 3])
    args = []
    if r.random() < 0.5:
        args.append(f"stride={r.choice([1, 2])}")
    if r.random() < 0.5:
        args.append(f"pad={r.choice([0, 1])}")
    if r.random() < 0.5:
        args.append("round=ceil")
    return f"{kind}{k}" + (f"({', '.join(args)})" if args else "")


def _act(r: random.Random) -> str:
    return r.choice(["relu", "relu", "leaky(0.1)", "tanh", "sigmoid"])


def _block(r: random.Random, c: int) -> tuple[str, int]:
    """One image block and the channels it leaves (the compiler checks everything else)."""
    kind = r.choice(["conv", "conv", "pool", "bn", "residual", "projection", "branches", "maxout", "dropout"])
    if kind == "conv":
        text, f = _conv(r, c)
        return f"{text} - {_act(r)}", f
    if kind == "pool":
        return _pool(r), c
    if kind == "bn":
        return f"bn - {_act(r)}", c
    if kind == "residual":
        return f"(conv3({c}) - bn - {_act(r)} - conv3({c}, bias=false) - bn + id) - relu", c
    if kind == "projection":
        f, s = r.choice([4, 8]), r.choice([1, 2])
        return (f"(conv3({f}, stride={s}, pad=1) - bn - relu - conv3({f}) + conv1({f}, stride={s}) - bn)"
                " - relu", f)
    if kind == "branches":
        a, b = r.choice([2, 4]), r.choice([2, 4])
        extra = r.choice([("maxpool3(stride=1, pad=1)", c), ("avgpool3(stride=1, pad=1)", c),
                          ("conv5(2) - relu", 2), ("id", c)])
        return f"(conv1({a}) - relu | conv1(2) - conv3({b}) | {extra[0]})", a + b + extra[1]
    if kind == "maxout":
        k = r.choice([2, 3])
        if c % k == 0:
            return f"maxout({k})", c // k
        return "id", c
    return f"dropout({r.choice([0.1, 0.5])})", c


def _head(r: random.Random) -> str:
    head = r.choice(["gap - fc", "fc", "flatten - fc(6) - bn - relu - fc", "gap - bn - fc",
                     "fc(6) - maxout(2) - dropout(0.2) - fc", "fc - softmax", "gap - fc - softmax"])
    return head


def draw(r: random.Random) -> tuple[str, str]:
    c = r.choice([1, 2, 3, 4])
    size = r.randint(8, 16)
    blocks = []
    ch = c
    for _ in range(r.randint(1, 5)):
        text, ch = _block(r, ch)
        blocks.append(text)
    return " - ".join(blocks + [_head(r)]), f"{c}x{size}x{r.choice([size, r.randint(8, 16)])}"


def architectures(count: int, seed: int = 10):
    r = random.Random(seed)
    out = []
    while len(out) < count:
        text, shape = draw(r)
        try:
            model = cnnc.compile(text, input=shape, classes=r.choice([2, 5, 10]))
        except CnncError:
            continue  # cnnc rejects the draft (e.g. a window that does not fit): draw again
        out.append(model)
    return out


def test_generator_covers_the_features():
    models = architectures(COUNT)
    texts = " ".join(m.source for m in models)
    for feature in ("round=ceil", "pad=1", "groups=", "dilation=2", "+ id", "|", "bn", "maxout(",
                    "avgpool", "maxpool", "softmax", "leaky", "tanh", "sigmoid", "dropout", "bias=false"):
        assert feature in texts, feature
    assert len({m.source for m in models}) > 0.9 * COUNT


@pytest.mark.slow
def test_random_architectures_match_onnxruntime(tmp_path):
    worst = 0.0
    for i, model in enumerate(architectures(COUNT)):
        net = model.network(seed=i)
        rng = np.random.default_rng(i)
        randomize_norm_stats(net, rng)
        path = tmp_path / f"{i}.onnx"
        export(net, path, OPSETS[i % len(OPSETS)])
        x = rng.standard_normal((3, *model.input_shape), dtype=np.float32)
        ref = reference(net, model, x)
        for out in ort_outputs(path, x):
            err = rel_error(out, ref)
            assert err <= TOL, (i, model.source, model.input_shape, err)
            worst = max(worst, err)
        path.unlink()
    print(f"\n{COUNT} random architectures, largest relative error {worst:.2e}")
