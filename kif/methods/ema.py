"""EMA (Table V ablation): an exponential moving average of the weights during training.

After every optimizer step (the ``on_step_end`` hook), for each trainable tensor

    θ̄ ← d·θ̄ + (1−d)·θ          (d = ``decay``; θ̄ starts as the weights before task 1)

At the end of each task θ̄ is loaded into the model (evaluated, saved, and the start of
the next task); the average then keeps running through the next task. State: one copy of
the trainable weights (fp32).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from pydantic import Field

from .base import CLMethod, MethodOptions, pack, unpack
from .registry import register


@register
class EMA(CLMethod):
    name = "ema"
    description = "one LoRA; an exponential moving average of the weights (updated every step) replaces them after each task"

    class Options(MethodOptions):
        decay: float = Field(0.999, ge=0, le=1, description="EMA decay d per optimizer step")

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ema: Optional[dict[str, torch.Tensor]] = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.updates = 0

    def before_task(self, k: int) -> None:
        params = self.trainable()
        if self.ema is None:
            self.ema = {n: p.detach().float().clone() for n, p in params.items()}
        self._pairs = [(self.ema[n], p) for n, p in params.items()]

    @torch.no_grad()
    def on_step_end(self) -> None:
        d = self.opts.decay
        for avg, p in self._pairs:
            avg.mul_(d).add_(p.detach().float(), alpha=1 - d)
        self.updates += 1

    def extra_state(self):
        return pack("ema", self.ema), {"updates": self.updates}

    def load_extra_state(self, tensors, meta):
        self.ema, self.updates = unpack("ema", tensors), int(meta.get("updates", 0))

    def after_task(self, k: int, task_dir: Path) -> dict:
        with torch.no_grad():
            for avg, p in self._pairs:
                p.copy_(avg.to(p.dtype))
        return {"ema_updates_total": self.updates}
