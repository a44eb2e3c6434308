"""Name -> method class. A new method is one file with ``@register`` on its class."""
from __future__ import annotations

import importlib

from ..errors import ConfigError

_METHODS: dict[str, type] = {}
_MODULES = ["seqlora", "kif", "inclora", "olora", "ewc", "replay", "weight_ensemble", "ema", "mtl", "kif_m"]  # imported on first lookup


def register(cls):
    _METHODS[cls.name] = cls
    return cls


def all_methods() -> dict[str, type]:
    for mod in _MODULES:
        importlib.import_module(f"kif.methods.{mod}")
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    methods = all_methods()
    if name not in methods:
        raise ConfigError(f"method: unknown method '{name}' (known: {', '.join(methods)})")
    return methods[name]
