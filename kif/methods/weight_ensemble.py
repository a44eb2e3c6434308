"""Weight-Ensemble (docs/method.md §4 eq. 14; the coarse fusion ablation of Table V).

One LoRA (or all weights) is trained through the sequence. After task k the trainable
weights are averaged with the previous fused model,

    θ̂_k = λ·θ̂_{k−1} + (1−λ)·θ_k        (θ̂_1 = θ_1)

with ``kif.core.fusion.weight_ensemble``; θ̂_k is loaded into the model (it is what is
evaluated and saved, and task k+1 starts from it). State: one copy of the trainable weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..core.fusion import weight_ensemble
from .base import CLMethod, pack, unpack
from .options import WeightEnsembleOptions
from .registry import register


@register
class WeightEnsemble(CLMethod):
    STATE = {"fused": 1}  # what extra_state writes (CLMethod.STATE)
    name = "weight-ensemble"
    description = "one LoRA; after each task the weights are averaged with the previous model (eq. 14)"

    Options = WeightEnsembleOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        self.fused: Optional[dict[str, torch.Tensor]] = None

    def extra_state(self):
        return pack("fused", self.fused), {}

    def load_extra_state(self, tensors, meta):
        self.fused = unpack("fused", tensors)

    def after_task(self, k: int, task_dir: Path) -> dict:
        cur = self.snapshot_trainable()
        if self.fused is not None:
            self.set_trainable(weight_ensemble(self.fused, cur, self.opts.lambda_))
        self.fused = self.snapshot_trainable()
        return {}
