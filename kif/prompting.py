"""Soft prompts: trainable embeddings prepended to a frozen model's input (Lester et al., 2021).

Shared by the prompt-based methods (``progprompt``, ``l2p``, ``lfpt5``). A method builds a
*prompt source* — an ``nn.Module`` whose ``forward(input_ids, attention_mask)`` returns the
prompt rows to prepend, ``[P, d]`` (the same for every example) or ``[B, P, d]`` (per
example, e.g. L2P's selection) — and wraps the model in :class:`PromptedModel`:

- decoder-only models (tiny-llama, SmolLM2): ``[prompt; x]`` as ``inputs_embeds``, the
  attention mask extended with ones, the labels with ``-100`` (no loss on the prompt), and
  the logits of the prompt positions dropped, so that callers see logits aligned with
  ``input_ids`` as from the bare model (``kif.evaluation.label_scores`` relies on it);
- encoder-decoder models (tiny-t5): the prompt goes in front of the encoder input only.

Training goes through the HF Trainer like any model (``forward`` takes ``input_ids``,
``attention_mask``, ``labels``; it has no ``logits_to_keep``, so kif's collator keeps every
logit, and no ``**kwargs``, so the Trainer scales the loss itself). Generation
(``generate``) embeds the prompt and calls the base model's ``generate(inputs_embeds=...)``;
for a decoder-only model it returns ``[input_ids; new tokens]`` as ``generate(input_ids=...)``
does, so kif's evaluator slices the continuation off unchanged. The evaluator's shared-prefix
KV cache does not apply (the cache of a bare prefix is not that of the prompted one): a
method with a prompted model declares ``reuses_prefix_cache = False`` (``kif.methods.base``);
``forward`` never returns a cache either, and ``generate`` ignores one.

With left padding (evaluation), the prompt sits before the padding: ``[prompt; pad; x]``;
generate() numbers positions from the attention mask, so the padding (masked) changes
nothing. Training batches are right-padded: ``[prompt; x; pad]``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .torchutil import eval_mode

IGNORE = -100


def vocab_init(embedding: torch.Tensor, n_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """``n_tokens`` rows of the (frozen) embedding matrix drawn at random: the initialisation of
    Lester et al. that Progressive Prompts and the L2P harnesses use ("random vocab tokens")."""
    rows = torch.randint(embedding.shape[0], (n_tokens,), generator=generator)
    return embedding.detach()[rows.to(embedding.device)].clone().float()


class ResidualMLP(nn.Module):
    """Prompt reparameterisation P' = MLP(P) + P (Progressive Prompts §3.3, after Residual Prompt
    Tuning): Linear(d→b) → ReLU → Linear(b→d) → LayerNorm(d), plus the skip connection."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.module = nn.Sequential(nn.Linear(dim, bottleneck), nn.ReLU(), nn.Linear(bottleneck, dim),
                                    nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + x


def _seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


class PromptedModel(nn.Module):
    """The frozen ``base`` model with the rows of ``source`` prepended to its (encoder) input.

    Only ``source``'s parameters are trainable; the base model's are frozen here."""

    def __init__(self, base, source: nn.Module):
        super().__init__()
        self.base = base
        self.source = source
        self.is_seq2seq = _seq2seq(base)
        self.config = base.config  # read by the Trainer (and by model-agnostic helpers)
        for p in base.parameters():
            p.requires_grad_(False)

    # --- helpers the sources use ---------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.get_input_embeddings()(input_ids)

    @property
    def embedding_dim(self) -> int:
        return self.base.get_input_embeddings().weight.shape[1]

    @torch.no_grad()
    def frozen_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, T, d] of the frozen model on the bare input (no prompt): the
        encoder's for a seq2seq model. Eval mode (no dropout), also while training, as L2P's
        query function; positions count real tokens only, so left and right padding give
        the same states."""
        if self.is_seq2seq:
            with eval_mode(self.base.get_encoder()) as enc:
                return enc(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        inner = self.base.get_decoder() if hasattr(self.base, "get_decoder") else self.base.model
        with eval_mode(inner):
            return inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         use_cache=False).last_hidden_state

    # --- prompted inputs ----------------------------------------------------------------------
    def prompted(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]):
        """(inputs_embeds, attention_mask, n_prompt) with the source's rows in front."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        emb = self.embed(input_ids)
        prompt = self.source(input_ids, attention_mask)
        if prompt.dim() == 2:
            prompt = prompt.unsqueeze(0).expand(input_ids.shape[0], -1, -1)
        n = prompt.shape[1]
        embeds = torch.cat([prompt.to(emb.dtype), emb], 1)
        mask = torch.cat([attention_mask.new_ones(input_ids.shape[0], n), attention_mask], 1)
        return embeds, mask, n

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, use_cache: Optional[bool] = None):
        embeds, mask, n = self.prompted(input_ids, attention_mask)
        if labels is not None and not self.is_seq2seq:
            labels = torch.cat([labels.new_full((labels.shape[0], n), IGNORE), labels], 1)
        out = self.base(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False)
        if not self.is_seq2seq:
            out.logits = out.logits[:, n:]
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs):
        for key in ("past_key_values", "cache"):  # a prefix cache of the bare prompt does not apply
            kwargs.pop(key, None)
        embeds, mask, _ = self.prompted(input_ids, attention_mask)
        out = self.base.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        if self.is_seq2seq:
            return out
        return torch.cat([input_ids, out.to(input_ids.device)], 1)  # as generate(input_ids=...) returns


def trainable_state(model: PromptedModel) -> dict[str, torch.nn.Parameter]:
    """The prompt source's parameters, keyed as in the wrapper (``source.*``): what a
    checkpoint of a prompt method holds besides the method's own state."""
    return {f"source.{n}": p for n, p in model.source.named_parameters()}
