"""The CNNs of examples/compare_torch.py written by hand in PyTorch, and a plain timing loop.

    python examples/torch_plain.py lenet5 --batch 64 --steps 20
    python examples/torch_plain.py resnet18 --batch 16 --steps 3 --channels-last

This is what a PyTorch user writes: the models are ``nn.Sequential`` (LeNet-5, the VGG-ish
CIFAR net) or a small ``BasicBlock`` module inside an ``nn.Sequential`` (ResNet-8,
ResNet-18), the same architectures as ``models/*.cnn`` (same layers, padding, bias flags,
batch-norm placement and pooling; compare_torch.py checks the parameter counts and output
shapes against cnnc's). The module imports nothing but torch (and the standard library);
compare_torch.py's PyTorch worker imports its models from here.

Run as a script it times one model on random data, 2 threads, float32, with
``time.perf_counter`` around a loop: a training step (SGD momentum 0.9, weight decay 5e-4,
cross-entropy: zero_grad, forward, backward, step), an inference batch
(``model.eval()`` under ``torch.inference_mode()``) and inference on one image, each after a
few warm-up calls, and prints the mean ms per call as JSON. compare_torch.py runs it as its
self-check: its PyTorch NCHW numbers should agree with these.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
import torch.nn.functional as F


def lenet5() -> nn.Module:
    """models/lenet5.cnn: conv5(6, pad=valid) - relu - pool - conv5(16, pad=valid) - relu - pool
    - fc(120) - relu - fc(84) - relu - fc, on 1x32x32."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def vgg_cifar() -> nn.Module:
    """models/vgg_cifar.cnn: [[conv3 - relu]*2 - pool]*3 - fc, width 32 doubling after each
    pool, 'same' padding, with bias, on 3x32x32."""
    layers: list[nn.Module] = []
    c_in = 3
    for c in (32, 64, 128):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 10))


class BasicBlock(nn.Module):
    """conv3 - bn - relu - conv3 - bn, plus the input (or, when the block down-samples,
    plus conv1(stride 2) - bn of it), then relu. No conv has a bias."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def resnet8() -> nn.Module:
    """models/resnet8.cnn: conv3(16) - bn - relu - same(16) - down(32) - down(64) - gap - fc,
    on 3x32x32."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def resnet18() -> nn.Module:
    """models/resnet18.cnn (torchvision's resnet18 layout): conv7(64, stride 2) - bn - relu -
    maxpool3(stride 2, pad 1) - two blocks at each of 64, 128, 256, 512 channels (the first of
    each later stage down-samples) - gap - fc(1000), on 3x224x224."""
    blocks = [BasicBlock(64, 64), BasicBlock(64, 64)]
    for c in (128, 256, 512):
        blocks += [BasicBlock(c // 2, c, 2), BasicBlock(c, c)]
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1), *blocks,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


# name: (builder, input shape (C, H, W), classes); the names are the stems of models/*.cnn
MODELS = {"lenet5": (lenet5, (1, 32, 32), 10),
          "vgg_cifar": (vgg_cifar, (3, 32, 32), 10),
          "resnet8": (resnet8, (3, 32, 32), 10),
          "resnet18": (resnet18, (3, 224, 224), 1000)}


def time_calls(fn, calls: int, warmup: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls, after ``warmup`` calls (at least
    a tenth of ``calls``: short calls need their thread pools and caches warm)."""
    for _ in range(max(warmup, calls // 10)):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps and inference batches")
    ap.add_argument("--batch1-calls", type=int, default=None, help="timed batch-1 calls (default 10 x steps)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    build, shape, classes = MODELS[args.model]
    model = build()
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, classes, (args.batch,))
    x1 = x[:1].clone()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        x1 = x1.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def train_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    train_s = time_calls(train_step, args.steps, args.warmup)
    model.eval()
    with torch.inference_mode():
        infer_s = time_calls(lambda: model(x), args.steps, args.warmup)
        infer1_s = time_calls(lambda: model(x1), args.batch1_calls or 10 * args.steps, args.warmup)
    print(json.dumps({"model": args.model, "batch": args.batch, "channels_last": args.channels_last,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters()),
                      "train_ms": train_s * 1e3, "infer_ms": infer_s * 1e3, "infer1_ms": infer1_s * 1e3}))


if __name__ == "__main__":
    main()
