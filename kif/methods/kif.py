"""KIF and KIFLoRA: importance-aware knowledge localization and fusion (docs/method.md §2-4).

Per task k: the tracker scores every parameter at each optimizer step (eq. 8-12),
unit scores follow (eq. 6); after training, each skill unit of the fresh model f_k is
fused with the previous fused model f̂_{k−1} (static eq. 15 or adaptive eq. 16-17),
and the accumulated importance is updated (eq. 13). f̂_k initialises task k+1.

Artifacts per task dir: ``adapter_trained/`` (f_k), ``adapter/`` (f̂_k, saved by the runner), both PEFT;
``scores_current.safetensors`` (I(U_k)), ``scores_accumulated.safetensors`` (I(Û_k)),
``fusion_weights.safetensors`` (coefficient of f̂_{k−1} per unit; absent for task 1).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core import (ImportanceTracker, SkillUnits, accumulate_importance, fuse, lora_pairs,
                    orthogonal_regularizer)
from ..dist import is_main
from ..errors import ArtifactError, ConfigError
from ..io import atomic_save_tensors
from ..training import tensorboard_writer
from .base import CLMethod, pack, unpack
from .options import KIFLoRAOptions, KIFOptions
from .registry import register


@register
class KIF(CLMethod):
    STATE = {"fused_prev": 1, "accumulated": 1, "skipped_total": 0}  # extra_state (CLMethod.STATE)
    name = "kif"
    description = "KIF: matrix-level skill units, first-order importance, static fusion (eq. 15)"
    Options = KIFOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        o = self.opts
        params = self.trainable()
        if o.units == "lora_rank1" and not ctx.cfg.lora.enabled:
            raise ConfigError("method_args.units: lora_rank1 units need lora.enabled: true")
        self.units = SkillUnits.lora_rank1(params) if o.units == "lora_rank1" else SkillUnits.matrix_level(params)
        self.tracker = ImportanceTracker(params, o.sensitivity, o.smoothing, o.alpha1, o.alpha2,
                                         single_step_index=o.single_step_index,
                                         single_step_timing=o.single_step_timing)
        self.fused_prev: dict[str, torch.Tensor] | None = None  # f̂_{k−1}, kept off the graph
        self.accumulated: torch.Tensor | None = None  # I(Û_{k−1}), eq. 13
        self.last_w: torch.Tensor | None = None

    def before_task(self, k: int) -> None:
        self.tracker.reset()

    def on_gradients(self) -> None:
        # StepGuard calls this only for finite gradients: no second check (and GPU sync) here
        self.tracker.update(check_finite=False)

    def on_step_end(self) -> None:
        self.tracker.after_step()  # single_step: the authors read w after the optimizer step

    def extra_loss(self, model):
        o = self.opts
        if o.ortho_weight <= 0:
            return None
        return o.ortho_weight * orthogonal_regularizer(lora_pairs(model), o.ortho_norm, o.ortho_reduction)

    def fuse_task(self, trained: dict, current):
        """(f̂_k, fusion weights, I(Û_k)) from f_k (``trained``) and its unit scores I(U_k): eq. 15
        or 16-17, and eq. 13. Task 1 initialises the fused model and the scores (weights None)."""
        o = self.opts
        if self.fused_prev is None:
            return trained, None, current
        hp = ({"top_fraction": o.top_fraction, "gamma": o.gamma, "threshold": o.threshold} if o.fusion == "static"
              else {"temperature": o.temperature})
        fused, w = fuse(self.units, self.fused_prev, trained, self.accumulated, current, o.fusion, **hp)
        return fused, w, accumulate_importance(self.accumulated, current, o.beta)

    def after_task(self, k: int, task_dir: Path) -> dict:
        current = self.units.unit_scores(self.tracker.scores())
        trained = self.snapshot_trainable()
        self.save_adapter(task_dir / "adapter_trained")
        fused, w, accumulated = self.fuse_task(trained, current)
        if w is not None:
            self.set_trainable(fused)
        self.fused_prev = {n: t.detach().clone() for n, t in fused.items()}
        self.accumulated, self.last_w = accumulated, w
        atomic_save_tensors(task_dir / "scores_current.safetensors", self.units.scores_to_dict(current))
        atomic_save_tensors(task_dir / "scores_accumulated.safetensors", self.units.scores_to_dict(accumulated))
        if w is not None:
            atomic_save_tensors(task_dir / "fusion_weights.safetensors", self.units.scores_to_dict(w))
        self._log_histograms(task_dir, current, accumulated, w)
        stats = {"units": len(self.units), "importance_steps": self.tracker.steps,
                 "importance_skipped": self.tracker.skipped}
        if w is not None:
            stats["mean_weight_on_past"] = round(float(w.mean()), 6)
        return stats

    def _log_histograms(self, task_dir: Path, current, accumulated, w) -> None:
        """With train.report_to: [tensorboard], unit-score histograms next to the loss curves."""
        if "tensorboard" not in self.ctx.cfg.train.report_to or not is_main():
            return
        writer = tensorboard_writer(self.ctx.out_dir / "logs" / task_dir.name)
        writer.add_histogram("importance/current", current)
        writer.add_histogram("importance/accumulated", accumulated)
        if w is not None:
            writer.add_histogram("fusion/weight_on_past", w)
        writer.close()

    def state_summary(self) -> dict:
        return {"importance_skipped_total": self.tracker.skipped_total}

    def extra_state(self):
        tensors = pack("fused_prev", self.fused_prev)
        if self.accumulated is not None:
            tensors["accumulated"] = self.accumulated
        return tensors, {"skipped_total": self.tracker.skipped_total}

    def load_extra_state(self, tensors, meta):
        self.fused_prev = unpack("fused_prev", tensors)
        acc = tensors.get("accumulated")
        if acc is not None and acc.shape != (len(self.units),):
            raise ArtifactError(f"checkpoint: {acc.numel()} accumulated scores for {len(self.units)} units")
        self.accumulated = None if acc is None else acc.float().clone()
        self.tracker.skipped_total = int(meta.get("skipped_total", 0))


@register
class KIFLoRA(KIF):
    name = "kiflora"
    description = "KIFLoRA: rank-1 LoRA units, second-order importance, adaptive fusion (eq. 16-17), eq. 5 loss"
    Options = KIFLoRAOptions
