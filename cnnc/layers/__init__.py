"""The layer registry: one module per layer family, registered by import."""
from .base import (REQUIRED, ArgSpec, InferContext, LayerError, LayerInfo, LayerType, ParamSpec,
                   Shape, Window, layer_types, registry, resolve_name, suffix_base)

__all__ = ["REQUIRED", "ArgSpec", "InferContext", "LayerError", "LayerInfo", "LayerType", "ParamSpec",
           "Shape", "Window", "layer_types", "registry", "resolve_name", "suffix_base"]
