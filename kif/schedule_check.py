"""A check on the learning rate each optimizer step of a training stage actually gets.

Why: a stage shorter than its warm-up trains at a fraction of the configured rate, and one
whose every step falls at the start of a linear warm-up (lr 0 at step 0) trains nothing at
all, silently -- KIF-M's replay stage inherited TaSL's 50 warm-up steps for its 1-2 steps and
reduced to KIF (issue 28). ``ScheduleCheck`` records the rate of every optimizer step and
flags such a stage with one log line and ``schedule_flags`` in its stats (results.json):

- ``lr_all_zero``: every optimizer step had learning rate 0: the stage changed nothing;
- ``fewer_steps_than_warmup``: the stage ended before its warm-up did, so it never reached
  the configured rate;
- ``warmup_over_half``: the warm-up covers more than half of the stage's steps (Table I's
  50 steps are 62 % of a 1,000-example task at batch 128; cb's 20 steps peak at 0.38 × lr).
  TaSL's fixed 50 steps stay the faithful default; ``train.warmup_ratio`` scales with the task.
"""
from __future__ import annotations

import logging

from transformers import TrainerCallback

from .dist import is_main

log = logging.getLogger("kif")


class ScheduleCheck(TrainerCallback):
    """Learning rate of every optimizer step of one stage (read before the step, i.e. the rate
    the step uses; the scheduler moves after it); ``stats()`` and one warning line at the end."""

    def __init__(self, label: str):
        self.label = label
        self.lrs: list[float] = []
        self.planned = 0  # optimizer steps the Trainer planned
        self.warmup = 0  # the Trainer's warm-up steps for that plan (warmup_steps or warmup_ratio)

    def on_train_begin(self, args, state, control, **kwargs):
        self.planned = int(state.max_steps)
        self.warmup = int(args.get_warmup_steps(self.planned))

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.lrs.append(max(float(g["lr"]) for g in optimizer.param_groups))

    def flags(self) -> list[str]:
        steps = len(self.lrs) or self.planned
        out = []
        if self.lrs and max(self.lrs) == 0:
            out.append("lr_all_zero")
        if self.warmup and steps < self.warmup:
            out.append("fewer_steps_than_warmup")
        if self.warmup and self.warmup > 0.5 * steps:
            out.append("warmup_over_half")
        return out

    def on_train_end(self, args, state, control, **kwargs):
        if not is_main():  # every process sees the same schedule: one line for the run
            return
        flags, steps, peak = self.flags(), len(self.lrs), max(self.lrs, default=0.0)
        if "lr_all_zero" in flags:
            log.warning("%s: all %d optimizer steps had learning rate 0 (warm-up %d steps): this stage "
                        "trained nothing", self.label, steps, self.warmup)
        elif "fewer_steps_than_warmup" in flags:
            log.warning("%s: %d optimizer steps, fewer than the %d warm-up steps: the learning rate peaked "
                        "at %.3g of %.3g", self.label, steps, self.warmup, peak, args.learning_rate)
        elif "warmup_over_half" in flags:
            log.warning("%s: the %d warm-up steps cover %.0f %% of the %d optimizer steps (peak lr %.3g); "
                        "train.warmup_ratio scales the warm-up with the task", self.label, self.warmup,
                        100 * self.warmup / max(steps, 1), steps, peak)

    def stats(self) -> dict:
        """``lr_min`` / ``lr_max`` over the optimizer steps, ``warmup_steps`` (the Trainer's), and
        ``schedule_flags`` when any (see the module docstring)."""
        out = {"lr_min": min(self.lrs, default=None), "lr_max": max(self.lrs, default=None),
               "warmup_steps": self.warmup}
        if self.flags():
            out["schedule_flags"] = self.flags()
        return out
