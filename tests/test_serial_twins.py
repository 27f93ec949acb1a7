"""Serial twins (cnnc.kernels.serial): a parallel kernel's body compiled without parallelism
for one image of little work must compute exactly what the parallel kernel computes."""
from __future__ import annotations

import numpy as np
import pytest

import cnnc.kernels  # noqa: F401  (the kernels' environment first)
from cnnc.kernels import dense, pool
from cnnc.kernels.serial import SERIAL_MAX, serial_twin


@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1)])
def test_max_pooling_twin_is_the_parallel_kernel_bit_for_bit(window):
    kh, kw, sh, sw, ph, pw = window
    x = np.random.default_rng(0).standard_normal((1, 6, 14, 14)).astype(np.float32)
    oh, ow = (14 + 2 * ph - kh) // sh + 1, (14 + 2 * pw - kw) // sw + 1
    outs = []
    for batch_of_one in (True, False):
        xin = x if batch_of_one else np.concatenate([x, x])  # two images: the parallel kernel
        y = np.zeros((xin.shape[0], 6, oh, ow), np.float32)
        arg = np.zeros(y.shape, np.int32)
        kernel, args = pool.maxpool2d_forward_call(xin, y, arg, kh, kw, sh, sw, ph, pw)
        assert kernel.py_func.__name__.endswith("_serial") == batch_of_one
        kernel(*args)
        outs.append((y[:1].copy(), arg[:1].copy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("relu", [False, True])
def test_fully_connected_twin_is_the_parallel_kernel_bit_for_bit(relu):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((120, 400)).astype(np.float32)
    b = rng.standard_normal(120).astype(np.float32)
    x = rng.standard_normal((1, 400)).astype(np.float32)
    kernel, args = dense.fc_forward_call(x, w, b, np.zeros((1, 120), np.float32), True, relu)
    assert kernel.py_func.__name__ == "_fc_fwd_serial"
    kernel(*args)
    y_twin = args[3]
    y_par = np.zeros((1, 120), np.float32)
    dense._fc_fwd(x, w, b, y_par, True, relu, args[-1])
    np.testing.assert_array_equal(y_twin, y_par)
    big = np.zeros((SERIAL_MAX // 400 + 1, 400), np.float32)  # a batch: the parallel kernel
    assert dense.fc_forward_call(big, w, b, np.zeros((big.shape[0], 120), np.float32), True,
                                 relu)[0] is dense._fc_fwd


def test_a_twin_has_a_cache_name_of_its_own():
    twin = serial_twin(pool._maxpool_2x2s2, "_maxpool_2x2s2_serial")
    assert twin.py_func.__qualname__ == "_maxpool_2x2s2_serial"
    assert "parallel" not in twin.targetoptions
    assert twin.py_func.__code__ is pool._maxpool_2x2s2.py_func.__code__
