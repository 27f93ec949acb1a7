"""Shared helpers of the ONNX tests: run an exported model in onnxruntime, make weights non-trivial."""
from __future__ import annotations

import numpy as np


def randomize_norm_stats(net, rng) -> None:
    """Batch norm starts as nearly the identity (mean 0, var 1, gamma 1, beta 0): make every
    statistic and affine parameter matter, so a wrong mapping shows in the outputs."""
    for layer, bufs in net.buffers.items():
        c = bufs["running_mean"].shape
        net.set(layer, "running_mean", rng.standard_normal(c) * 0.5)
        net.set(layer, "running_var", rng.uniform(0.5, 2.0, c))
        net.set(layer, "gamma", rng.uniform(0.5, 1.5, c))
        net.set(layer, "beta", rng.standard_normal(c) * 0.2)
    for layer, params in net.params.items():
        if "b" in params:
            net.set(layer, "b", rng.standard_normal(params["b"].shape) * 0.1)


def ort_outputs(path, x):
    """Outputs of onnxruntime on the CPU with graph optimizations off, then fully on."""
    import onnxruntime as ort

    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return outs


def reference(net, model, x):
    """cnnc's forward in inference mode: probabilities when the model ends in softmax."""
    ends_in_softmax = model.summary.rows[-1].type == "softmax"
    return net.predict_proba(x) if ends_in_softmax else net.forward(x)


def rel_error(out, ref) -> float:
    """max |out - ref| relative to the largest |ref| (the scale of the outputs)."""
    return float(np.abs(out.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
