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
from typing import Literal

import torch
from pydantic import Field, field_validator

from ..core import (ImportanceTracker, SkillUnits, accumulate_importance, fuse, lora_pairs,
                    orthogonal_regularizer)
from ..errors import ArtifactError
from ..io import atomic_save_tensors
from .base import CLMethod, MethodOptions, pack, unpack
from .registry import register


class KIFOptions(MethodOptions):
    """Every choice of KIF. Sources: the paper, the authors' released code (TaSL repository),
    or kif where both are silent; kif/core docstrings and docs/method.md say which is which."""
    units: Literal["matrix", "lora_rank1"] = Field("matrix", description="skill unit granularity (§2)")
    sensitivity: Literal["first", "second", "grad"] = Field("first", description="eq. 8 / eq. 9 / |grad| ablation")
    smoothing: Literal["ema", "mean", "single_step"] = Field(
        "ema", description="eq. 10-12 (ema; true); single_step: I_t of one step, no EMA/uncertainty (the "
        "authors' Table IV ablations); mean: mean I_t over the task (false)")
    single_step_index: int = Field(1, ge=-1, description="smoothing single_step: the counted step kept "
                                   "(0-based; 1 = the authors' first counted step; -1 = the last)")
    single_step_timing: Literal["after_step", "before_step"] = Field(
        "after_step", description="smoothing single_step: read w after optimizer.step() (w_{t+1}, g_t; the "
        "authors' code) or before it (w_t, g_t; kif's earlier reading)")
    alpha1: float = Field(0.85, ge=0, lt=1)
    alpha2: float = Field(0.85, ge=0, lt=1)
    beta: float = Field(0.7, ge=0, le=1, description="eq. 13 weight of past importance")
    fusion: Literal["static", "adaptive"] = "static"
    top_fraction: float = Field(0.2, ge=0, le=1, description="eq. 15: share of units that count as important")
    threshold: Literal["percentile", "rank"] = Field(
        "percentile", description="the top-fraction rule: score > np.percentile(scores, 100(1-f)) (the authors' "
        "code) or exactly ceil(f·U) by rank (kif's earlier rule); neither marks a lowest/zero-score unit")
    gamma: float = Field(0.7, ge=0, le=1, description="eq. 15 weight of the past for task-shared units "
                         "(paper: unstated; the authors' code: 0.7)")
    temperature: float = Field(0.15, gt=0, description="eq. 16-17 τ (paper 0.15; the authors' script 0.25)")
    ortho_weight: float = Field(0.0, ge=0, description="weight of the orthogonal regulariser eq. 5")
    ortho_norm: Literal["squared", "frobenius"] = Field(
        "frobenius", description="eq. 5 terms: Frobenius norm, unsquared (the authors' code and AdaLoRA's, for "
        "which the weight 0.1 was tuned) or squared (eq. 5 as printed)")
    ortho_reduction: Literal["mean", "sum"] = Field(
        "mean", description="combine the per-matrix eq. 5 terms by their mean (the authors' code, AdaLoRA) or sum")

    @field_validator("smoothing", mode="before")
    @classmethod
    def _bool_smoothing(cls, v):
        """The key was a bool before single_step existed: true = ema, false = mean."""
        return ("ema" if v else "mean") if isinstance(v, bool) else v


class KIFLoRAOptions(KIFOptions):
    units: Literal["matrix", "lora_rank1"] = "lora_rank1"
    sensitivity: Literal["first", "second", "grad"] = "second"
    fusion: Literal["static", "adaptive"] = "adaptive"
    ortho_weight: float = Field(0.1, ge=0, description="eq. 5 weight (paper: unstated; the authors' code 0.1, "
                                "with the unsquared norm and the mean over matrices)")


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
            from ..errors import ConfigError
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
        from ..dist import is_main

        if "tensorboard" not in self.ctx.cfg.train.report_to or not is_main():
            return
        from ..training import tensorboard_writer

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
