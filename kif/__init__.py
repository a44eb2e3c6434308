"""kif: continual learning of language models with Knowledge Localization and Fusion.

    import kif
    cfg = kif.load_config("configs/quickstart.yaml", ["method=kiflora"])
    results = kif.run(cfg, "runs/quickstart")
"""
import os as _os

__version__ = "0.1.0"

_LAZY = {"run": "kif.runner", "load_config": "kif.configure", "RunConfig": "kif.config",
         "KifError": "kif.errors", "load_model": "kif.models", "get_method": "kif.methods"}


def __getattr__(name):  # heavy imports (torch, transformers) only when used
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


if _os.environ.get("KIF_FAULT"):  # the crash tests' kill points (kif.faults); unset outside them
    from . import faults

    faults.install(_os.environ["KIF_FAULT"])
