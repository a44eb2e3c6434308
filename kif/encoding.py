"""Turn examples into token ids: prompt, target, and the loss mask.

One function builds the prompt ids for both training and evaluation, so what the
model is trained to continue is exactly what it is asked at test time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Example

IGNORE = -100  # label value that the loss skips


def truncate_middle(ids: list[int], limit: int) -> list[int]:
    """Keep the head (instruction) and the tail (options, "Answer:") of an over-long prompt."""
    if len(ids) <= limit:
        return ids
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head):]


@dataclass
class Encoder:
    tokenizer: object
    is_seq2seq: bool
    use_chat_template: bool
    eos_token_id: int
    max_input_length: int = 512
    max_target_length: int = 128

    def prompt_ids(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        if self.use_chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(prompt)["input_ids"]  # BOS (decoder-only) or EOS (T5) as the tokenizer adds them
        return truncate_middle(ids, self.max_input_length)

    def target_ids(self, target: str) -> list[int]:
        # Plain decoder-only prompts end in e.g. "Answer:", so the answer starts after a space.
        text = " " + target if not (self.is_seq2seq or self.use_chat_template) else target
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: self.max_target_length - 1] + [self.eos_token_id]

    def train_features(self, ex: Example) -> dict[str, list[int]]:
        prompt, target = self.prompt_ids(ex.prompt), self.target_ids(ex.references[0])
        if self.is_seq2seq:
            return {"input_ids": prompt, "labels": target}
        # decoder-only: loss on the target tokens only (the prompt is masked out)
        return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def pad(seqs: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    rows = [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


@dataclass
class TrainCollator:
    """Pads a batch of ``train_features`` dicts; padded labels are ignored by the loss.

    ``target_logits_only`` (decoder-only models that take ``logits_to_keep``): the batch is
    left-padded so every target sits in the last positions, and the model projects only
    those onto the vocabulary. The prompt's positions need no logits (they carry no loss),
    and the vocabulary projection + cross-entropy is a large share of a small model's step.
    Why left padding makes that free: ``logits_to_keep`` keeps the same last positions of
    every row, and only with the pads on the left do all rows' targets end there.

    The cost of left padding: under causal attention a pad position, as a query, sees only
    the pads before it, all masked, so its row of attention attends to nothing. The loss
    never reads those rows and torch's kernels return 0 for them, but a fused bf16 backward
    can return NaN there (cuDNN on H100/H200: ``kif.attention``, which is why training
    leaves that kernel out). It cannot be avoided at no cost: the 2D ``attention_mask``
    masks keys for every query alike, so unmasking any pad key for the pad rows would let
    the real tokens attend to it too (changing the model's numbers); right padding has no
    such rows but puts the targets at different positions per row, which ends
    ``logits_to_keep``; a custom 4D mask would replace transformers' own masking (a
    B x L x L tensor per batch, and another attention path than evaluation's). Without
    ``target_logits_only`` (and for seq2seq models) batches are right-padded.
    """
    pad_token_id: int
    target_logits_only: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        left = self.target_logits_only
        mask = pad([[1] * len(s) for s in ids], 0, left=left)
        batch = {
            "input_ids": pad(ids, self.pad_token_id, left=left),
            "attention_mask": mask,
            "labels": pad([f["labels"] for f in features], IGNORE, left=left),
        }
        if left:
            # real positions 0..n-1 whatever the padding; the window holds every target
            # token plus the position that predicts the first one
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = 1 + max(sum(1 for t in f["labels"] if t != IGNORE) for f in features)
            keep = min(keep, batch["labels"].shape[1])
            batch["labels"] = batch["labels"][:, -keep:]
            batch["logits_to_keep"] = keep
        return batch


def supports_logits_to_keep(model) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
