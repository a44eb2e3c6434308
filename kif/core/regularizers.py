"""Orthogonal regulariser for LoRA-tailored skill units (docs/method.md §2, eq. 5)."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor

from kif.core.units import clean_param_name, lora_role
from kif.errors import ArtifactError
from kif.torchutil import stack_terms


def orthogonal_regularizer(lora_pairs: Iterable[tuple[Tensor, Tensor]], norm: str = "frobenius",
                           reduction: str = "mean") -> Tensor:
    """Eq. (5) over every LoRA module: the terms ||A·Aᵀ − I_r|| and ||Bᵀ·B − I_r||.

    Uses the r×r Gram form (as AdaLoRA) for A [r, in], B [out, r], so the r rank-1 units
    of a module are pushed towards distinct directions. The paper gives R(A, B) for one
    module but neither how modules combine nor the weight, so both are options:

    - ``norm``: "frobenius" (default) = ||·||_F, unsquared: the authors' KIFLoRA code and
      AdaLoRA's ``compute_orth_regu``, for which their weight 0.1 was tuned; "squared" =
      ||·||²_F, eq. (5) as the paper writes it;
    - ``reduction``: "mean" (default) over the Gram terms (two per module, the authors' and
      AdaLoRA's normalisation: the term's scale does not grow with the number of adapted
      modules) or "sum".

    The unsquared norm's gradient at a zero deviation (an orthonormal factor) is taken as 0,
    not NaN (``torch.linalg.matrix_norm``'s subgradient). Differentiable; fp32 result (a 0-d
    zero if there are no pairs).
    """
    if norm not in ("squared", "frobenius"):
        raise ValueError(f"norm must be 'squared' or 'frobenius', got {norm!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    terms = []
    for a, b in lora_pairs:
        r = a.shape[0]
        if b.shape[1] != r:
            raise ArtifactError(f"LoRA pair ranks differ: A {list(a.shape)}, B {list(b.shape)}")
        a, b = a.float(), b.float()  # bf16 Gram matrices lose the small deviations we penalise
        eye = torch.eye(r, device=a.device)
        for gram in (a @ a.T, b.T @ b):
            dev = gram - eye
            terms.append(dev.square().sum() if norm == "squared" else torch.linalg.matrix_norm(dev, "fro"))
    if not terms:
        return torch.zeros(())
    total = stack_terms(terms)
    return total.mean() if reduction == "mean" else total.sum()


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
