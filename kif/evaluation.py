"""Batched greedy evaluation: one generate() call per batch, prompts sorted by length.

Sorting by length keeps padding (wasted compute) small; left padding lets a
decoder-only model continue every prompt from its last real token; generation stops
for the whole batch once every row has produced an EOS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Example
from .encoding import Encoder, pad
from .metrics import clean_prediction, score_each


@dataclass
class TaskEval:
    score: float
    predictions: list[dict]  # {id, prediction, references, score}


@torch.no_grad()
def generate(model, encoder: Encoder, prompts: list[list[int]], eos_ids: list[int],
             batch_size: int = 32, max_new_tokens: int = 128) -> list[str]:
    """Greedy continuations of already-encoded prompts, in input order."""
    tok = encoder.tokenizer
    pad_id = tok.pad_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = [prompts[i] for i in idx]
        left = not encoder.is_seq2seq
        input_ids = pad(batch, pad_id, left=left).to(device)
        attention = pad([[1] * len(s) for s in batch], 0, left=left).to(device)
        out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id)
        new = out if encoder.is_seq2seq else out[:, input_ids.shape[1]:]
        for i, row in zip(idx, new.tolist()):
            texts[i] = tok.decode(_until_eos(row, eos_ids), skip_special_tokens=True)
    model.train(was_training)
    return texts


def _until_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in eos_ids:
            return ids[:j]
    return ids


def evaluate_task(model, encoder: Encoder, examples: list[Example], metric: str, eos_ids: list[int],
                  prompt_ids: list[list[int]] | None = None, batch_size: int = 32,
                  max_new_tokens: int = 128) -> TaskEval:
    prompts = prompt_ids if prompt_ids is not None else [encoder.prompt_ids(ex.prompt) for ex in examples]
    raw = generate(model, encoder, prompts, eos_ids, batch_size, max_new_tokens)
    preds = [clean_prediction(t) for t in raw]
    scores = score_each(metric, preds, [ex.references for ex in examples])
    rows = [{"id": ex.id, "prediction": p, "references": list(ex.references), "score": s}
            for ex, p, s in zip(examples, preds, scores)]
    return TaskEval(sum(scores) / len(scores) if scores else 0.0, rows)
