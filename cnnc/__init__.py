"""cnnc: a compiler for convolutional neural networks.

    >>> import cnnc
    >>> m = cnnc.compile("[[conv3-relu]*2 - pool]*3 - fc", input="3x32x32", classes=10)
    >>> m.summary.total_params
    307498

Importing cnnc loads the language only (no NumPy, no Numba) and changes nothing in the
process: the kernels' environment is set when they are first loaded
(:mod:`cnnc.kernels.environment`).
"""
from __future__ import annotations

from .compiler import Model, compile, compile_file, parse_shape
from .errors import CheckpointError, CnncError, DataError, SourceError, Span, TrainingError, UsageError
from .version import __version__

__all__ = ["Model", "compile", "compile_file", "parse_shape", "CnncError", "SourceError",
           "UsageError", "DataError", "CheckpointError", "TrainingError", "Span", "__version__",
           "fit", "evaluate", "TrainConfig", "TrainResult", "export_onnx", "set_compile_notice"]


def __getattr__(name: str):
    # training pulls in the data loaders and kernels: import it only when asked for.
    # (The function is `fit`, not `train`: `cnnc.training.train` is the training module.)
    import importlib

    if name == "set_compile_notice":  # set_compile_notice(False): no first-run compile notice
        return importlib.import_module("cnnc.runtime.notice").set_enabled
    if name == "export_onnx":  # export_onnx(net, path, opset=...): the network as an ONNX file
        return importlib.import_module("cnnc.tools.export_onnx").export
    if name == "fit":  # training.train.train, plus live=True: curves in one notebook output
        return importlib.import_module("cnnc.live.notebook").fit
    if name in ("evaluate", "TrainConfig", "TrainResult"):
        module = importlib.import_module("cnnc.training.train")
        return getattr(module, name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")
