"""Continual-learning methods behind one interface (``CLMethod``)."""
from .base import CLMethod, MethodOptions, RunContext
from .registry import all_methods, get_method, register

__all__ = ["CLMethod", "MethodOptions", "RunContext", "all_methods", "get_method", "register"]
