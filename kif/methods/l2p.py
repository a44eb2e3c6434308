"""Learning to Prompt (Wang et al., CVPR 2022), for language models: a pool of M soft prompts,
each with a learnable key; every input picks the N prompts whose keys are nearest its query.

- Query q(x): the frozen model's pooled representation of the bare input (no prompt; eval
  mode, no gradient) — L2P's "pre-trained model as query function" (official code: the
  frozen ViT's ``pre_logits``). ``query: mean`` (default) = the mean of the last hidden
  states over the real tokens (the encoder's for T5); ``query: last`` = the last real token's
  state (the decoder-only counterpart of a [CLS] summary). Mean pooling is what the
  language-model L2P ports do (e.g. TRACE's ``L2PModel``, ``embeding_key = 'mean'``, though
  it pools the input embeddings).
- Selection (L2P eq. 3): the top-N keys by cosine similarity γ(q, k) = q·k / (|q||k|),
  per input (official ``batchwise_prompt`` is a batch-majority vote; kif selects per input so
  a prediction does not depend on the other inputs of its batch — kif), in descending
  similarity; their prompts are prepended: [P_{s1}; …; P_{sN}; x].
- Surrogate loss (L2P eq. 5): L = L_task + λ Σ_i γ-distance, implemented as in the official
  code as ``loss − λ · Σ_{b,i} γ(q_b, k_{s_i(b)}) / B`` (``pull_constraint_coeff``): its gradient
  pulls the selected keys towards the query; only the keys receive it (q is frozen).
- Defaults: M = 10, N = 5, L_p = 5, λ = 0.1 (the official code's CIFAR-100 config:
  ``pool_size 10, length 5, top_k 5, pull_constraint_coeff 0.1``); keys U(−1, 1) (their
  ``prompt_key_init = "uniform"``); prompts from random vocabulary embeddings (Lester et al.'s
  initialisation, used by the language ports, instead of U(−1, 1), which is far off the
  scale of a language model's token embeddings — kif).
- No task identity anywhere: an unseen input (``eval.unseen``) gets the prompts its query picks.
- Artifacts: ``tasks/<k>/adapter/prompts.safetensors`` (``prompts`` [M, L_p, d], ``keys`` [M, d]).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..io import atomic_save_tensors
from ..prompting import PromptedModel, trainable_state, vocab_init
from .base import CLMethod
from .options import L2POptions
from .registry import register


def pool_query(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, d] query from hidden states [B, T, d] and the attention mask [B, T] (either padding side)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    # last real token: the highest position whose mask is 1
    idx = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def select(query: torch.Tensor, keys: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [B, N] of the top-N keys by cosine similarity, in descending order; the
    similarities [B, N] of those keys, differentiable w.r.t. the keys)."""
    sim = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).t()  # [B, M]
    idx = sim.detach().topk(top_k, dim=1).indices
    return idx, sim.gather(1, idx)


def surrogate_loss(chosen_sim: torch.Tensor, weight: float) -> torch.Tensor:
    """−λ · Σ_{b,i} γ(q_b, k_{s_i(b)}) / B (official L2P: ``loss -= coeff * reduce_sim``)."""
    return -weight * chosen_sim.sum() / chosen_sim.shape[0]


class PromptPool(nn.Module):
    """L2P's prompt source: prompts [M, L_p, d] and keys [M, d]."""

    def __init__(self, prompts: torch.Tensor, keys: torch.Tensor, top_k: int, query: str):
        super().__init__()
        self.prompts = nn.Parameter(prompts)
        self.keys = nn.Parameter(keys)
        self.top_k, self.query = top_k, query
        self.owner: Optional[PromptedModel] = None  # set by the method; not a submodule
        self.last_chosen: Optional[torch.Tensor] = None  # similarities of the last training batch
        self.counts = torch.zeros(prompts.shape[0], dtype=torch.long)  # selections in training

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        q = pool_query(self.owner.frozen_hidden(input_ids, attention_mask), attention_mask, self.query)
        idx, chosen = select(q, self.keys, self.top_k)
        if self.training and torch.is_grad_enabled():
            self.last_chosen = chosen
            self.counts += torch.bincount(idx.flatten().cpu(), minlength=self.counts.shape[0])
        b, n = idx.shape
        return self.prompts[idx].reshape(b, n * self.prompts.shape[1], self.prompts.shape[2])


@register
class L2P(CLMethod):
    name = "l2p"
    description = "Learning to Prompt: a pool of keyed prompts; each input prepends the N nearest"
    Options = L2POptions
    reuses_prefix_cache = False  # a PromptedModel (kif.prompting): a bare prefix's cache does not apply

    def setup_model(self, base):
        o = self.opts
        emb = base.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(self.ctx.cfg.seed)
        prompts = vocab_init(emb, o.pool_size * o.prompt_length, gen).reshape(o.pool_size, o.prompt_length, -1)
        keys = torch.rand(o.pool_size, emb.shape[1], generator=gen) * 2 - 1  # U(-1, 1)
        pool = PromptPool(prompts.to(emb.device), keys.to(emb.device), o.top_k, o.query)
        model = PromptedModel(base, pool)
        object.__setattr__(pool, "owner", model)  # a plain reference: not a submodule of the pool
        return model

    @property
    def pool(self) -> PromptPool:
        return self.model.source

    def before_task(self, k: int) -> None:
        self.pool.counts.zero_()
        self.pool.last_chosen = None

    def extra_loss(self, model) -> Optional[torch.Tensor]:
        chosen, self.pool.last_chosen = self.pool.last_chosen, None
        if chosen is None or self.opts.key_loss_weight == 0:
            return None
        return surrogate_loss(chosen, self.opts.key_loss_weight)

    def after_task(self, k: int, task_dir: Path) -> dict:
        return {"prompt_selections": self.pool.counts.tolist()}  # how often each prompt was picked

    def state_summary(self) -> dict:
        return {"prompt_inference": "query_top_k"}

    def _model_state(self):
        return trainable_state(self.model)

    def save_adapter(self, dest: Path) -> None:
        atomic_save_tensors(dest / "prompts.safetensors", {"prompts": self.pool.prompts, "keys": self.pool.keys})
