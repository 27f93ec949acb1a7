"""A small synthetic sequence data set for 1-D networks: which waveform is a noisy signal?

Four classes (sine, square, triangle, sawtooth), one channel, length 128. Each signal has a
random frequency (1.5 to 4 periods per window), phase and amplitude (0.6 to 1.4), a random
offset (-0.3 to 0.3) and Gaussian noise (standard deviation 0.35). The splits are drawn
from fixed seeds, so ``waveforms`` is the same everywhere and needs no download.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("sine", "square", "triangle", "sawtooth")
LENGTH = 128
SIZES = {"train": 1600, "test": 400}
SEEDS = {"train": 11, "test": 12}


def make_waveforms(n: int, rng: np.random.Generator, length: int = LENGTH,
                   noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy signals ``float32 (n, 1, length)`` and their classes ``int64 (n,)``,
    the classes balanced (``i % 4``) and shuffled."""
    y = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    periods = rng.uniform(1.5, 4.0, n)[:, None]
    phase = rng.uniform(0.0, 1.0, n)[:, None]
    amp = rng.uniform(0.6, 1.4, n)[:, None]
    offset = rng.uniform(-0.3, 0.3, n)[:, None]
    t = np.arange(length)[None, :] / length
    u = (periods * t + phase) % 1.0  # position within the period, 0..1
    shapes = np.stack([
        np.sin(2 * np.pi * u),  # sine
        np.where(u < 0.5, 1.0, -1.0),  # square
        4 * np.abs(u - 0.5) - 1,  # triangle
        2 * u - 1,  # sawtooth
    ])
    clean = shapes[y, np.arange(n)]
    x = amp * clean + offset + noise * rng.standard_normal((n, length))
    return x.astype(np.float32)[:, None, :], y


def load_waveforms(split: str = "train"):
    """The ``waveforms`` data set's split as a :class:`cnnc.training.data.Dataset` of one-row images
    ``(N, 1, 1, 128)``, the storage of sequences (see :func:`cnnc.training.data.check_input_shape`)."""
    from ..dataset import Dataset
    from ....errors import UsageError

    if split not in SIZES:
        raise UsageError(f"unknown split {split!r}: use 'train' or 'test'")
    x, y = make_waveforms(SIZES[split], np.random.default_rng(SEEDS[split]))
    return Dataset(x[:, :, None, :], y, CLASS_NAMES, "waveforms")
