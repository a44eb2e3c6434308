"""Name -> method class. A new method is one file: a module in ``kif/methods/`` with
``@register`` on its class is found without editing any list; a method outside the package
is named ``module:Class`` (its module is imported, e.g. from the working directory)."""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConfigError

_METHODS: dict[str, type] = {}
_INFRASTRUCTURE = {"base", "registry"}  # kif/methods modules that hold no method


def register(cls):
    _METHODS[cls.name] = cls
    return cls


def all_methods() -> dict[str, type]:
    package = importlib.import_module("kif.methods")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"kif.methods.{info.name}")
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    if ":" in name:
        return _import_method(name)
    methods = all_methods()
    if name not in methods:
        raise ConfigError(f"method: unknown method '{name}' (known: {', '.join(methods)}; "
                          "or module:Class for a method of your own)")
    return methods[name]


def _import_method(spec: str) -> type:
    from .base import CLMethod

    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method: cannot import '{spec}' ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, CLMethod)):
        raise ConfigError(f"method: '{spec}' is not a CLMethod subclass")
    return cls
