"""EMA (Table V ablation): an exponential moving average of the weights during training.

After every optimizer step (the ``on_step_end`` hook), for each trainable tensor

    θ̄ ← d·θ̄ + (1−d)·θ          (θ̄ starts as the weights before task 1)

At the end of each task θ̄ is loaded into the model (evaluated, saved, and the start of
the next task); the average then keeps running through the next task. State: one copy of
the trainable weights (fp32).

The decay d per step. The paper does not give it. A fixed d does not scale with the task:
at d = 0.999 the weight of the pre-task average at a task's end is 0.999^steps, 29 % for the
paper's T5 regime (batch 8, 1,000 examples, 10 epochs: 1,250 steps) but 92 % for 80 steps
(batch 128, 1,000 examples, 10 epochs), where the baseline barely learns. So the default
is a half-life per task: ``half_life`` h = the fraction of the task's optimizer steps S after
which the pre-task average weighs ½, i.e. d = 0.5^(1/(h·S)) (``decay_for_half_life``), the
same share at every task length. Default h = 0.55 reproduces d = 0.999 at S = 1,250 (its
half-life is ln ½ / ln 0.999 = 693 steps = 0.55 of the task): the average keeps 0.5^(1/0.55)
= 28.4 % of the pre-task weights at the task's end. ``decay`` (a fixed d per step, kif's
earlier key) replaces it when given. S is the task's planned optimizer steps
(``planned_steps``), counted from its training examples as the Trainer counts them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ..dist import world_size
from .base import CLMethod, pack, unpack
from .options import EMAOptions
from .registry import register


def decay_for_half_life(half_life: float, steps: int) -> float:
    """The per-step decay d with d^(half_life·steps) = ½."""
    if half_life <= 0 or steps < 1:
        raise ValueError(f"need half_life > 0 and steps >= 1, got {half_life}, {steps}")
    return 0.5 ** (1.0 / (half_life * steps))


def planned_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float, processes: int = 1) -> int:
    """Optimizer steps of a task as the Trainer plans them: ⌈epochs · ⌈batches / grad_accum⌉⌉,
    batches = ⌈⌈n / batch_size⌉ / processes⌉ per process (accelerate deals whole batches), at least 1."""
    batches = math.ceil(math.ceil(n_examples / batch_size) / processes)
    per_epoch = max(math.ceil(batches / grad_accum), 1)
    return max(math.ceil(epochs * per_epoch), 1)


@register
class EMA(CLMethod):
    STATE = {"ema": 1, "updates": 0}  # what extra_state writes (CLMethod.STATE)
    name = "ema"
    description = "one LoRA; an exponential moving average of the weights (updated every step) replaces them after each task"

    Options = EMAOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ema: Optional[dict[str, torch.Tensor]] = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.updates = 0
        self.decay = self.opts.decay
        self.task_steps: Optional[int] = None

    def train_examples(self, k: int, examples: list) -> list:
        o, t = self.opts, self.ctx.cfg.train
        if o.decay is None:  # the half-life is per task: this task's own length sets d
            self.task_steps = planned_steps(len(examples), t.batch_size, t.grad_accum, t.epochs, world_size())
            self.decay = decay_for_half_life(o.half_life, self.task_steps)
        return examples

    def before_task(self, k: int) -> None:
        params = self.trainable()
        if self.ema is None:
            self.ema = {n: p.detach().float().clone() for n, p in params.items()}
        self._pairs = [(self.ema[n], p) for n, p in params.items()]

    @torch.no_grad()
    def on_step_end(self) -> None:
        d = self.decay
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
        stats = {"ema_updates_total": self.updates, "ema_decay": self.decay}
        if self.task_steps is not None:
            stats["ema_planned_steps"] = self.task_steps
        return stats
