"""The layer registry: one module per layer family, each registering its types on import.

Importing this package imports every family, so :func:`registry` is complete whenever a
name from here is used. A new family is a module here plus one line below.
"""
from . import activation, conv, dense, merge, norm, pool  # noqa: F401  (register their types)
from .base import (REQUIRED, ArgSpec, InferContext, LayerError, LayerInfo, LayerType, ParamSpec,
                   Shape, Window, layer_types, registry, resolve_name, suffix_base)

__all__ = ["REQUIRED", "ArgSpec", "InferContext", "LayerError", "LayerInfo", "LayerType", "ParamSpec",
           "Shape", "Window", "layer_types", "registry", "resolve_name", "suffix_base"]
