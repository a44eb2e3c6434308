"""EWC (Kirkpatrick et al., 2017; docs/method.md §8): a Fisher-weighted pull towards old weights.

One LoRA (or all weights) is trained through the sequence. After task k the diagonal
empirical Fisher of the trainable parameters is estimated on that task's training data,

    F_k = mean over batches b of (∂L_b/∂θ)²       (L_b: the LM loss of batch b, as in training)

from ``fisher_samples`` examples in batches of ``fisher_batch_size`` (1 = per-example
gradients, the usual empirical Fisher), the model in eval mode (no dropout). The
Fishers are accumulated online, F = γ·F + F_k (γ = 1: the sum over tasks, i.e. the
multi-penalty EWC with the latest anchor), and the anchor θ* = θ after task k is kept.
Training every later task adds

    λ/2 · Σ_i F_i (θ_i − θ*_i)²

State: two tensors per trainable parameter (F and θ*), constant in the number of tasks.

Default λ = 5000. Measured on SmolLM2-135M (q/v LoRA r = 8, per-example Fisher after a
short sst2 task): F has mean 2e-5, median 1e-7, max 2e-2 (ΣF ≈ 9 over 461k entries;
lora_B of v_proj is the largest). The penalty's pull λ·F·Δ matches a typical LM gradient
√F once Δ ≈ 1/(λ√F): with λ = 5000 the most important entries (F ≈ 5e-4) are held to
drifts of ≈ 0.01 while low-Fisher entries (most lora_A) stay free. λ is not given by the
KIF paper; tune it per model (a wider sweep: 100-50000).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..encoding import TrainCollator
from ..torchutil import eval_mode, stack_terms
from .base import CLMethod, pack, unpack
from .options import EWCOptions
from .registry import register


def ewc_penalty(params: list[Tensor], fishers: list[Tensor], anchors: list[Tensor], lam: float) -> Tensor:
    """λ/2 · Σ F·(θ − θ*)² over matched tensors (fp32, differentiable in θ)."""
    terms = [(f * (p.float() - a).square()).sum() for p, f, a in zip(params, fishers, anchors)]
    if not terms:
        return torch.zeros(())
    return 0.5 * lam * stack_terms(terms).sum()


@register
class EWC(CLMethod):
    STATE = {"fisher": 1, "anchor": 1}  # what extra_state writes (CLMethod.STATE)
    name = "ewc"
    description = "one LoRA + elastic weight consolidation (online diagonal-Fisher penalty towards old weights)"

    Options = EWCOptions

    def __init__(self, ctx):
        super().__init__(ctx)
        self.fisher: Optional[dict[str, Tensor]] = None
        self.anchor: Optional[dict[str, Tensor]] = None
        self._examples: list = []
        self._terms: tuple[list, list, list] = ([], [], [])

    def train_examples(self, k: int, examples: list) -> list:
        self._examples = list(examples)
        return examples

    def before_task(self, k: int) -> None:
        if self.fisher is None:
            self._terms = ([], [], [])
            return
        params = self.trainable()
        names = [n for n in params if n in self.fisher]
        self._terms = ([params[n] for n in names], [self.fisher[n] for n in names], [self.anchor[n] for n in names])

    def extra_loss(self, model) -> Optional[Tensor]:
        if not self._terms[0] or self.opts.lambda_ == 0:
            return None
        return ewc_penalty(*self._terms, self.opts.lambda_)

    def compute_fisher(self, examples: list, seed: int) -> dict[str, Tensor]:
        """Diagonal empirical Fisher: mean over batches of squared LM-loss gradients (fp32)."""
        o = self.opts
        params = self.trainable()
        if len(examples) > o.fisher_samples:
            idx = sorted(random.Random(seed).sample(range(len(examples)), o.fisher_samples))
            examples = [examples[i] for i in idx]
        enc = self.ctx.encoder
        collate = TrainCollator(enc.tokenizer.pad_token_id)
        device = next(iter(params.values())).device
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        model = self.model
        with eval_mode(model):
            model.zero_grad(set_to_none=True)
            n_batches = 0
            for start in range(0, len(examples), o.fisher_batch_size):
                batch = collate([enc.train_features(ex) for ex in examples[start:start + o.fisher_batch_size]])
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                if not torch.isfinite(loss):
                    model.zero_grad(set_to_none=True)
                    continue
                loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach().float().square()
                model.zero_grad(set_to_none=True)
                n_batches += 1
        return {n: f / max(n_batches, 1) for n, f in fisher.items()}

    def consolidate(self, fisher_new: dict[str, Tensor]) -> None:
        """F = γ·F_old + F_new (first task: F = F_new); θ* = current trainable weights."""
        if self.fisher is None:
            self.fisher = fisher_new
        else:
            g = self.opts.gamma
            self.fisher = {n: g * self.fisher[n] + f if n in self.fisher else f for n, f in fisher_new.items()}
        self.anchor = {n: p.detach().float().clone() for n, p in self.trainable().items()}

    def extra_state(self):
        return {**pack("fisher", self.fisher), **pack("anchor", self.anchor)}, {}

    def load_extra_state(self, tensors, meta):
        self.fisher, self.anchor = unpack("fisher", tensors), unpack("anchor", tensors)

    def after_task(self, k: int, task_dir: Path) -> dict:
        fisher_new = self.compute_fisher(self._examples, self.ctx.cfg.seed + k)
        self.consolidate(fisher_new)
        total = sum(float(f.sum()) for f in fisher_new.values())
        n = sum(f.numel() for f in fisher_new.values())
        return {"fisher_mean": total / max(n, 1)}
