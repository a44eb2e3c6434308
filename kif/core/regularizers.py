"""Orthogonal regulariser for LoRA-tailored skill units (METHOD.md §2, eq. 5)."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor

from kif.core.units import clean_param_name, lora_role
from kif.errors import ArtifactError


def orthogonal_regularizer(lora_pairs: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """Eq. (5): sum over LoRA modules of ||A·Aᵀ − I_r||²_F + ||Bᵀ·B − I_r||²_F.

    Uses the r×r Gram form (as AdaLoRA) for A [r, in], B [out, r], so the r rank-1 units
    of a module are pushed towards distinct directions. Differentiable; fp32 result
    (a 0-d zero if there are no pairs).
    """
    terms = []
    for a, b in lora_pairs:
        r = a.shape[0]
        if b.shape[1] != r:
            raise ArtifactError(f"LoRA pair ranks differ: A {list(a.shape)}, B {list(b.shape)}")
        a, b = a.float(), b.float()  # bf16 Gram matrices lose the small deviations we penalise
        eye = torch.eye(r, device=a.device)
        terms.append((a @ a.T - eye).square().sum() + (b.T @ b - eye).square().sum())
    if not terms:
        return torch.zeros(())
    dev = terms[0].device  # a model split over devices: gather on the first
    return torch.stack([t.to(dev) for t in terms]).sum()


def lora_pairs(model_or_named_params, adapter: str = "default") -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (lora_A, lora_B) weights per LoRA module by name matching (no PEFT needed).

    Accepts a module (uses ``named_parameters()``), a mapping or (name, tensor) pairs.
    Only ``adapter``'s weights are paired; a lone A or B raises ArtifactError.
    """
    if hasattr(model_or_named_params, "named_parameters"):
        items = model_or_named_params.named_parameters()
    elif isinstance(model_or_named_params, Mapping):
        items = model_or_named_params.items()
    else:
        items = model_or_named_params
    modules: dict[str, dict[str, Tensor]] = {}
    for name, t in items:
        if (lr := lora_role(clean_param_name(name, adapter))) is not None:
            modules.setdefault(lr[0], {})[lr[1]] = t
    for module, ab in modules.items():
        if set(ab) != {"A", "B"}:
            raise ArtifactError(f"LoRA module {module!r} has only lora_{next(iter(ab))}")
        yield ab["A"], ab["B"]
