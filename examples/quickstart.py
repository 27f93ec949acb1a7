"""The Python API in one page: compile, inspect, run, train, evaluate, look inside.

    python examples/quickstart.py            # about 10 s with the kernels cached

Uses scikit-learn's 8x8 digits, which ship with the package: no download.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import cnnc
from cnnc.training.data import load_digits

# 1. compile a model from text; the header values come as arguments here
model = cnnc.compile("[conv3(16) - bn - relu]*2 - pool - conv3(32) - relu - pool - fc(64) - relu - fc",
                     input="1x8x8", classes=10)
print(model.summary_text())
print("layers:", ", ".join(model.layers))
print("graph:", model.graph.number_of_nodes(), "nodes,", model.graph.number_of_edges(), "edges")

# 2. mistakes are exceptions that point at the text
try:
    cnnc.compile("conv3(8, stride=3) - relu", input="3x7x7")
except cnnc.SourceError as err:
    print(f"\n{err.kind} error at line {err.line}, column {err.column}:\n{err}\n")

# 3. train on NumPy arrays (uint8 images are normalized with the training statistics)
train, test = load_digits("train"), load_digits("test")
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
result = cnnc.fit(model, x=train.x, y=train.y, x_test=test.x, y_test=test.y, epochs=epochs,
                  optimizer="adam", lr=0.003, batch=32, seed=0)
print(f"test accuracy after {epochs} epochs: {result.test['accuracy']:.3f}")
print("evaluate again:", round(result.evaluate(test.x, test.y)["accuracy"], 3))

# 4. parameters by layer name, in PyTorch's layouts
net = result.network
w = net.get("conv_1", "w")
print("conv_1 filters:", w.shape, "mean |w| =", float(np.abs(w).mean()))

# 5. saliency: the gradient of the loss with respect to the input image
x = result.normalize(test.x[:4])
loss, grads = net.loss_and_grads(x, test.y[:4], training=False, input_grad=True)
saliency = np.abs(grads["input"]).max(axis=1)  # (4, 8, 8)
saliency /= saliency.max(axis=(1, 2), keepdims=True) + 1e-30  # each map scaled to its maximum
print("saliency of the first test image (|d loss / d pixel|, 1 = most sensitive pixel):")
for row in saliency[0]:
    print("  " + " ".join(f"{v:5.2f}" for v in row))

out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
if out is not None:  # optional: a picture of the first layer's filters and the saliency
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 8, figsize=(10, 3))
    for i, ax in enumerate(axes[0]):
        ax.imshow(w[i, 0], cmap="gray")
        ax.set_title(f"filter {i}", fontsize=7)
    for i, ax in enumerate(axes[1][:4]):
        ax.imshow(test.x[i, 0], cmap="gray")
        axes[1][4 + i].imshow(saliency[i], cmap="hot")
    for ax in axes.ravel():
        ax.axis("off")
    fig.savefig(out, dpi=100)
    print("wrote", out)
