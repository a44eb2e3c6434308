"""O-LoRA (Wang et al., 2023; docs/method.md §8): IncLoRA + an orthogonality loss to old LoRAs.

Adapters as in IncLoRA (one per task, old frozen, all summed). While task t trains,
the loss gets

    λ1 · Σ_modules Σ_{i<t} L_orth(A_i, A_t)  +  λ2 · Σ_{new LoRA tensors P} ||P||_2

with A ∈ R^{r×in} (PEFT's ``lora_A`` weight, rows span the LoRA input subspace).

Which L_orth: the paper writes L_orth = Σ_{j,k} O[j,k]² with O = A_iᵀ·A_t (its A is
in×r), i.e. the squared Frobenius norm of the r×r overlap. The authors' code
(cmnfriend/O-LoRA, ``src/uie_trainer_lora.py``) instead adds
``torch.abs(torch.mm(lora_A, loranew_A.T)).sum()`` -- the sum of absolute entries of
A_old·A_newᵀ, where ``lora_A`` is all old adapters' A concatenated along r (so it equals
the sum over old adapters) -- and ``torch.norm(param, p=2)`` (unsquared) per new LoRA
tensor for the λ2 term. Their code produced the published numbers, so the default
``orth_norm: l1`` follows it; ``orth_norm: squared`` gives the paper's form. The λ2
term always follows the code (sum of per-tensor L2 norms, not squared).

λ1, λ2 as published. The defaults λ1 = 0.5, λ2 = 0 are the values O-LoRA's scripts for
the 4-task standard benchmark use for every task (``scripts/order_1.sh`` .. ``order_3.sh``,
``scripts_llama/order_*.sh``; lr 1e-3, 1 epoch, constant rate, no warm-up, no validation).
Its Long Sequence script (``logs_and_outputs/long_olora/hyparam.sh``, commit 07117e1f, the
order yelp → amazon → mnli → ... → wic, kif's ``long_sequence`` order 3) sets them per
task: λ1 0 for the first task, 0.5 for tasks 2-9, 5 for tasks 10-15; λ2 0.1 for copa, qqp,
sst2, yahoo, boolq, 0.3 for rte and wic, 0 elsewhere; 2 epochs for mnli, 1 for the others.
kif takes such values through ``per_task`` (``kif.per_task``): ``before_task(k)`` reads
task k's options (``task_opts``), so the loss of task k uses task k's λ1 and λ2
(``configs/table1/olora.yaml``, ``configs/paper/olora_*.yaml``).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from ..torchutil import stack_terms
from .inclora import IncLoRA, adapter_name
from .options import OLoRAOptions
from .registry import register


def orthogonality_loss(pairs: Iterable[tuple[Tensor, Tensor]], norm: str = "l1") -> Tensor:
    """Σ over (A_old, A_new) pairs of |A_old·A_newᵀ| summed ("l1", O-LoRA code) or squared ("squared", paper).

    A_old [r_old, in], A_new [r_new, in]; zero iff every old row is orthogonal to every new row.
    """
    terms = []
    for a_old, a_new in pairs:
        overlap = a_old.detach().float() @ a_new.float().T  # [r_old, r_new]
        terms.append(overlap.abs().sum() if norm == "l1" else overlap.square().sum())
    if not terms:
        return torch.zeros(())
    return stack_terms(terms).sum()


def l2_loss(params: Iterable[Tensor]) -> Tensor:
    """Σ ||P||_2 over tensors (O-LoRA code's λ2 term on the new LoRA's A and B)."""
    terms = [p.float().norm(p=2) for p in params]
    if not terms:
        return torch.zeros(())
    return stack_terms(terms).sum()


@register
class OLoRA(IncLoRA):
    name = "olora"
    description = "O-LoRA: a new LoRA per task, trained orthogonal to the frozen earlier LoRAs (all summed)"

    Options = OLoRAOptions

    def __init__(self, ctx):
        self._pairs: list[tuple[Tensor, Tensor]] = []
        self._new_params: list[Tensor] = []
        super().__init__(ctx)
        self._task_opts = self.opts  # the options of the task in training (per_task applied)

    def before_task(self, k: int) -> None:
        super().before_task(k)
        self._task_opts = self.task_opts(k)
        new = adapter_name(k)
        new_params = self.adapter_params(new)
        self._new_params = list(new_params.values())
        # (A_old, A_new) for every LoRA module and every older adapter, matched by module name.
        self._pairs = []
        new_a = {n.split(".lora_A.")[0]: p for n, p in new_params.items() if ".lora_A." in n}
        for i in range(k):
            for n, p in self.adapter_params(adapter_name(i)).items():
                if ".lora_A." in n:
                    self._pairs.append((p, new_a[n.split(".lora_A.")[0]]))

    def extra_loss(self, model) -> Optional[Tensor]:
        o = self._task_opts
        loss = None
        if o.lambda_1 > 0 and self._pairs:
            loss = o.lambda_1 * orthogonality_loss(self._pairs, o.orth_norm)
        if o.lambda_2 > 0 and self._new_params:
            l2 = o.lambda_2 * l2_loss(self._new_params)
            loss = l2 if loss is None else loss + l2.to(loss.device)
        return loss
