"""Helpers shared by the test files: paths, finite differences, and the size rules the
tests derive their expectations from (written here from DESIGN.md and PyTorch's docs,
independently of cnnc's code)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# ---- paths -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
MODEL_FILES = sorted(MODELS_DIR.glob("*.cnn"))
SHARED_DATA = ROOT.parent / "shared" / "data"

# ---- finite differences ------------------------------------------------------------------


def numgrad(f, a: np.ndarray, rng: np.random.Generator | None = None, limit: int | None = None,
            eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the scalar ``f()`` w.r.t. ``a`` (perturbed in place and restored),
    at every entry or at ``limit`` entries drawn with ``rng``; returns (flat indices, estimates)."""
    flat = a.reshape(-1)
    if limit is None or flat.size <= limit:
        idx = np.arange(flat.size)
    else:
        idx = np.sort(rng.choice(flat.size, limit, replace=False))
    est = np.empty(idx.size)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        est[k] = (fp - fm) / (2 * eps)
    return idx, est


def numgrad_full(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The whole finite-difference gradient of ``f()`` w.r.t. ``a``, shaped like ``a``."""
    g = np.zeros(a.size)
    idx, est = numgrad(f, a, eps=eps)
    g[idx] = est
    return g.reshape(a.shape)


# ---- size rules --------------------------------------------------------------------------


def conv_padding(cfg) -> tuple[int, int]:
    """DESIGN.md: "same" at stride 1 by default, 0 at stride > 1; pad=N; pad=valid."""
    kh, kw = cfg.size
    if cfg.pad == "valid" or (cfg.pad == "default" and cfg.stride != 1):
        return 0, 0
    if isinstance(cfg.pad, int):
        return cfg.pad, cfg.pad
    return cfg.dilation * (kh - 1) // 2, cfg.dilation * (kw - 1) // 2


def conv_out(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    """Convolution output length: floor((n + 2p - d(k-1) - 1)/s) + 1."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooling output length: floor or ceil, and in ceil mode the last window must
    start inside the input or the left padding."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    o = -(-(n + 2 * p - k) // s) + 1
    if (o - 1) * s >= n + p:
        o -= 1
    return o
