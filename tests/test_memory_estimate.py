"""`cnnc check`'s training memory counts what the training executor really allocates:
the buffers of the lowered plan (a fused ReLU shares its conv's buffer), their gradients,
pooling indices and dropout masks, parameters, gradients and momentum."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MODELS_DIR as MODELS

import cnnc
from cnnc.lang.graph import INPUT

NETS = [MODELS / "lenet5.cnn", MODELS / "vgg_cifar.cnn", MODELS / "resnet8.cnn",
        "conv3(8) - relu - (conv1(4) - relu | conv1(4)) - relu - maxout(2) - pool - dropout(0.5) - "
        "fc(16) - relu - fc - softmax"]


@pytest.mark.parametrize("source", NETS, ids=lambda s: getattr(s, "stem", "inline"))
def test_training_memory_matches_the_executor(source):
    model = (cnnc.compile_file(source) if not isinstance(source, str)
             else cnnc.compile(source, input="3x8x8", classes=5))
    batch = 3
    net = model.network(seed=0)
    ex = net.executor(batch)
    parts = model.analysis.memory(batch).parts
    values = sum(v.nbytes for k, v in ex.values.items() if k != INPUT)
    grads = sum(g.nbytes for k, g in ex.grads.items() if k != INPUT and g is not None)
    assert parts["activations"] == values
    assert parts["activation_gradients"] == grads
    saved = 0
    for op in ex.ops.values():
        for name in ("argmax", "u", "mask"):
            a = getattr(op, name, None)
            if isinstance(a, np.ndarray):
                saved += a.nbytes
    assert parts["saved_for_backward"] == saved
    assert parts["gradients"] == net.grad.nbytes
    assert parts["weights"] == net.theta.nbytes + (net.buffer_flat.nbytes if net.plan.buffers else 0)
    assert parts["input_batch"] == ex.input.nbytes
