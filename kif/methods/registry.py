"""Name -> method class. ``BUILTIN`` lists this package's methods with their options, so that a
config's method name and ``method_args`` are checked before any method module (torch, 2+ s)
is imported. A module dropped into ``kif/methods/`` with ``@register`` on its class is still
found (imported when a name is not listed); a method outside the package is ``module:Class``."""
import importlib
import pkgutil
import sys
from typing import NamedTuple

from ..errors import ConfigError
from . import options as o


class Spec(NamedTuple):
    """What config validation needs of a method."""
    name: str
    module: str  # under kif.methods
    options: type[o.MethodOptions] = o.MethodOptions
    joint: bool = False  # CLMethod.joint: one training stage on all tasks


BUILTIN = {s.name: s for s in (
    Spec("seqlora", "seqlora"), Spec("mtl", "mtl", joint=True), Spec("inclora", "inclora"),
    Spec("olora", "olora", o.OLoRAOptions), Spec("ewc", "ewc", o.EWCOptions), Spec("ema", "ema", o.EMAOptions),
    Spec("replay", "replay", o.ReplayOptions), Spec("weight-ensemble", "weight_ensemble", o.WeightEnsembleOptions),
    Spec("l2p", "l2p", o.L2POptions), Spec("progprompt", "progprompt", o.ProgPromptOptions),
    Spec("lfpt5", "lfpt5", o.LFPT5Options), Spec("sapt", "sapt", o.SAPTOptions),
    Spec("kif", "kif", o.KIFOptions), Spec("kiflora", "kif", o.KIFLoRAOptions),
    Spec("kif-m", "kif_m", o.KIFMOptions), Spec("kiflora-m", "kif_m", o.KIFLoRAMOptions))}
_INFRASTRUCTURE = {"base", "options", "registry"}  # kif/methods modules that hold no method
_METHODS: dict[str, type] = {}


def register(cls):
    _METHODS[cls.name] = cls
    return cls


def method_spec(name: str) -> Spec:
    """Method ``name``'s Spec: a built-in's without any import, any other's from its class."""
    if name in BUILTIN:
        return BUILTIN[name]
    cls = get_method(name)
    return Spec(cls.name, cls.__module__, cls.Options, cls.joint)


def all_methods() -> dict[str, type]:
    for module in _modules():
        importlib.import_module(f"kif.methods.{module}")
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    if ":" in name:
        return _import_method(name)
    unlisted = [m for m in _modules() if m not in {s.module for s in BUILTIN.values()}]
    for module in [BUILTIN[name].module] if name in BUILTIN else unlisted:
        importlib.import_module(f"kif.methods.{module}")
    if name not in _METHODS:
        raise ConfigError(f"method: unknown method '{name}' (known: {', '.join(sorted({*BUILTIN, *_METHODS}))}; "
                          "or module:Class for a method of your own)")
    return _METHODS[name]


def _modules() -> list[str]:  # the package's path read now: a test may add a folder
    return [m.name for m in pkgutil.iter_modules(sys.modules[__package__].__path__) if m.name not in _INFRASTRUCTURE]


def _import_method(target: str) -> type:
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method: cannot import '{target}' ({type(exc).__name__}: {exc})") from None
    base = sys.modules.get("kif.methods.base")  # loaded by every CLMethod subclass's module
    if base is None or not (isinstance(cls, type) and issubclass(cls, base.CLMethod)):
        raise ConfigError(f"method: '{target}' is not a CLMethod subclass")
    return cls
