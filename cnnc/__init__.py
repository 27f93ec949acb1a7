"""cnnc: a compiler for convolutional neural networks.

    >>> import cnnc
    >>> m = cnnc.compile("[[conv3-relu]*2 - pool]*3 - fc", input="3x32x32", classes=10)
    >>> m.summary.total_params
    307498
"""
from __future__ import annotations

import os as _os


# what _prefer_avx512_blas found: whether the CPU has AVX-512 and the OPENBLAS_CORETYPE the
# environment had set before cnnc (``cnnc bench`` reports a slower kernel chosen that way)
BLAS_CHOICE: dict = {"avx512": None, "preset_coretype": None}


def _prefer_avx512_blas() -> None:
    # OpenBLAS picks its AVX2 kernels on some AVX-512 CPUs; SkylakeX is ~1.6x faster for large
    # GEMMs and up to 2.5x for LeNet-sized ones there (../shared/PERF.md, README "Speed").
    # It must be set before NumPy is imported; an explicit setting is respected.
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        flags = None
    avx512 = None if flags is None else (" avx512f" in flags and " avx512vl" in flags
                                         and " avx512bw" in flags)
    BLAS_CHOICE.update(avx512=avx512, preset_coretype=_os.environ.get("OPENBLAS_CORETYPE"))
    if "OPENBLAS_CORETYPE" in _os.environ:
        return
    if avx512:
        _os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


def _faster_kernel_compiles() -> None:
    # LLVM at -O2 instead of Numba's default -O3 halves the first run's kernel compilation
    # (digits: 37 s -> 22 s) with no measurable change in training or inference speed
    # (LeNet-5, the VGG-ish net and ResNet-8, alternating runs). Numba reads it at import;
    # an explicit NUMBA_OPT wins.
    import sys

    if "NUMBA_OPT" not in _os.environ and "numba" not in sys.modules:
        _os.environ["NUMBA_OPT"] = "2"


_prefer_avx512_blas()
_faster_kernel_compiles()

from .compiler import Model, compile, compile_file, parse_shape  # noqa: E402
from .errors import (CheckpointError, CnncError, DataError, SourceError, Span,  # noqa: E402
                     TrainingError, UsageError)

from .version import __version__  # noqa: E402
__all__ = ["Model", "compile", "compile_file", "parse_shape", "CnncError", "SourceError",
           "UsageError", "DataError", "CheckpointError", "TrainingError", "Span", "__version__",
           "fit", "evaluate", "TrainConfig", "TrainResult"]


def __getattr__(name: str):
    # training pulls in the data loaders and kernels: import it only when asked for.
    # (The function is `fit`, not `train`: `cnnc.training.train` is the training module.)
    if name in ("fit", "evaluate", "TrainConfig", "TrainResult"):
        import importlib

        module = importlib.import_module("cnnc.training.train")
        return getattr(module, "train" if name == "fit" else name)
    raise AttributeError(f"module 'cnnc' has no attribute {name!r}")
