"""Same seed, same result, whether the kernels were just compiled or loaded from the cache.

Fast-math reassociation once made freshly compiled Winograd kernels round differently
from the same kernels loaded from Numba's cache, so the first run after an install did not
reproduce later ones. This runs one training step of a network that uses the im2col and
the Winograd convolutions, batch norm, pooling and fc, in two processes sharing an empty
cache: the first compiles, the second loads. Their gradients must be bitwise equal.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import sys, numpy as np, cnnc
m = cnnc.compile("conv3(32) - bn - relu - conv3(32) - relu - pool - conv3(48) - relu - fc",
                 input="3x8x8", classes=5)
net = m.network(seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
loss, grads = net.loss_and_grads(x, rng.integers(0, 5, 6))
np.savez(sys.argv[1], loss=np.array(loss), **{f"{k}.{n}": v for k, d in grads.items() for n, v in d.items()})
"""


@pytest.mark.slow  # cold compiles in subprocesses
def test_compiled_and_cached_kernels_agree_bitwise(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for name in ("compiled", "cached"):
        out = tmp_path / f"{name}.npz"
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        runs.append(np.load(out))
    a, b = runs
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), f"{key} differs: {np.abs(a[key] - b[key]).max()}"
