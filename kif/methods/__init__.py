"""Continual-learning methods behind one interface (``CLMethod``).

The names below load on first use: config loading imports ``kif.methods.options`` and
``kif.methods.registry`` (no torch), and importing ``base`` here would import torch (2+ s)."""
from importlib import import_module

_HOMES = {"CLMethod": "base", "MethodOptions": "options", "RunContext": "base",
          "all_methods": "registry", "get_method": "registry", "register": "registry"}
__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
