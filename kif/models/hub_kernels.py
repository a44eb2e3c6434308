"""Hub kernels (config ``hub_kernels``): off unless a run opts in.

transformers 5.25 with the ``kernels`` package installed replaces layers of a model
(LLaMA's rotary embedding, RMSNorm, activations) by kernels it downloads from the Hugging
Face hub: ``from_pretrained``'s ``use_kernels`` defaults to on unless the environment
variable ``USE_HUB_KERNELS`` says no, and the model is kernelized again for the device it
is on whenever it switches between ``train()`` and ``eval()``. On a GPU that meant code
from outside the environment ran (numerics differing between machines and days), and
offline every run failed (``Version 2 of 'kernels-community/rotary' is not available in
the local cache``). On a CPU nothing is downloaded today, but the switch is the same.

kif decides with transformers' two public switches: ``use_kernels`` of ``from_pretrained``
(the model is never kernelized, so the mode switches do nothing) and ``USE_HUB_KERNELS``
(read at each decision, also by code paths that fetch kernels lazily at run time), set for
the process to the run's choice when kif loads a model.
"""
from __future__ import annotations

import importlib.util
import os

ENV = "USE_HUB_KERNELS"


def apply_setting(enabled: bool) -> dict:
    """Set ``USE_HUB_KERNELS`` for this process and return ``from_pretrained``'s arguments
    for the choice (``use_kernels``)."""
    os.environ[ENV] = "1" if enabled else "0"
    return {"use_kernels": bool(enabled)}


def kernel_record(model, enabled: bool) -> dict:
    """What results.json records: the setting and where the model's layer code comes from.
    ``source``: ``installed`` (transformers' and torch's own code) or ``hub`` (at least one
    layer or function runs a downloaded kernel: ``hub_layers`` names them, once each)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    used: set[str] = set()
    if getattr(base, "use_kernels", False) and importlib.util.find_spec("kernels") is not None:
        from kernels import get_kernelized_layers  # the kernels package's public inspection

        found = get_kernelized_layers(base)
        for name, layer in found.layers.items():
            used.add(f"{type(layer.module).__name__} <- {_repo_name(layer.repo)}")
        for (_, func), entry in found.funcs.items():
            used.add(f"{func} <- {_repo_name(entry.repo)}")
    return {"hub_kernels": bool(enabled), "source": "hub" if used else "installed", "hub_layers": sorted(used)}


def _repo_name(repo) -> str:
    rid = getattr(repo, "repo_id", None) or getattr(repo, "path", None)
    return str(rid) if rid else repr(repo)
