"""64-byte aligned buffers (cnnc.kernels.memory) and their use by executors and workspaces:
a buffer starting elsewhere within a cache line made the same network up to 2.4x slower in
some processes than in others."""
from __future__ import annotations

import numpy as np
import pytest

import cnnc
from cnnc.kernels import memory


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8])
@pytest.mark.parametrize("shape", [(1,), (3,), (7, 5), (2, 3, 5, 7), 13])
def test_aligned_arrays(dtype, shape):
    for make in (memory.empty, memory.zeros):
        a = make(shape, dtype)
        want = (shape,) if np.isscalar(shape) else shape
        assert a.shape == want and a.dtype == np.dtype(dtype) and a.flags.c_contiguous
        assert a.ctypes.data % 64 == 0
    z = memory.zeros(shape, dtype)
    assert not z.any()
    assert memory.zeros_like(z).ctypes.data % 64 == 0


def test_executor_buffers_workspaces_and_parameters_are_aligned():
    model = cnnc.compile("conv3(8) - bn - relu - pool - conv3(16) - relu - fc(16) - relu - fc",
                         input="3x12x12", classes=5)
    net = model.network(seed=0)
    for ex in (net.executor(3), net.inference_executor(1)):
        for name, v in ex.values.items():
            assert v.ctypes.data % 64 == 0, name
        for name, g in ex.grads.items():
            assert g is None or g.ctypes.data % 64 == 0, name
        for name, op in ex.ops.items():
            if hasattr(op, "ws"):
                assert op.ws.ctypes.data % 64 == 0, name
    assert net.theta.ctypes.data % 64 == 0 and net.grad.ctypes.data % 64 == 0
