"""Divergence stop: training that explodes ends the run (exit 2) before anything of the task is saved.

Rule: a task diverged when the loss of one of its optimizer steps exceeds
``DIVERGENCE_FACTOR`` × max(first step's loss, 1). The loss of a language model that is
learning stays near or below where it started (about ln |vocab| for a random one); a run
whose learning rate is far too high jumps by orders of magnitude within a step or two
(1e6 gives ~1e30), and gradient clipping hides this from the non-finite-gradient guard,
since clipped gradients stay finite. The floor of 1 keeps a task that starts almost solved
(loss 0.05) from tripping on ordinary noise. Non-finite losses are left to
``kif.training.StepGuard`` (it skips those steps and stops past
``train.max_skipped_fraction``); weights that end a task non-finite stop the run at the
end of training.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from transformers import TrainerCallback

from .errors import KifError
from .guards import precision_hint
from .torchutil import non_finite

DIVERGENCE_FACTOR = 10.0


class DivergenceGuard(TrainerCallback):
    """Stops training (a KifError, exit 2) when the loss explodes (module docstring's rule), and
    at the end of training when the trained weights are not finite. Either way nothing of the
    task is saved: the runner checkpoints only after training returns.

    The loss of each optimizer step is the sum of its micro-batches' optimised losses (model
    loss plus the method's extra loss, ``add_extra``; the step's mean
    when the model normalises by the accumulated batch, else a fixed multiple of it: the same
    scale all task long, which is all a ratio needs), read by a forward hook on the training
    model in training mode (once per step, where ``StepGuard`` already waits for the device). Under ``torch_compile`` the hook is not installed and the logged losses
    (every ``train.logging_steps``) are checked instead."""

    def __init__(self, label: str, learning_rate: float, bf16: bool, max_grad_norm: float):
        self.label, self.lr, self.bf16, self.max_grad_norm = label, learning_rate, bf16, max_grad_norm
        self.start: Optional[float] = None
        self._step_loss: Optional[torch.Tensor] = None
        self._handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start, self._step_loss = None, None
        if model is not None and not args.torch_compile:
            self._handle = model.register_forward_hook(self._record)

    def _record(self, module, inputs, output):
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if module.training and isinstance(loss, torch.Tensor):
            d = loss.detach().float()
            self._step_loss = d if self._step_loss is None else self._step_loss + d

    def add_extra(self, extra: torch.Tensor) -> None:
        """Adds a micro-batch's method loss (KIFLoRA's eq. 5, EWC's penalty), as it was added
        to the model's loss: the guard checks the loss that is optimised, not only the model's
        (``KifTrainer.compute_loss`` calls this). Under ``torch_compile`` the logged loss
        already holds it."""
        if self._handle is not None:
            d = extra.detach().float()
            self._step_loss = d if self._step_loss is None else self._step_loss + d

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._step_loss is not None:
            loss, self._step_loss = float(self._step_loss), None
            self.check(loss, state.global_step + 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._handle is None and logs and isinstance(logs.get("loss"), float):
            self.check(logs["loss"], state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if model is not None:
            bad = non_finite({n: p.detach() for n, p in model.named_parameters() if p.requires_grad})
            if bad:
                raise KifError(f"{self.label}: training ended with non-finite weights ({bad[0]}, "
                               f"{len(bad)} tensor(s)); {self._hint()}")

    def check(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            return  # StepGuard's business: the step is skipped and counted
        if self.start is None:
            self.start = loss
            return
        if loss > DIVERGENCE_FACTOR * max(self.start, 1.0):
            raise KifError(f"{self.label}: training diverged at optimizer step {step}: loss {loss:.4g}, more "
                           f"than {DIVERGENCE_FACTOR:g}x its start ({self.start:.4g}); {self._hint()}")

    def _hint(self) -> str:
        hint = precision_hint(self.bf16).replace("train.learning_rate", f"train.learning_rate (now {self.lr:g})")
        if self.max_grad_norm == 0:
            hint += " or set train.max_grad_norm (clipping is off)"
        return (hint + "; nothing of this task was saved, earlier tasks are kept: rerun with "
                "--accept-config-change to resume with the new setting")
