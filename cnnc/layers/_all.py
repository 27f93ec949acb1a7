"""Importing this module registers every layer family."""
from . import activation, conv, dense, merge, norm, pool  # noqa: F401
