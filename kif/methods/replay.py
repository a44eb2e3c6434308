"""Replay (docs/method.md §8): real samples of earlier tasks mixed into the current task's data.

One LoRA is trained through the sequence (as SeqLoRA). After task k, a random
``memory_fraction`` of its training set (at least one sample) is stored; training task k
then sees D_k plus the memory of tasks 0..k-1 (the trainer shuffles the union).
"""
from __future__ import annotations

from pathlib import Path

from ..replay import Memory
from .base import CLMethod
from .options import ReplayOptions
from .registry import register


@register
class Replay(CLMethod):
    STATE = {"memory": 0}  # what extra_state writes (CLMethod.STATE)
    name = "replay"
    description = "one LoRA; a stored fraction of every finished task's real samples is mixed into later tasks"

    Options = ReplayOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        self.memory = Memory.from_options(self.opts, ctx.cfg.seed)
        self._current: list = []

    def train_examples(self, k: int, examples: list) -> list:
        self._current = list(examples)
        return list(examples) + self.memory.examples_before(k)

    def after_task(self, k: int, task_dir: Path) -> dict:
        kept = self.memory.add(self.ctx.tasks[k], self._current)
        return {"memory_added": len(kept), "memory_total": len(self.memory)}

    def state_summary(self) -> dict:
        return {"memory": self.memory.sizes()}

    def extra_state(self):
        return {}, {"memory": self.memory.state_dict()}

    def load_extra_state(self, tensors, meta):
        if "memory" in meta:
            self.memory = Memory.from_state_dict(meta["memory"])
